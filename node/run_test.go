package node

import (
	"context"
	"errors"
	"os"
	osuser "os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/policy"
)

// runInput is a launch outside any job, under a policy parsed from the
// test's text and auditing to a file of the test's; the engine's address
// leads nowhere, so nothing can be created. As root the caller is nobody
// and the policy is loaded from a root-owned file, as on a node; as any
// other user the caller is that user (whose files the launch then resolves
// without changing its identity) and the policy is handed in loaded.
func runInput(t *testing.T, extra string) (Input, string) {
	t.Helper()
	if os.Getenv("SLURM_JOB_ID") != "" || os.Getenv("PBS_JOBID") != "" {
		t.Skip("runs outside a scheduler job only")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	audit := filepath.Join(dir, "audit.log")
	pol := filepath.Join(dir, "policy.toml")
	text := "[settings]\naudit_log = \"" + audit + "\"\ndocker_host = \"unix://" + dir + "/no-engine.sock\"\n\n[defaults]\nimages_allow = [\"alpine:*\"]\n" + extra
	if err := os.WriteFile(pol, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	in := Input{Invocation: identity.AsRoot, PolicyPath: pol, Cwd: "/tmp",
		Request: policy.Request{Image: "alpine:3.20", Cmd: []string{"id"}}}
	user := "nobody"
	if os.Geteuid() != 0 {
		me, err := osuser.Current()
		if err != nil {
			t.Fatal(err)
		}
		user = me.Username
		if in.Policy, err = policy.Parse(pol, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	caller, err := identity.Privileged(identity.System, identity.AsRoot, 0, "", user)
	if err != nil {
		t.Fatal(err)
	}
	in.Caller = caller
	return in, audit
}

// TestRunRecordsRefusals: a refusal comes back as the policy's, and the
// audit trail has it before anything else happens.
func TestRunRecordsRefusals(t *testing.T) {
	in, audit := runInput(t, "")
	_, err := Run(context.Background(), in)
	var ref *policy.Refusal
	if !errors.As(err, &ref) || !strings.Contains(ref.Rule.String(), "outside_jobs") {
		t.Fatalf("Run outside a job = %v, want the outside_jobs refusal", err)
	}
	log, _ := os.ReadFile(audit)
	if !strings.Contains(string(log), `"decision":"refused"`) || !strings.Contains(string(log), `"user":"`+in.Caller.User+`"`) {
		t.Errorf("audit log %q", log)
	}
	in.Request.Image = "ubuntu:24.04"
	in.PolicyPath, in.Policy = filepath.Join(t.TempDir(), "missing.toml"), nil
	if _, err := Run(context.Background(), in); err == nil {
		t.Error("a missing policy was not an error")
	}
}

// TestRunDryRun: a dry run goes the whole way but the create, guarded,
// and needs no engine (the image is inspected if one answers).
func TestRunDryRun(t *testing.T) {
	in, audit := runInput(t, "outside_jobs = true\n")
	in.DryRun = true
	out, err := Run(context.Background(), in)
	if err != nil || out.DryRun == nil {
		t.Fatalf("dry run = %+v, %v", out, err)
	}
	found := false
	for _, r := range out.DryRun.Rules {
		found = found || r.Item == "image docker.io/library/alpine:3.20"
	}
	if !found {
		t.Errorf("rules %+v lack the image", out.DryRun.Rules)
	}
	log, _ := os.ReadFile(audit)
	if !strings.Contains(string(log), `"decision":"allowed"`) {
		t.Errorf("audit log %q", log)
	}
}
