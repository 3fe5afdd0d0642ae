package launcher

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/jsonstream"

	"github.com/containerjob/containerjob/policy"
)

// A pull as the engine reports it (API 1.41), cut to two layers.
var pullMessages = []jsonstream.Message{
	{Status: "Pulling from lab/tool", ID: "1"},
	{Status: "Pulling fs layer", ID: "aaa"},
	{Status: "Already exists", ID: "bbb"},
	{Status: "Downloading", ID: "aaa", Progress: &jsonstream.Progress{Current: 1 << 20, Total: 4 << 20}},
	{Status: "Downloading", ID: "aaa", Progress: &jsonstream.Progress{Current: 2 << 20, Total: 4 << 20}},
	{Status: "Download complete", ID: "aaa"},
	{Status: "Extracting", ID: "aaa", Progress: &jsonstream.Progress{Current: 1, Total: 2}},
	{Status: "Extracting", ID: "aaa", Progress: &jsonstream.Progress{Current: 2, Total: 2}},
	{Status: "Pull complete", ID: "aaa"},
	{Status: "Digest: sha256:0123"},
	{Status: "Status: Downloaded newer image for registry.local/lab/tool:1"},
}

func TestPullProgressLog(t *testing.T) {
	p := newPullProgress("registry.local/lab/tool:1")
	var lines []string
	for i, m := range pullMessages {
		if line, _ := p.update(m); line != "" {
			lines = append(lines, line)
		}
		if i == 4 {
			if s := p.summary(); s != "pulling registry.local/lab/tool:1: 1/2 layers, downloading 2.0/4.0 MiB" {
				t.Errorf("summary mid-download = %q", s)
			}
		}
	}
	want := []string{
		"Pulling from lab/tool", "layer aaa: Pulling fs layer", "layer bbb: Already exists", "layer aaa: Downloading",
		"layer aaa: Download complete", "layer aaa: Extracting", "layer aaa: Pull complete",
		"Digest: sha256:0123", "Status: Downloaded newer image for registry.local/lab/tool:1",
	}
	if len(lines) != len(want) {
		t.Fatalf("logged %d lines, want one per event (%d), no progress ticks:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if lines[i] != "containerjob: pull registry.local/lab/tool:1: "+w {
			t.Errorf("line %d = %q, want ...%q", i, lines[i], w)
		}
	}
	if s := p.summary(); s != "pulling registry.local/lab/tool:1: 2/2 layers; Downloaded newer image for registry.local/lab/tool:1" {
		t.Errorf("final summary = %q", s)
	}
}

// TestFetchCountsDownloadedBytes: the one way into a pull (fetch), as a
// launch and containerjob pull take it: a pull's bytes are its downloaded
// layers' totals, once each, not the layers the node had; an error in the
// stream is the pull's error, in the same words for both.
func TestFetchCountsDownloadedBytes(t *testing.T) {
	oldPulled, oldLocks := PulledDir, PullLockDir
	PulledDir, PullLockDir = t.TempDir(), t.TempDir()
	t.Cleanup(func() { PulledDir, PullLockDir = oldPulled, oldLocks })
	eng := newFakeEngine(t)
	eng.PullMessages = strings.Join([]string{
		`{"status":"Pulling from library/x","id":"3.20"}`,
		`{"status":"Already exists","id":"l0"}`,
		`{"status":"Downloading","id":"l1","progressDetail":{"current":10,"total":1000}}`,
		`{"status":"Downloading","id":"l1","progressDetail":{"current":900,"total":1000}}`,
		`{"status":"Downloading","id":"l2","progressDetail":{"current":5,"total":24}}`,
		`{"status":"Download complete","id":"l1"}`,
		`{"status":"Extracting","id":"l1","progressDetail":{"current":500,"total":4000}}`,
	}, "\n") + "\n"
	var out strings.Builder
	if id, n, err := Pull(context.Background(), eng, "x:1", "", "", &out, false); err != nil || n != 1024 || id == "" {
		t.Errorf("containerjob pull: id %q, bytes %d, err %v; want 1024", id, n, err)
	}
	ref := func(s string) policy.ImageRef {
		r, err := policy.NormalizeImage(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	d := &policy.Decision{Image: ref("x:2"), Pull: "always"}
	var pulled int64
	opts := Options{Notify: func(n Notice) {
		if n.Kind == NoticePulled {
			pulled = n.Bytes
		}
	}}
	if _, err := ensureImage(context.Background(), eng, d, opts); err != nil || pulled != 1024 {
		t.Errorf("a launch's pull: bytes %d, err %v; want 1024", pulled, err)
	}
	eng.PullMessages = `{"status":"Downloading","id":"l1","progressDetail":{"current":1,"total":9}}` + "\n" + `{"errorDetail":{"message":"no space left on device"},"error":"no space left on device"}` + "\n"
	want := `pulling image "x:3" failed: no space left on device`
	if _, _, err := Pull(context.Background(), eng, "x:3", "", "", &out, false); err == nil || err.Error() != want {
		t.Errorf("containerjob pull: err %v, want %q", err, want)
	}
	d.Image = ref("x:3")
	want = `pulling image "docker.io/library/x:3" failed: no space left on device`
	var le *Error
	if _, err := ensureImage(context.Background(), eng, d, opts); !errors.As(err, &le) || le.Code != ExitLaunchFailed || err.Error() != want {
		t.Errorf("a launch's pull: err %v, want %q", err, want)
	}
}

// TestPullProgressCountsDownloads: `containerjob pull` counts the layers it
// downloaded for the node's metrics, not those the node had.
func TestPullProgressCountsDownloads(t *testing.T) {
	p := newPullProgress("lab/tool:1")
	for _, m := range []jsonstream.Message{
		{Status: "Already exists", ID: "bbb"},
		{Status: "Downloading", ID: "aaa", Progress: &jsonstream.Progress{Current: 1 << 20, Total: 4 << 20}},
		{Status: "Downloading", ID: "aaa", Progress: &jsonstream.Progress{Current: 4 << 20, Total: 4 << 20}},
		{Status: "Extracting", ID: "aaa", Progress: &jsonstream.Progress{Current: 1, Total: 9 << 20}},
		{Status: "Pull complete", ID: "aaa"},
	} {
		p.update(m)
	}
	if n := p.downloaded(); n != 4<<20 {
		t.Errorf("downloaded %d, want %d", n, 4<<20)
	}
}
