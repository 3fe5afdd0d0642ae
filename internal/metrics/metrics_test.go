package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads the exposition as node_exporter's textfile collector does.
func parse(t *testing.T, dir string) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, b)
	}
	return fams
}

func value(f *dto.MetricFamily, label string) float64 {
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == label {
				if m.Counter != nil {
					return m.GetCounter().GetValue()
				}
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// TestExpositionNamesAndTypes: every family has the name, type and labels
// the admin guide documents, and parses.
func TestExpositionNamesAndTypes(t *testing.T) {
	dir := t.TempDir()
	err := Update(dir, func(s *State) {
		s.Launch("ran", "", map[string]time.Duration{"create": 30 * time.Millisecond, "exit": 2 * time.Second})
		s.Launch("refused", "images_deny in [defaults] (/etc/containerjob/policy.toml:28)", nil)
		s.Launch("failed", "", nil)
		s.Pull(1 << 20)
		s.LockWait("pull", 3*time.Second)
		s.RemovedBy("epilog", 2)
		s.ImageStore(5<<30, 8<<30, 6<<30)
	})
	if err != nil {
		t.Fatal(err)
	}
	fams := parse(t, dir)
	want := map[string]dto.MetricType{
		"containerjob_launches_total":                   dto.MetricType_COUNTER,
		"containerjob_refusals_total":                   dto.MetricType_COUNTER,
		"containerjob_launch_phase_seconds":             dto.MetricType_HISTOGRAM,
		"containerjob_pulls_total":                      dto.MetricType_COUNTER,
		"containerjob_pull_bytes_total":                 dto.MetricType_COUNTER,
		"containerjob_lock_wait_seconds":                dto.MetricType_HISTOGRAM,
		"containerjob_removed_containers_total":         dto.MetricType_COUNTER,
		"containerjob_image_store_bytes":                dto.MetricType_GAUGE,
		"containerjob_image_store_high_watermark_bytes": dto.MetricType_GAUGE,
		"containerjob_image_store_low_watermark_bytes":  dto.MetricType_GAUGE,
	}
	for name, typ := range want {
		f, ok := fams[name]
		if !ok || f.GetType() != typ {
			t.Errorf("%s: %v, want type %v", name, f.GetType(), typ)
		}
	}
	if v := value(fams["containerjob_launches_total"], "refused"); v != 1 {
		t.Errorf("refused launches %v", v)
	}
	if v := value(fams["containerjob_refusals_total"], "images_deny in [defaults] (/etc/containerjob/policy.toml:28)"); v != 1 {
		t.Errorf("refusals by rule %v", v)
	}
	h := fams["containerjob_launch_phase_seconds"]
	for _, m := range h.GetMetric() {
		if m.GetLabel()[0].GetValue() == "exit" {
			if m.GetHistogram().GetSampleSum() != 2 || m.GetHistogram().GetBucket()[6].GetCumulativeCount() != 0 || m.GetHistogram().GetBucket()[8].GetCumulativeCount() != 1 {
				t.Errorf("exit phase histogram %v", m.GetHistogram())
			}
		}
	}
	if Update("", func(*State) { t.Error("metrics off, yet updated") }) != nil {
		t.Error("metrics off is not an error")
	}
}

// TestConcurrentWritersLoseNothing: the launches of a node update at once;
// each is counted, and the collector never sees half a file.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	dir := t.TempDir()
	old := LockWait
	LockWait = time.Minute
	t.Cleanup(func() { LockWait = old })
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readErr error
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if b, err := os.ReadFile(filepath.Join(dir, File)); err == nil {
				parser := expfmt.NewTextParser(model.UTF8Validation)
				if _, err := parser.TextToMetricFamilies(strings.NewReader(string(b))); err != nil {
					readErr = err
				}
			}
		}
	}()
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Update(dir, func(s *State) { s.Launch("ran", "", nil) }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if readErr != nil {
		t.Errorf("a reader saw a broken exposition: %v", readErr)
	}
	if v := value(parse(t, dir)["containerjob_launches_total"], "ran"); v != 40 {
		t.Errorf("launches %v, want 40", v)
	}
}

// TestBusyLockDropsTheUpdate: a writer that cannot have the lock in time
// drops its update instead of delaying the job.
func TestBusyLockDropsTheUpdate(t *testing.T) {
	dir := t.TempDir()
	old := LockWait
	LockWait = 50 * time.Millisecond
	t.Cleanup(func() { LockWait = old })
	held := make(chan struct{})
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- Update(dir, func(*State) { close(held); <-release }) }()
	<-held
	err := Update(dir, func(*State) { t.Error("updated under another writer's lock") })
	close(release)
	if err == nil || !strings.Contains(err.Error(), "dropped") {
		t.Errorf("err %v, want the update dropped", err)
	}
	// The first writer finishes before the test's directory is removed
	// (it was still writing there when the test ended, now and then).
	if err := <-first; err != nil {
		t.Errorf("the lock holder's update: %v", err)
	}
}

// BenchmarkUpdate is what one launch adds to its time for the node's
// metrics: the lock, the state read and written, the exposition rendered
// and renamed into place (make bench, section 10).
func BenchmarkUpdate(b *testing.B) {
	dir := b.TempDir()
	phases := map[string]time.Duration{"image": time.Millisecond, "create": 20 * time.Millisecond, "start": 50 * time.Millisecond, "exit": time.Second, "remove": 30 * time.Millisecond}
	for i := 0; i < b.N; i++ {
		if err := Update(dir, func(s *State) { s.Launch("ran", "", phases) }); err != nil {
			b.Fatal(err)
		}
	}
}
