package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func pinRoot(t *testing.T) {
	t.Helper()
	old, oldMarks := PinRoot, launcher.JobMarkDir
	PinRoot, launcher.JobMarkDir = t.TempDir(), t.TempDir()
	t.Cleanup(func() { PinRoot, launcher.JobMarkDir = old, oldMarks })
}

func inspected(id string, repoDigests ...string) client.ImageInspectResult {
	var r client.ImageInspectResult
	r.InspectResponse = image.InspectResponse{ID: id, RepoDigests: repoDigests}
	return r
}

func TestPinDirRefusesUnsafeNames(t *testing.T) {
	for _, tt := range []struct{ node, job, want string }{
		{"vm", "42", "vm/slurm-42"},
		{"vm", "1234.pbs-server", "vm/slurm-1234.pbs-server"},
		{"vm", "", ""}, {"vm", "..", ""}, {"vm", "4/../../etc", ""}, {"..", "42", ""}, {"", "42", ""},
	} {
		got := PinDir("slurm", tt.node, tt.job)
		if tt.want == "" && got != "" || tt.want != "" && got != filepath.Join(PinRoot, tt.want) {
			t.Errorf("PinDir(%q, %q) = %q; want %q", tt.node, tt.job, got, tt.want)
		}
	}
}

// TestJobPinsItsImage: the first step's image is recorded; later steps on
// the node run its digest (or, without one, its image ID), whatever the
// tag means by then; a digest-pinned request needs no pin.
func TestJobPinsItsImage(t *testing.T) {
	pinRoot(t)
	job := scheduler.Job{Scheduler: "slurm", ID: "42", Node: "vm"}
	req := policy.Request{Image: "lab/tool:1"}
	p, err := pinImage(job, &req)
	if err != nil || req.Image != "lab/tool:1" || p.PinnedID != "" || p.Ready == nil {
		t.Fatalf("first step: %+v %v, image %q", p, err, req.Image)
	}
	if err := p.Ready(inspected("sha256:1d", "docker.io/lab/tool@"+digestA, "docker.io/other/name@"+digestB)); err != nil {
		t.Fatal(err)
	}
	req = policy.Request{Image: "lab/tool:1"}
	if p, err = pinImage(job, &req); err != nil || req.Image != "docker.io/lab/tool@"+digestA || p.Requested != "docker.io/lab/tool:1" {
		t.Fatalf("later step: %+v %v, image %q", p, err, req.Image)
	}
	// Another job, or the same job on another node, is not held by it.
	for _, other := range []scheduler.Job{{Scheduler: "slurm", ID: "43", Node: "vm"}, {Scheduler: "slurm", ID: "42", Node: "vm-2"}} {
		req = policy.Request{Image: "lab/tool:1"}
		if _, err := pinImage(other, &req); err != nil || req.Image != "lab/tool:1" {
			t.Errorf("job %s on %s: image %q, %v", other.ID, other.Node, req.Image, err)
		}
	}
	// An image loaded on the node (no registry digest) is held by its ID.
	req = policy.Request{Image: "local/built:2"}
	p, _ = pinImage(job, &req)
	if err := p.Ready(inspected("sha256:10ca1")); err != nil {
		t.Fatal(err)
	}
	req = policy.Request{Image: "local/built:2"}
	if p, err = pinImage(job, &req); err != nil || p.PinnedID != "sha256:10ca1" || req.Image != "local/built:2" {
		t.Errorf("local image: %+v %v, image %q", p, err, req.Image)
	}
	// Naming a digest is a new resolution by the user's own choice.
	req = policy.Request{Image: "lab/tool@" + digestB}
	if p, err = pinImage(job, &req); err != nil || p.Ready != nil || req.Image != "lab/tool@"+digestB {
		t.Errorf("digest request: %+v %v, image %q", p, err, req.Image)
	}
	// Without a job nothing is pinned.
	req = policy.Request{Image: "lab/tool:1"}
	if p, _ := pinImage(scheduler.Job{}, &req); p.Ready != nil || req.Image != "lab/tool:1" {
		t.Errorf("outside a job: %+v, image %q", p, req.Image)
	}
}

// TestPinRaceKeepsTheFirst: two first steps at once; the second to record
// learns of the first pin and, when its image differs, fails instead of
// running another image under the job's name.
func TestPinRaceKeepsTheFirst(t *testing.T) {
	pinRoot(t)
	job := scheduler.Job{Scheduler: "slurm", ID: "7", Node: "vm"}
	r1, r2 := policy.Request{Image: "lab/tool:1"}, policy.Request{Image: "lab/tool:1"}
	p1, _ := pinImage(job, &r1)
	p2, _ := pinImage(job, &r2)
	if err := p1.Ready(inspected("sha256:1d", "docker.io/lab/tool@"+digestA)); err != nil {
		t.Fatal(err)
	}
	if err := p2.Ready(inspected("sha256:1d", "docker.io/lab/tool@"+digestA)); err != nil {
		t.Errorf("the same image twice: %v", err)
	}
	r3 := policy.Request{Image: "lab/tool:2"}
	r4 := policy.Request{Image: "lab/tool:2"}
	p3, _ := pinImage(job, &r3)
	p4, _ := pinImage(job, &r4)
	p3.Ready(inspected("sha256:3", "docker.io/lab/tool@"+digestA))
	if err := p4.Ready(inspected("sha256:4", "docker.io/lab/tool@"+digestB)); err == nil || !strings.Contains(err.Error(), "pinned it to sha256:3") {
		t.Errorf("a different image for the same name: %v", err)
	}
	entries, _ := os.ReadDir(PinDir("slurm", "vm", "7"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left %s behind", e.Name())
		}
	}
}

// TestPinHint: the step's hint (the pin srun got on the submitting node)
// holds a node without its own record to the same digest; a hint for
// another reference, another repository or without a digest is ignored,
// and the node's own record wins over any hint.
func TestPinHint(t *testing.T) {
	pinRoot(t)
	job := scheduler.Job{Scheduler: "slurm", ID: "9", Node: "vm-2"}
	env := func(v string) []string { return []string{PinHintEnv + "=" + v} }
	for _, tt := range []struct {
		hint, want string
	}{
		{"docker.io/lab/tool:1 docker.io/lab/tool@" + digestA, "docker.io/lab/tool@" + digestA},
		{"lab/tool:1 docker.io/lab/tool@" + digestA, "docker.io/lab/tool@" + digestA},
		{"docker.io/lab/tool:2 docker.io/lab/tool@" + digestA, "lab/tool:1"},
		{"docker.io/lab/tool:1 docker.io/evil/tool@" + digestA, "lab/tool:1"},
		{"docker.io/lab/tool:1 docker.io/lab/tool:3", "lab/tool:1"},
		{"docker.io/lab/tool:1", "lab/tool:1"},
	} {
		req := policy.Request{Image: "lab/tool:1", JobEnv: env(tt.hint)}
		if _, err := pinImage(job, &req); err != nil || req.Image != tt.want {
			t.Errorf("hint %q: image %q, %v; want %q", tt.hint, req.Image, err, tt.want)
		}
	}
	req := policy.Request{Image: "lab/tool:1"}
	p, _ := pinImage(job, &req)
	p.Ready(inspected("sha256:1d", "docker.io/lab/tool@"+digestB))
	req = policy.Request{Image: "lab/tool:1", JobEnv: env("docker.io/lab/tool:1 docker.io/lab/tool@" + digestA)}
	if _, err := pinImage(job, &req); err != nil || req.Image != "docker.io/lab/tool@"+digestB {
		t.Errorf("record and hint: image %q, %v; the node's record wins", req.Image, err)
	}
}

// DropPins (the epilogue) removes one job's pins on the node, and nothing
// for a name that is no safe file name.
func TestDropPins(t *testing.T) {
	pinRoot(t)
	for _, job := range []string{"42", "43"} {
		if _, err := SavePin(PinDir("slurm", "vm", job), ImagePin{Ref: "docker.io/lab/tool:1", Digest: "docker.io/lab/tool@" + digestA, ID: "sha256:1d"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := DropPins("slurm", "vm", "42"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(PinDir("slurm", "vm", "42")); !os.IsNotExist(err) {
		t.Errorf("job 42's pins are still there (%v)", err)
	}
	if _, err := os.Stat(PinDir("slurm", "vm", "43")); err != nil {
		t.Errorf("job 43's pins went with 42's: %v", err)
	}
	if err := DropPins("slurm", "vm", "../vm"); err != nil {
		t.Errorf("an unsafe job name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(PinRoot, "vm")); err != nil {
		t.Errorf("an unsafe job name removed the node's pins: %v", err)
	}
}
