package launcher

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/policy"
)

// TestOwnContainerOperations: what ps/inspect/attach/stop/kill do to a
// running named container, against the fake engine.
func TestOwnContainerOperations(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Name: "svc", Cmd: []string{"true"}})
	eng.Program["/bin/sh"] = untilTerm("keeper ")
	ctx := context.Background()
	if _, err := Run(ctx, eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	cs, err := ListManaged(ctx, eng, "slurm", "7")
	if err != nil || len(cs) != 1 {
		t.Fatalf("ListManaged = %v, %v", cs, err)
	}
	id := cs[0].ID

	info, err := InspectOwn(ctx, eng, id)
	if err != nil || info.State != "running" || info.User != "1002:1002" || info.Labels[policy.LabelName] != "svc" || info.Name != "svc" {
		t.Fatalf("InspectOwn = %+v, %v", info, err)
	}
	for k := range info.Labels {
		if !strings.HasPrefix(k, "org.containerjob.") {
			t.Errorf("InspectOwn shows a label %q not containerjob's", k)
		}
	}
	if err := Logs(ctx, eng, id, newLineWriter(), newLineWriter()); err == nil || !strings.Contains(err.Error(), "container_logs = none") {
		t.Errorf("Logs without kept output: %v", err)
	}

	if err := Kill(ctx, eng, id, "rm -rf"); err == nil {
		t.Errorf("Kill accepted a malformed signal name")
	}
	out := newLineWriter()
	attached := make(chan error, 1)
	var code int
	var ended bool
	go func() {
		var err error
		code, ended, err = Attach(ctx, eng, id, out, newLineWriter())
		attached <- err
	}()
	// Attach is registered once the engine records a second attach.
	eng.AwaitCalls("ContainerWait", 1) // the named step itself waits on no container
	if err := Kill(ctx, eng, id, "SIGUSR1"); err != nil {
		t.Fatal(err)
	}
	out.await(t, "keeper got SIGUSR1")
	if err := Stop(ctx, eng, id, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-attached; err != nil || !ended || code != 143 {
		t.Errorf("Attach = %d %v %v; want the container's end, 143", code, ended, err)
	}
	if _, _, err := Attach(ctx, eng, id, newLineWriter(), newLineWriter()); err == nil || !strings.Contains(err.Error(), "is not running") {
		t.Errorf("Attach to a stopped container: %v", err)
	}
	RemoveAll(ctx, eng, cs)
	// Removing again is not an error: already gone counts as removed.
	for id, err := range RemoveAll(ctx, eng, cs) {
		if err != nil {
			t.Errorf("second removal of %s: %v", id, err)
		}
	}
}

func TestImagesAndPull(t *testing.T) {
	oldPulled, oldLocks := PulledDir, PullLockDir
	PulledDir, PullLockDir = t.TempDir(), t.TempDir()
	t.Cleanup(func() { PulledDir, PullLockDir = oldPulled, oldLocks })
	eng := newFakeEngine(t)
	ctx := context.Background()
	progress := newLineWriter()
	id, _, err := Pull(ctx, eng, "docker.io/library/alpine:3.22", "", "/run/test.sock", progress, false)
	if err != nil || !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("Pull = %q, %v", id, err)
	}
	if got := progress.all(); got == "" {
		t.Errorf("no progress lines")
	}
	if _, err := os.Stat(pulledPath("/run/test.sock", id)); err != nil {
		t.Errorf("the pull is not recorded for gc --images: %v", err)
	}
	if _, _, err := Pull(ctx, eng, "registry.unreachable/x:1", "", "", newLineWriter(), false); err == nil || !strings.Contains(err.Error(), `pulling image "registry.unreachable/x:1" failed`) {
		t.Errorf("Pull from an unreachable registry: %v", err)
	}
	imgs, err := Images(ctx, eng)
	if err != nil || !slices.ContainsFunc(imgs, func(i ImageInfo) bool { return i.Ref == "docker.io/library/alpine:3.22" && i.ID == id }) {
		t.Errorf("Images = %+v, %v", imgs, err)
	}
}

// TestPullNeverClaimsAnImageThatWasThere: an image on the node before a
// pull (an admin's, pulled by hand) is not recorded as containerjob's when
// a user pulls it again and the registry serves the same image, so gc
// --images never removes it; an image the pull brought is recorded.
func TestPullNeverClaimsAnImageThatWasThere(t *testing.T) {
	oldPulled, oldLocks := PulledDir, PullLockDir
	PulledDir, PullLockDir = t.TempDir(), t.TempDir()
	t.Cleanup(func() { PulledDir, PullLockDir = oldPulled, oldLocks })
	eng := newFakeEngine(t)
	eng.Unchanged = true
	ctx := context.Background()
	admins := eng.AddImage("docker.io/library/tool:1", nil)
	id, _, err := Pull(ctx, eng, "docker.io/library/tool:1", "", "/run/test.sock", newLineWriter(), false)
	if err != nil || id != admins {
		t.Fatalf("Pull = %q, %v; want the admin's %s", id, err, admins)
	}
	if _, err := os.Stat(pulledPath("/run/test.sock", id)); !os.IsNotExist(err) {
		t.Errorf("the admin's image was recorded as pulled by containerjob (%v); gc --images would remove it", err)
	}
	// Through a launch (pull = always) alike.
	eng2, d, opts := lifecycle(t, policy.Request{Image: "alpine:3.20", Cmd: []string{"true"}})
	eng2.Unchanged = true
	present := eng2.AddImage("docker.io/library/alpine:3.20", nil)
	opts.EngineSocket = "/run/test.sock"
	d.Pull = "always"
	if _, err := Run(ctx, eng2, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pulledPath("/run/test.sock", present)); !os.IsNotExist(err) {
		t.Errorf("a launch's pull recorded the image that was there: %v", err)
	}
	// A new image is recorded.
	id, _, err = Pull(ctx, eng, "docker.io/library/fresh:1", "", "/run/test.sock", newLineWriter(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pulledPath("/run/test.sock", id)); err != nil {
		t.Errorf("a pulled image is not recorded: %v", err)
	}
}

func TestDryRunCreatesNothing(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	req, err := DryRun(context.Background(), eng, d, opts.Guard)
	if err != nil || req.Config.User != "1002:1002" || !strings.HasPrefix(req.Config.Image, "sha256:") {
		t.Fatalf("DryRun = %+v, %v", req.Config, err)
	}
	if slices.Contains(eng.Calls, "ContainerCreate") || len(eng.Pulls) > 0 {
		t.Errorf("a dry run called %v", eng.Calls)
	}
	want := opts.Guard
	want.UID = 4242
	if _, err := DryRun(context.Background(), eng, d, want); err == nil || !strings.Contains(err.Error(), `guard "user"`) {
		t.Errorf("DryRun does not guard: %v", err)
	}
}

func TestIsolatedBridgeIsCreatedOnce(t *testing.T) {
	eng := newFakeEngine(t)
	if err := EnsureIsolatedBridge(context.Background(), eng); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(eng.Calls, "NetworkCreate") {
		t.Errorf("calls %v", eng.Calls)
	}
	eng.Network = map[string]string{"com.docker.Network.bridge.enable_icc": "true"}
	if err := EnsureIsolatedBridge(context.Background(), eng); err == nil || !strings.Contains(err.Error(), "exists without containerjob's isolation") {
		t.Errorf("a bridge without isolation: %v", err)
	}
	_ = os.Getpid
}
