//go:build integration

package integration

import (
	"os"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const metricsFile = "/run/containerjob-test-metrics/containerjob.prom"

// nodeMetrics parses the node's exposition as node_exporter's textfile
// collector does.
func nodeMetrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(metricsFile)
	if os.IsNotExist(err) {
		return map[string]*dto.MetricFamily{}
	}
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s does not parse: %v\n%s", metricsFile, err, b)
	}
	return fams
}

// metricValue is the value of name's metric whose label is exactly label
// (a histogram's count of samples).
func metricValue(fams map[string]*dto.MetricFamily, name, label string) float64 {
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == label {
				if m.Histogram != nil {
					return float64(m.GetHistogram().GetSampleCount())
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestNodeMetrics: a launch that ran and one refused are counted, the
// refusal by its rule, and the launch's phases are observed, in a file the
// textfile collector parses; the file is root's, readable by the collector.
func TestNodeMetrics(t *testing.T) {
	before := nodeMetrics(t)
	dir := userDir(t, alice, "metrics")
	if r := cj(t, alice, dir, "run", "alpine:3.20", "true"); r.Code != 0 {
		t.Fatalf("launch: %d %q", r.Code, r.Stderr)
	}
	r := cj(t, alice, dir, "run", "alpine:denied", "true")
	if r.Code != 125 {
		t.Fatalf("denied launch: %d %q", r.Code, r.Stderr)
	}
	// The refusal is counted under the rule its line names, exactly: an
	// earlier test's refusal by another images_deny (a [user.NAME] table,
	// another line of another policy) is another metric.
	_, rule, _ := strings.Cut(strings.SplitN(r.Stderr, "\n", 2)[0], "says ")
	if !strings.HasPrefix(rule, "images_deny in [defaults]") {
		t.Fatalf("denied launch: the refusal names %q, want images_deny in [defaults]: %q", rule, r.Stderr)
	}
	after := nodeMetrics(t)
	for _, c := range []struct{ name, label string }{
		{"containerjob_launches_total", "ran"},
		{"containerjob_launches_total", "refused"},
		{"containerjob_refusals_total", rule},
		{"containerjob_launch_phase_seconds", "create"},
		{"containerjob_launch_phase_seconds", "exit"},
	} {
		if d := metricValue(after, c.name, c.label) - metricValue(before, c.name, c.label); d < 1 {
			t.Errorf("%s{%s} grew by %v, want at least 1", c.name, c.label, d)
		}
	}
	st, err := os.Stat(metricsFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode %v, want 0644", metricsFile, st.Mode().Perm())
	}
}
