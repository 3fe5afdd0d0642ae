package node

import (
	"errors"
	"os"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// Service is what a privileged command works through on this node: the
// admins' policy, read once, one connection to the node's engine and one
// audit trail. The CLI opens one per process (Open, under the policy it
// loaded); tests build one around launcher/enginetest's engine.
type Service struct {
	Policy *policy.Policy
	Engine launcher.Engine
	close  func() error
	trail  *audit.Log // opened on first use (Trail)
}

// Open is the node's service under a policy already loaded (a hook goes
// on with the built-in settings when the admins' policy cannot be used).
func Open(pol *policy.Policy) (*Service, error) {
	eng, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		return nil, err
	}
	return &Service{Policy: pol, Engine: eng, close: eng.Close}, nil
}

// Trail is the node's audit trail, as the commands hold it.
type Trail = audit.Log

// Trail is the node's audit trail (policy settings audit_log and
// audit_syslog), opened once per Service on first use; Close closes it.
func (n *Service) Trail() (*audit.Log, error) {
	if n.trail != nil {
		return n.trail, nil
	}
	t, err := audit.Open(n.Policy.Settings.AuditLog, n.Policy.Settings.AuditSyslog)
	if err != nil {
		return nil, err
	}
	n.trail = t
	return t, nil
}

// Record writes one record to the node's audit trail.
func (n *Service) Record(kind string, rec map[string]any) error {
	t, err := n.Trail()
	if err != nil {
		return err
	}
	return t.Record(kind, rec)
}

// Here is the node a user's command runs on: its job step's (from the
// process's cgroup, which slurmstepd made), else the host's name.
func Here() string {
	cg, _ := os.ReadFile("/proc/self/cgroup")
	return scheduler.NodeOf(cg)
}

// ForHook is the node a scheduler hook acts for: the one named (a flag),
// else the one slurmd names in its hooks' environment (SLURMD_NODENAME;
// the hook is root's, started by slurmd), else this host's name. Nodes
// that share one engine (several slurmd per host) each clean up only
// their own containers.
func ForHook(named string) string {
	if named != "" {
		return named
	}
	if n := os.Getenv("SLURMD_NODENAME"); n != "" {
		return n
	}
	return scheduler.Node()
}

// Close lets go of the engine's connection and the audit trail.
func (n *Service) Close() error {
	if n == nil {
		return nil
	}
	var errs []error
	if n.trail != nil {
		errs = append(errs, n.trail.Close())
		n.trail = nil
	}
	if n.close != nil {
		errs = append(errs, n.close())
	}
	return errors.Join(errs...)
}
