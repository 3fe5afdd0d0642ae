//go:build integration

package integration

import (
	"bufio"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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

// TestAttachToDirectOutput: a container whose command writes to the
// caller's pipe itself (no --name) has nothing in the engine to follow:
// attach says so in one line instead of following silence.
func TestAttachToDirectOutput(t *testing.T) {
	cmd := testutil.Command(alice, alice.Home, nil, bin, "alpine:3.20", "sh", "-c", "echo ready; ls -l /proc/self/fd/1; sleep 3")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	rd := bufio.NewReader(stdout)
	if line, _ := rd.ReadString('\n'); line != "ready\n" {
		t.Fatalf("container said %q", line)
	}
	// The command's stdout is the caller's pipe itself, not the engine's.
	if line, _ := rd.ReadString('\n'); !strings.Contains(line, "pipe:[") {
		t.Errorf("the command's stdout is %q, want the caller's pipe", line)
	}
	ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(alice.UID)))
	if len(ids) != 1 {
		t.Fatalf("containers %v", ids)
	}
	r := cj(t, alice, alice.Home, "attach", ids[0])
	if r.Code != 125 || !strings.Contains(r.Stderr, "there is nothing to attach to") {
		t.Errorf("attach to a direct-output container: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestPull pulls from a real registry (Debian's docker-registry on the
// loopback) with the engine, as the policy allows, and refuses the image
// store commands that would let a user redefine an image name.
func TestPull(t *testing.T) {
	testutil.StartRegistry(t, "127.0.0.1:5055")
	const ref = "127.0.0.1:5055/cjtest/tool:1"
	testutil.PushImage(t, ref)

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

// TestConcurrentLaunchesPullOnce: 20 launches at once of an image missing
// from the node make one pull: the registry serves the tag's manifest once
// and each blob once; the launches that found the pull under way say they
// wait for it, and all run.
func TestConcurrentLaunchesPullOnce(t *testing.T) {
	logPath := testutil.StartRegistry(t, "127.0.0.1:5056")
	const ref = "127.0.0.1:5056/cjtest/burst:1"
	testutil.PushImage(t, ref)
	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["127.0.0.1:5056/cjtest/*"]
pull = ["missing"]
max_containers_per_user = 64
`)
	before := testutil.RegistryRequests(t, logPath)
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
	after := testutil.RegistryRequests(t, logPath)
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

// A login for the private registry of TestPrivateRegistry: cjalice's
// password and its bcrypt line (cost 4) for docker-registry's htpasswd.
const (
	privatePassword = "cj-alice-secret"
	privateHtpasswd = "cjalice:$2a$04$TP3MVusQeNVn4hRGV7GJ/OC7bX8lF7jNrzpT9y.CJj/OJwCUyqHaa"
)

// TestPrivateRegistry: an image of a registry the policy marks private runs
// only for a caller whose own ~/.docker/config.json the registry accepts:
// alice's login pulls and runs it; bob, without credentials or with wrong
// ones, is refused in one line even once the image is on the node, and
// nothing is created for him; a malformed config.json is a clear error.
// The credentials appear nowhere containerjob writes.
func TestPrivateRegistry(t *testing.T) {
	testutil.StartRegistry(t, "127.0.0.1:5058", privateHtpasswd)
	const ref = "127.0.0.1:5058/cjtest/secret:1"
	login := t.TempDir()
	if out, err := exec.Command("docker", "--config", login, "login", "-u", "cjalice", "-p", privatePassword, "127.0.0.1:5058").CombinedOutput(); err != nil {
		// The registry may still be starting.
		time.Sleep(time.Second)
		if again, err := exec.Command("docker", "--config", login, "login", "-u", "cjalice", "-p", privatePassword, "127.0.0.1:5058").CombinedOutput(); err != nil {
			t.Fatalf("docker login to the test registry: %v %s (first try: %s)", err, again, out)
		}
	}
	testutil.PushImageWith(t, ref, []string{"DOCKER_CONFIG=" + login}, "private")
	usePolicy(t, strings.Replace(testPolicy, "[settings]\n", "[settings]\nprivate_registries = [\"127.0.0.1:5058\"]\n", 1)+`
[user.cjalice]
images_allow = ["127.0.0.1:5058/cjtest/*"]
pull = ["missing"]

[user.cjbob]
images_allow = ["127.0.0.1:5058/cjtest/*"]
pull = ["missing"]
`)
	writeConfig := func(u testutil.User, content string) {
		t.Helper()
		dir := filepath.Join(u.Home, ".docker")
		os.MkdirAll(dir, 0o700)
		os.Chown(dir, int(u.UID), int(u.GID))
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(path, int(u.UID), int(u.GID))
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	auth := func(user, pass string) string {
		return `{"auths": {"127.0.0.1:5058": {"auth": "` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
	}
	run := func(u testutil.User) testutil.Result { return cj(t, u, u.Home, ref, "cat", "/marker") }
	nothingCreated := func(u testutil.User, since time.Time) {
		t.Helper()
		if ev := testutil.ContainerEvents(t, docker, u.UID, since, "create"); len(ev) != 0 {
			t.Errorf("%s: %d containers created", u.Name, len(ev))
		}
	}

	// bob first, with no credentials: the image is not pulled for him.
	since := time.Now()
	if r := run(bob); r.Code != 125 || !strings.Contains(r.Stderr, "has none for it") {
		t.Errorf("bob before the image is here: code %d stderr %q", r.Code, r.Stderr)
	}
	nothingCreated(bob, since)
	writeConfig(alice, auth("cjalice", privatePassword))
	if r := run(alice); r.Code != 0 || r.Stdout != "private\n" {
		t.Fatalf("alice with her login: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// Now the image is on the node; bob is held to his own access all the same.
	since = time.Now()
	r := run(bob)
	// One error line, and what to do on the hint line after it.
	lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
	if r.Code != 125 || len(lines) != 2 || !strings.Contains(lines[0], "private registry 127.0.0.1:5058") || !strings.HasSuffix(lines[0], "has none for it") ||
		lines[1] != "containerjob: hint: run `docker login 127.0.0.1:5058` where you have docker, or copy its entry" {
		t.Errorf("bob without credentials: code %d stderr %q", r.Code, r.Stderr)
	}
	writeConfig(bob, auth("cjalice", "guessed"))
	if r := run(bob); r.Code != 125 || !strings.Contains(r.Stderr, "did not grant your credentials access") {
		t.Errorf("bob with wrong credentials: code %d stderr %q", r.Code, r.Stderr)
	}
	nothingCreated(bob, since)
	writeConfig(alice, `{"auths": {"127.0.0.1:5058": `)
	if r := run(alice); r.Code != 125 || !strings.Contains(r.Stderr, "not a Docker client configuration") {
		t.Errorf("alice with a broken config.json: code %d stderr %q", r.Code, r.Stderr)
	}
	trail, _ := os.ReadFile("/var/log/containerjob/audit.log")
	if strings.Contains(string(trail), privatePassword) || strings.Contains(string(trail), base64.StdEncoding.EncodeToString([]byte("cjalice:"+privatePassword))) {
		t.Errorf("the audit trail holds alice's credentials")
	}
}

// TestImageStoreCollect: on an engine whose data is on a small tmpfs, gc
// --images, above image_store_high, removes the images containerjob pulled
// that no container uses, least recently used first; an image a (stopped)
// container uses, one images_keep pins and one an admin pulled by hand
// stay. The audit trail records each removal.
func TestImageStoreCollect(t *testing.T) {
	logPath := testutil.StartRegistry(t, "127.0.0.1:5059")
	ref := func(name string) string { return "127.0.0.1:5059/cjtest/store-" + name + ":1" }
	for _, name := range []string{"old", "used", "pinned", "newer", "admin"} {
		testutil.PushImage(t, ref(name), name, "", "12")
	}
	// The test's engine, on a 160 MiB tmpfs in a network namespace of its
	// own, pulls the same images from a registry there.
	sock, netns := testutil.StartEngine(t, "160m")
	testutil.ServeRegistryIn(t, netns, "127.0.0.1:5059", logPath)
	usePolicy(t, strings.Replace(testPolicy, "[settings]\n", `[settings]
docker_host = "unix://`+sock+`"
image_store_high = "30%"
image_store_low = "5%"
images_keep = ["127.0.0.1:5059/cjtest/store-pinned:*"]
`, 1)+`
[user.cjalice]
images_allow = ["127.0.0.1:5059/cjtest/*"]
pull = ["missing"]
`)
	dockerT := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("docker", append([]string{"-H", "unix://" + sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %v %s", args, err, out)
		}
		return string(out)
	}
	// Pulled through containerjob, oldest first.
	for _, name := range []string{"old", "used", "pinned", "newer"} {
		if r := cj(t, alice, alice.Home, "pull", ref(name)); r.Code != 0 {
			t.Fatalf("alice pull %s: code %d stderr %q", name, r.Code, r.Stderr)
		}
	}
	dockerT("pull", ref("admin"))
	dockerT("create", ref("used"), "true")
	out, err := exec.Command(bin, "gc", "--images").CombinedOutput()
	if err != nil {
		t.Fatalf("gc --images: %v %s", err, out)
	}
	o, n := strings.Index(string(out), "removed sha256:"), strings.Index(string(out), ref("newer"))
	if o < 0 || !strings.Contains(string(out), ref("old")) || n < strings.Index(string(out), ref("old")) {
		t.Errorf("gc --images said %q; want store-old removed, then store-newer", out)
	}
	for name, want := range map[string]bool{"old": false, "newer": false, "used": true, "pinned": true, "admin": true} {
		err := exec.Command("docker", "-H", "unix://"+sock, "image", "inspect", ref(name)).Run()
		if (err == nil) != want {
			t.Errorf("image store-%s on the engine: %v, want kept %v", name, err == nil, want)
		}
	}
	trail, _ := os.ReadFile("/var/log/containerjob/audit.log")
	if !strings.Contains(string(trail), `"msg":"image-removed"`) || !strings.Contains(string(trail), ref("old")) {
		t.Errorf("the audit trail lacks the removals")
	}
}

// TestPullFaults: a registry that does not answer, a digest the registry no
// longer has, and a disk that fills during the pull each end the launch
// with one line and exit 125, and leave no image behind.
func TestPullFaults(t *testing.T) {
	logPath := testutil.StartRegistry(t, "127.0.0.1:5062")
	const big = "127.0.0.1:5062/cjtest/big:1"
	testutil.PushImage(t, big, "big", "", "48")
	sock, netns := testutil.StartEngine(t, "40m")
	testutil.ServeRegistryIn(t, netns, "127.0.0.1:5062", logPath)
	base := `
[user.cjalice]
images_allow = ["127.0.0.1:*/cjtest/*"]
pull = ["missing"]
`
	oneLine := func(what string, r testutil.Result, want string) {
		t.Helper()
		// Besides the progress line that a pull began, one line.
		lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
		lines = slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, "containerjob: pulling ") })
		if r.Code != 125 || !strings.Contains(r.Stderr, want) || len(lines) != 1 {
			t.Errorf("%s: code %d stderr %q; want one line with %q", what, r.Code, r.Stderr, want)
		}
	}
	usePolicy(t, testPolicy+base)
	// Nothing listens on 5063.
	oneLine("unreachable registry", cj(t, alice, alice.Home, "127.0.0.1:5063/cjtest/none:1", "true"), "connection refused")
	gone := "127.0.0.1:5062/cjtest/big@sha256:" + strings.Repeat("0", 64)
	oneLine("a digest the registry does not have", cj(t, alice, alice.Home, gone, "true"), "pulling image")

	// The test's engine has 40 MiB for a 48 MiB layer.
	usePolicy(t, strings.Replace(testPolicy, "[settings]\n", "[settings]\ndocker_host = \"unix://"+sock+"\"\n", 1)+base)
	oneLine("a disk that fills", cj(t, alice, alice.Home, big, "true"), "no space left on device")
	if out, err := exec.Command("docker", "-H", "unix://"+sock, "image", "inspect", big).CombinedOutput(); err == nil {
		t.Errorf("a half-pulled image is left: %s", out)
	}
}
