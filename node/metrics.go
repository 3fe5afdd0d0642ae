package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/containerjob/containerjob/internal/metrics"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// nodeMetrics adds one launch's doings to the node's metrics (policy
// setting metrics_dir; none without it). An update that fails is told as
// a warning and never fails the launch.
type nodeMetrics struct {
	dir    string
	notify func(launcher.Notice)
}

// metricsFor is the node's metrics for a command that says what went
// wrong as lines of its own (warn) rather than launcher notices.
func (n *Service) metricsFor(warn func(string)) nodeMetrics {
	return nodeMetrics{dir: n.Policy.Settings.MetricsDir, notify: func(nt launcher.Notice) { warn(nt.Text) }}
}

func (m nodeMetrics) update(fn func(*metrics.State)) {
	if err := metrics.Update(m.dir, fn); err != nil {
		notify(m.notify, launcher.Notice{Kind: launcher.NoticeWarning, Text: fmt.Sprintf("node metrics not updated: %v", err)})
	}
}

func (m nodeMetrics) launch(outcome, rule string, phases map[string]time.Duration) {
	m.update(func(s *metrics.State) { s.Launch(outcome, rule, phases) })
}

// refused counts a refusal by its rule; an error that is no policy
// refusal counts as a failed launch.
func (m nodeMetrics) refused(err error) {
	var ref *policy.Refusal
	if errors.As(err, &ref) {
		m.launch("refused", ref.Rule.String(), nil)
		return
	}
	m.launch("failed", "", nil)
}

func (m nodeMetrics) pull(bytes int64) { m.update(func(s *metrics.State) { s.Pull(bytes) }) }

func (m nodeMetrics) lockWait(kind string, d time.Duration) {
	m.update(func(s *metrics.State) { s.LockWait(kind, d) })
}

// pullNotify counts the launch's pulls for the node's metrics and passes
// every other notice on to the caller.
func (m nodeMetrics) pullNotify(next func(launcher.Notice)) func(launcher.Notice) {
	return func(n launcher.Notice) {
		if n.Kind == launcher.NoticePulled {
			m.pull(n.Bytes)
			return
		}
		notify(next, n)
	}
}
