//go:build integration

package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestAttach: attach follows the caller's own running container and exits
// with its status; stdout and stderr stay apart.
func TestAttach(t *testing.T) {
	cmd := testutil.Command(alice, alice.Home, nil, bin, "--name", "follow", "alpine:3.20",
		"sh", "-c", "echo ready; sleep 2; echo tick; echo tock >&2; exit 7")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("container said %q", line)
	}
	r := cj(t, bob, bob.Home, "attach", "follow")
	if r.Code != 125 || !strings.Contains(r.Stderr, "no container of yours matches") {
		t.Errorf("bob attach alice's: code %d stderr %q", r.Code, r.Stderr)
	}
	r = cj(t, alice, alice.Home, "attach", "follow")
	if r.Code != 7 || r.Stdout != "tick\n" || r.Stderr != "tock\n" {
		t.Errorf("attach: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestPull pulls from a real registry (Debian's docker-registry on the
// loopback) with the engine, as the policy allows, and refuses the image
// store commands that would let a user redefine an image name.
func TestPull(t *testing.T) {
	const registryBin = "/usr/bin/docker-registry"
	if _, err := os.Stat(registryBin); err != nil {
		testutil.Unavailable(t, "no %s (Debian package docker-registry)", registryBin)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "+dir+"/data\nhttp:\n  addr: 127.0.0.1:5055\n"), 0o644)
	reg := exec.Command(registryBin, "serve", cfg)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { reg.Process.Kill(); reg.Wait() }()
	const ref = "127.0.0.1:5055/cjtest/tool:1"
	var out []byte
	var err error
	// An image with a layer of its own, so the pull has a layer to fetch.
	if out, err := exec.Command("docker", "run", "--name", "cjtest-pullsrc", "alpine:3.20", "sh", "-c", "date +%s%N > /marker").CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v %s", err, out)
	}
	out, err = exec.Command("docker", "commit", "cjtest-pullsrc", ref).CombinedOutput()
	exec.Command("docker", "rm", "-f", "cjtest-pullsrc").Run()
	if err != nil {
		t.Fatalf("docker commit: %v %s", err, out)
	}
	for i := 0; i < 50; i++ {
		if out, err = exec.Command("docker", "push", ref).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("docker push to the local registry: %v %s", err, out)
	}
	exec.Command("docker", "rmi", ref).Run()
	defer exec.Command("docker", "rmi", ref).Run()

	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["127.0.0.1:5055/cjtest/*"]
pull = ["always"]
`)

	// In a job's log (no terminal): one plain line per layer event.
	r := cj(t, alice, alice.Home, "pull", ref)
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, ref+" sha256:") || !strings.Contains(r.Stderr, "containerjob: pull "+ref+": layer ") ||
		!strings.Contains(r.Stderr, ": Pull complete\n") || strings.Contains(r.Stderr, "\r") {
		t.Errorf("alice pull: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", ref).CombinedOutput(); err != nil {
		t.Errorf("the image is not on the node after the pull: %v %s", err, out)
	}
	// The pulled image runs like any other.
	if r := cj(t, alice, alice.Home, ref, "echo", "ran"); r.Code != 0 || r.Stdout != "ran\n" {
		t.Errorf("run the pulled image: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// Only pull = missing for bob: an image already here is not fetched again.
	r = cj(t, bob, bob.Home, "pull", "alpine:3.20")
	if r.Code != 0 || !strings.Contains(r.Stdout, "is already on this node") {
		t.Errorf("bob pull present image: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	since := time.Now()
	r = cj(t, bob, bob.Home, "pull", ref)
	refused(t, bob, since, r, `image "`+ref+`" is not allowed, says images_allow in [defaults]`)
	for _, args := range [][]string{{"load"}, {"tag", "alpine:3.20", "alpine:mine"}, {"rmi", "alpine:3.20"}, {"import", "x.tar"}, {"commit", "abc"}, {"build", "."}, {"push", ref}} {
		since := time.Now()
		r := cj(t, bob, bob.Home, args...)
		refused(t, bob, since, r, "containerjob "+args[0]+" is not offered")
	}
	if out, err := exec.Command("docker", "image", "inspect", "alpine:mine").CombinedOutput(); err == nil {
		t.Errorf("a tag was created: %s", out)
	}
	audit, _ := os.ReadFile("/var/log/containerjob/audit.log")
	if !strings.Contains(string(audit), `"msg":"pull-end"`) || !strings.Contains(string(audit), `"action":"rmi"`) {
		t.Errorf("audit trail lacks the pull or the refused rmi")
	}
}
