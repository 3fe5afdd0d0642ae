//go:build integration

package integration

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher"
)

// TestStageRefusesSwappedSource: a source swapped for a symlink after it
// was resolved and checked is refused when it is opened for binding.
func TestStageRefusesSwappedSource(t *testing.T) {
	dir := userDir(t, alice, "swap")
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	os.Chown(data, int(alice.UID), int(alice.GID))
	id := userfs.Identity{UID: alice.UID, GID: alice.GID}
	var checked string
	if err := userfs.As(id, func() (err error) { checked, err = userfs.Resolve(data, "/"); return }); err != nil {
		t.Fatal(err)
	}
	// The swap a racing user would do between check and mount.
	os.Rename(data, data+".old")
	os.Symlink("/etc", data)
	if _, err := launcher.NewStage(id, []string{checked}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "changed after it was checked") {
		t.Fatalf("NewStage after the swap: %v", err)
	}
	// A component swapped higher up is refused too.
	os.Remove(data)
	os.Rename(data+".old", data)
	sub := filepath.Join(data, "sub")
	os.Mkdir(sub, 0o755)
	if err := userfs.As(id, func() (err error) { checked, err = userfs.Resolve(sub, "/"); return }); err != nil {
		t.Fatal(err)
	}
	os.Rename(data, data+".old")
	os.Symlink(bob.Home, data)
	if _, err := launcher.NewStage(id, []string{checked}, 5*time.Second); err == nil {
		t.Fatalf("NewStage with a swapped parent succeeded")
	}
	entries, _ := os.ReadDir(launcher.StageRoot)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), strconv.Itoa(os.Getpid())+"-") {
			t.Errorf("refused stage left %s", e.Name())
		}
	}
}

// TestMountsAreStaged: the engine is given private staging paths, not the
// user's, and they are gone once the container runs; the container sees
// and writes the user's directory.
func TestMountsAreStaged(t *testing.T) {
	dir := userDir(t, alice, "staged")
	os.WriteFile(filepath.Join(dir, "in"), []byte("hello\n"), 0o644)
	cmd := testutil.Command(alice, dir, nil, bin, "-v", dir+":/w", "alpine:3.20", "sh", "-c", "cat /w/in; echo out > /w/out; echo ready; sleep 30")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "ready" {
			break
		}
	}
	if len(lines) < 2 || lines[0] != "hello" {
		t.Fatalf("container output %q", lines)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "out\n" {
		t.Errorf("write through the staged mount: %q", b)
	}
	ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(alice.UID)))
	if len(ids) != 1 {
		t.Fatalf("containers %v", ids)
	}
	c, err := docker.ContainerInspect(context.Background(), ids[0], client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Container.HostConfig.Mounts {
		if m.Target == "/.containerjob/init" && m.Source == launcher.InitPath && m.ReadOnly {
			continue // containerjob's own, the same for every launch
		}
		if !launcher.IsStaged(m.Source) {
			t.Errorf("mount %s -> %s was given to the engine by the user's path", m.Source, m.Target)
		}
		// The container may print before the engine's start call has
		// returned to containerjob, which releases the staging mount right
		// after; it must be gone well before the container's 30 s are up.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(m.Source); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("staging path %s still exists 10 s into the container's run", m.Source)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	again, err := docker.ContainerInspect(context.Background(), ids[0], client.ContainerInspectOptions{})
	if err != nil || again.Container.State == nil || !again.Container.State.Running {
		t.Errorf("the container was no longer running when its staging paths were checked: %v", err)
	}
}

// TestEngineInAnotherMountNamespace: containerjob started in a mount
// namespace of its own (as a scheduler daemon with a private /etc would
// start it) stages its mounts where the engine cannot see them; the
// launch is refused with one line instead of running with an empty job
// directory, and nothing is created.
func TestEngineInAnotherMountNamespace(t *testing.T) {
	dir := userDir(t, alice, "otherns")
	os.WriteFile(filepath.Join(dir, "marker"), []byte("here\n"), 0o644)
	since := time.Now()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "setpriv",
		"--reuid="+strconv.Itoa(int(alice.UID)), "--regid="+strconv.Itoa(int(alice.GID)), "--init-groups", "--",
		bin, "alpine:3.20", "cat", dir+"/marker")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + alice.Home, "USER=" + alice.Name}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 125 || !strings.Contains(stderr.String(), "another mount namespace than containerjob") || stdout.String() != "" {
		t.Errorf("a launch from another mount namespace: code %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
	if ev := testutil.ContainerEvents(t, docker, alice.UID, since, "create"); len(ev) != 0 {
		t.Errorf("%d containers created", len(ev))
	}
}
