//go:build integration

package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	startRegistry(t, "127.0.0.1:5055")
	const ref = "127.0.0.1:5055/cjtest/tool:1"
	pushImage(t, ref)

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

// startRegistry runs Debian's docker-registry on addr for the test, with
// an empty store, and returns the file its request log goes to.
func startRegistry(t *testing.T, addr string) string {
	t.Helper()
	const registryBin = "/usr/bin/docker-registry"
	if _, err := os.Stat(registryBin); err != nil {
		testutil.Unavailable(t, "no %s (Debian package docker-registry)", registryBin)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: "+dir+"/data\nhttp:\n  addr: "+addr+"\n"), 0o644)
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	reg := exec.Command(registryBin, "serve", cfg)
	reg.Stdout, reg.Stderr = logFile, logFile
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait(); logFile.Close() })
	return logPath
}

// pushImage pushes to the local registry an image with a layer of its own
// (so a pull has a layer to fetch) and leaves it off the node.
func pushImage(t *testing.T, ref string) {
	t.Helper()
	name := "cjtest-pushsrc-" + strings.NewReplacer("/", "-", ":", "-", ".", "-").Replace(ref)
	if out, err := exec.Command("docker", "run", "--name", name, "alpine:3.20", "sh", "-c", "date +%s%N > /marker").CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v %s", err, out)
	}
	out, err := exec.Command("docker", "commit", name, ref).CombinedOutput()
	exec.Command("docker", "rm", "-f", name).Run()
	if err != nil {
		t.Fatalf("docker commit: %v %s", err, out)
	}
	for i := 0; i < 50; i++ { // the registry may still be starting
		if out, err = exec.Command("docker", "push", ref).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("docker push to the local registry: %v %s", err, out)
	}
	exec.Command("docker", "rmi", ref).Run()
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
}

// registryRequests counts the registry's completed requests by method and
// path, from its log.
func registryRequests(t *testing.T, logPath string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	method := regexp.MustCompile(`http\.request\.method=(\w+)`)
	uri := regexp.MustCompile(`http\.request\.uri="([^"]+)"`)
	out := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "response completed") {
			continue
		}
		m, u := method.FindStringSubmatch(l), uri.FindStringSubmatch(l)
		if m != nil && u != nil {
			out[m[1]+" "+u[1]]++
		}
	}
	return out
}

// TestConcurrentLaunchesPullOnce: 20 launches at once of an image missing
// from the node make one pull: the registry serves the tag's manifest once
// and each blob once; the launches that found the pull under way say they
// wait for it, and all run.
func TestConcurrentLaunchesPullOnce(t *testing.T) {
	logPath := startRegistry(t, "127.0.0.1:5056")
	const ref = "127.0.0.1:5056/cjtest/burst:1"
	pushImage(t, ref)
	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["127.0.0.1:5056/cjtest/*"]
pull = ["missing"]
max_containers_per_user = 64
`)
	before := registryRequests(t, logPath)
	const n = 20
	type result struct {
		code   int
		stderr string
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			cmd := testutil.Command(alice, alice.Home, nil, bin, "--pull", "missing", ref, "true")
			var errb strings.Builder
			cmd.Stderr = &errb
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				code = -1
			}
			results <- result{code, errb.String()}
		}()
	}
	waited := 0
	for i := 0; i < n; i++ {
		r := <-results
		if r.code != 0 {
			t.Errorf("launch: code %d stderr %q", r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "containerjob: waiting for another launch's pull of "+ref+" on this node\n") {
			waited++
		}
	}
	after := registryRequests(t, logPath)
	manifests, blobs := 0, map[string]int{}
	for k, v := range after {
		v -= before[k]
		switch {
		case v == 0:
		case strings.HasPrefix(k, "GET /v2/cjtest/burst/manifests/"):
			manifests += v
		case strings.HasPrefix(k, "GET /v2/cjtest/burst/blobs/"):
			blobs[k] = v
		}
	}
	if manifests != 1 || len(blobs) == 0 {
		t.Errorf("%d launches: %d manifest GETs, blobs %v; want one pull", n, manifests, blobs)
	}
	for k, v := range blobs {
		if v != 1 {
			t.Errorf("%s served %d times; want once", k, v)
		}
	}
	t.Logf("%d launches: %d waited for the pull; registry served manifest %d time(s), blobs %v", n, waited, manifests, blobs)
}
