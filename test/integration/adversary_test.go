//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// The attacks of issue 26's review, as an ordinary user against the
// installed package: each test fails on bdb8c16's binary.

// runBounded runs containerjob as u and fails the test, killing what it
// started, when it has not ended within bound: the attacks below made the
// old binary wait for ever.
func runBounded(t *testing.T, u testutil.User, bound time.Duration, env []string, args ...string) testutil.Result {
	t.Helper()
	cmd := testutil.Command(u, u.Home, env, append([]string{bin}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, strings.NewReader("")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		for _, p := range privilegedProcesses(t) {
			var pid int
			if _, err := fmt.Sscan(filepath.Base(p), &pid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		cmd.Process.Kill()
		<-done
		t.Fatalf("containerjob %v as %s did not end within %s; stderr %q", args, u.Name, bound, errb.String())
	}
	return testutil.Result{Stdout: out.String(), Stderr: errb.String(), Code: cmd.ProcessState.ExitCode()}
}

// TestCallersFIFOHoldsNoPullLock: ~/.docker/config.json made a FIFO used
// to keep the root launch blocked in open() while it held the image's
// node-wide pull lock, so every other user's launch of that image waited
// too. The file is now read before any lock, without blocking, regular
// files only: the launch goes on (anonymously) and bob's is not held.
func TestCallersFIFOHoldsNoPullLock(t *testing.T) {
	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["127.0.0.1:*/cjtest/*"]
[user.cjbob]
images_allow = ["127.0.0.1:*/cjtest/*"]
`)
	dir := userDir(t, alice, ".docker")
	fifo := filepath.Join(dir, "config.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(fifo, int(alice.UID), int(alice.GID))
	const ref = "127.0.0.1:5065/cjtest/none:1" // nothing listens there
	r := runBounded(t, alice, 60*time.Second, nil, ref, "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "connection refused") {
		t.Errorf("alice with a FIFO for config.json: code %d stderr %q; want the registry's refusal", r.Code, r.Stderr)
	}
	if r := runBounded(t, bob, 60*time.Second, nil, ref, "true"); r.Code != 125 {
		t.Errorf("bob after alice: code %d stderr %q", r.Code, r.Stderr)
	}
	noContainers(t, alice)
}

// TestJobControlStopsAreIgnored: ^Z on the caller's terminal sends SIGTSTP
// to the root process too (the terminal does not ask whose process it
// is); it stopped there, holding whatever lock it held, and every launch
// on the node waited. The privileged process now ignores SIGTSTP, SIGTTIN
// and SIGTTOU. (Root sends the signal here, as the terminal would.)
func TestJobControlStopsAreIgnored(t *testing.T) {
	stop := startAs(t, `exec `+bin+` alpine:3.20 sh -c 'echo up; sleep 60'`)
	defer func() { stop(syscall.SIGTERM); noContainers(t, alice) }()
	procs := privilegedProcesses(t)
	if len(procs) == 0 {
		t.Fatal("no privileged process found")
	}
	for _, p := range procs {
		var pid int
		fmt.Sscan(filepath.Base(p), &pid)
		for _, sig := range []syscall.Signal{syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
			syscall.Kill(pid, sig)
		}
	}
	time.Sleep(time.Second)
	defer func() {
		for _, p := range procs {
			var pid int
			fmt.Sscan(filepath.Base(p), &pid)
			syscall.Kill(pid, syscall.SIGCONT) // what the old binary needed
		}
	}()
	for _, p := range procs {
		stat, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue // ended
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'T' {
			t.Errorf("%s was stopped by a job-control signal: %s", p, stat[:i+3])
		}
	}
}

// TestCallersLimitsReachTheContainer: the container gets the caller's own
// process and open-file limits, within the policy's ulimits (the test
// policy's nofile=1024:2048), as a task under pyxis would: alice with
// ulimit -u 300 used to hold thousands of processes.
func TestCallersLimitsReachTheContainer(t *testing.T) {
	r := testutil.Run(t, alice, alice.Home, nil, "bash", "-c", `ulimit -u 300; ulimit -Sn 1000; ulimit -Hn 1500; exec `+bin+` alpine:3.20 sh -c 'ulimit -u; ulimit -Hu; ulimit -n; ulimit -Hn'`)
	if r.Code != 0 || r.Stdout != "300\n300\n1024\n1500\n" {
		t.Errorf("ulimit -u 300, -Hn 1500: code %d stdout %q stderr %q; want 300 300 1024 1500", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

// TestStagingRootIsPrivate: after a launch that stages a mount, the
// staging root is 0700: staged mounts (another user's job directory,
// opened past their 0700 home) show in every process's mountinfo, and
// with 0711 any user could walk into them and keep the descriptor.
func TestStagingRootIsPrivate(t *testing.T) {
	src := userDir(t, alice, "staged")
	if r := cj(t, alice, alice.Home, "-v", src+":/in", "alpine:3.20", "ls", "-d", "/in"); r.Code != 0 {
		t.Fatalf("launch with a mount: code %d stderr %q", r.Code, r.Stderr)
	}
	fi, err := os.Stat("/run/containerjob/stage")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("the staging root is %v, want 0700", fi.Mode().Perm())
	}
	noContainers(t, alice)
}

// TestDigestNeedsARuleThatNamesIt: images_allow = ["…/tool:1"] let
// tool@<digest of tool:2> run, and a re: deny naming tool:2 never matched
// its digest. Against a real registry: a digest runs only where the rules
// name it, its whole repository, or a tag the engine or registry confirms
// is that digest.
func TestDigestNeedsARuleThatNamesIt(t *testing.T) {
	testutil.StartRegistry(t, "127.0.0.1:5064")
	const repo = "127.0.0.1:5064/cjtest/tool"
	testutil.PushImage(t, repo+":1", "one", "keep")
	testutil.PushImage(t, repo+":2", "two", "keep")
	digestOf := func(ref string) string {
		out, err := exec.Command("docker", "image", "inspect", "--format", "{{range .RepoDigests}}{{.}} {{end}}", ref).Output()
		if err != nil {
			t.Fatalf("inspect %s: %v", ref, err)
		}
		for _, rd := range strings.Fields(string(out)) {
			if strings.HasPrefix(rd, repo+"@") {
				return rd
			}
		}
		t.Fatalf("%s has no repo digest: %q", ref, out)
		return ""
	}
	d1, d2 := digestOf(repo+":1"), digestOf(repo+":2")

	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["`+repo+`:1"]
`)
	since := time.Now()
	refused(t, alice, since, cj(t, alice, alice.Home, d2, "cat", "/marker"), "is not allowed")
	if r := cj(t, alice, alice.Home, d1, "cat", "/marker"); r.Code != 0 || r.Stdout != "one\n" {
		t.Errorf("tool:1's own digest: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["`+repo+`:*"]
images_deny = ["re:127\\.0\\.0\\.1:5064/cjtest/tool:2"]
`)
	since = time.Now()
	refused(t, alice, since, cj(t, alice, alice.Home, d2, "cat", "/marker"), "is denied")
	if r := cj(t, alice, alice.Home, d1, "cat", "/marker"); r.Code != 0 {
		t.Errorf("a digest the deny does not name: code %d stderr %q", r.Code, r.Stderr)
	}
	noContainers(t, alice)
}
