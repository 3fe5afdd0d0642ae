//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

func TestIdentityStreamsAndExitCode(t *testing.T) {
	dir := userDir(t, alice, "job1")
	r := cj(t, alice, dir, "run", "alpine:3.20", "sh", "-c", "id; pwd; echo out; echo err >&2; exit 3")
	if r.Code != 3 {
		t.Fatalf("exit code %d, want 3; stderr %q", r.Code, r.Stderr)
	}
	// The caller has a name inside (user_entries): id prints it.
	wantID := fmt.Sprintf("uid=%d(%s) gid=%d(%s)", alice.UID, alice.Name, alice.GID, alice.Name)
	if !strings.Contains(r.Stdout, wantID) {
		t.Errorf("stdout %q lacks %q", r.Stdout, wantID)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 3 || lines[1] != dir || lines[2] != "out" {
		t.Errorf("stdout lines %q, want [id, %s, out]", lines, dir)
	}
	if strings.TrimSpace(r.Stderr) != "err" {
		t.Errorf("stderr %q, want only \"err\"", r.Stderr)
	}
	noContainers(t, alice)
}

func TestRunMayBeOmitted(t *testing.T) {
	r := cj(t, alice, alice.Home, "alpine:3.20", "cat", "/etc/os-release")
	if r.Code != 0 || !strings.Contains(r.Stdout, "containerjob test image") {
		t.Fatalf("code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

func TestSupplementaryGroupsAndNoPrivileges(t *testing.T) {
	r := cj(t, alice, alice.Home, "alpine:3.20", "sh", "-c", "id -G; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
	if r.Code != 0 {
		t.Fatalf("code %d stderr %q", r.Code, r.Stderr)
	}
	groups := strings.Fields(strings.Split(r.Stdout, "\n")[0])
	if !slices.Contains(groups, strconv.Itoa(int(extraGroupID))) || slices.Contains(groups, "0") {
		t.Errorf("groups %v: want the caller's cjextra (%d) and never 0", groups, extraGroupID)
	}
	if !strings.Contains(r.Stdout, "CapEff:\t0000000000000000") || !strings.Contains(r.Stdout, "NoNewPrivs:\t1") {
		t.Errorf("status %q: want no capabilities and no_new_privs", r.Stdout)
	}
	noContainers(t, alice)
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"success", []string{"true"}, 0, ""},
		{"container's own code", []string{"sh", "-c", "exit 42"}, 42, ""},
		{"command not found", []string{"no-such-command"}, 127, "not found"},
		{"command not executable", []string{"/etc/os-release"}, 126, "cannot be run"},
		{"child killed by signal", []string{"sh", "-c", "sh -c 'kill -KILL $$'; exit $?"}, 137, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cj(t, alice, alice.Home, append([]string{"alpine:3.20"}, tt.args...)...)
			if r.Code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", r.Code, tt.code, r.Stderr)
			}
			if tt.err != "" && !strings.Contains(r.Stderr, tt.err) {
				t.Errorf("stderr %q lacks %q", r.Stderr, tt.err)
			}
			noContainers(t, alice)
		})
	}
}

func TestMounts(t *testing.T) {
	dir := userDir(t, alice, "mounts")
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	os.Chown(data, int(alice.UID), int(alice.GID))

	r := cj(t, alice, dir, "-v", data+":/data", "alpine:3.20", "sh", "-c", "echo hi > /data/f && cat /srv/none 2>/dev/null; cat /mnt/readme 2>/dev/null; true")
	if r.Code != 0 {
		t.Fatalf("rw mount: code %d stderr %q", r.Code, r.Stderr)
	}
	fi, err := os.Stat(filepath.Join(data, "f"))
	if err != nil {
		t.Fatalf("file written in the container is not on the host: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != alice.UID {
		t.Errorf("file owner %d, want the caller %d", st.Uid, alice.UID)
	}

	r = cj(t, alice, dir, "-v", data+":/data:ro", "alpine:3.20", "sh", "-c", "echo x > /data/g")
	if r.Code == 0 || !strings.Contains(r.Stderr, "Read-only file system") {
		t.Errorf(":ro mount was writable: code %d stderr %q", r.Code, r.Stderr)
	}

	// The policy forces /srv/cjtest/shared read-only even when asked rw.
	r = cj(t, alice, dir, "-v", "/srv/cjtest/shared:/shared", "alpine:3.20", "sh", "-c", "cat /shared/readme; touch /shared/x")
	if !strings.Contains(r.Stdout, "shared data") || !strings.Contains(r.Stderr, "Read-only file system") {
		t.Errorf("forced read-only mount: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// A relative source resolves against the caller's working directory.
	r = cj(t, alice, dir, "-v", "./data:/d:ro", "alpine:3.20", "cat", "/d/f")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "hi" {
		t.Errorf("relative mount: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

func TestStdinAndEnv(t *testing.T) {
	cmd := testutil.Command(alice, alice.Home, []string{"CJ_FROM_CALLER=passed"}, bin, "-i", "-e", "CJ_FROM_CALLER", "-e", "CJ_SET=1", "alpine:3.20", "sh", "-c", "cat; echo $CJ_FROM_CALLER $CJ_SET $NVIDIA_VISIBLE_DEVICES")
	cmd.Stdin = strings.NewReader("line from stdin\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if got := string(out); got != "line from stdin\npassed 1 void\n" {
		t.Errorf("stdout %q", got)
	}
	noContainers(t, alice)
}

// TestSignals drives the realistic chain: the signal goes to the process
// the user started (sudo), which relays it to containerjob, which relays it
// to the container.
func TestSignals(t *testing.T) {
	tests := []struct {
		name   string
		signal syscall.Signal
		want   string
		code   int
	}{
		{"SIGTERM stops the container", syscall.SIGTERM, "got TERM", 143},
		{"SIGUSR1 is forwarded", syscall.SIGUSR1, "got USR1", 10},
		{"SIGINT is forwarded", syscall.SIGINT, "got INT", 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := `trap 'echo got TERM; exit 143' TERM; trap 'echo got USR1; exit 10' USR1; trap 'echo got INT; exit 130' INT; echo ready; while :; do sleep 0.1; done`
			cmd := testutil.Command(alice, alice.Home, nil, bin, "alpine:3.20", "sh", "-c", script)
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			ready := make(chan bool, 1)
			var lines []string
			done := make(chan struct{})
			go func() {
				defer close(done)
				for sc.Scan() {
					lines = append(lines, sc.Text())
					if sc.Text() == "ready" {
						ready <- true
					}
				}
			}()
			select {
			case <-ready:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("container never became ready; stderr %q", stderr.String())
			}
			if err := cmd.Process.Signal(tt.signal); err != nil {
				t.Fatal(err)
			}
			<-done
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if !slices.Contains(lines, tt.want) {
				t.Errorf("output %q lacks %q: the signal did not reach the container's process", lines, tt.want)
			}
			noContainers(t, alice)
		})
	}
}

func TestSigtermGraceThenKill(t *testing.T) {
	// A process that ignores SIGTERM is killed after stop_grace_seconds (3).
	cmd := testutil.Command(alice, alice.Home, nil, bin, "alpine:3.20", "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.1; done`)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("no ready line")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for sc.Scan() {
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 137 {
		t.Errorf("exit code %d, want 137 (killed after the grace period)", code)
	}
	noContainers(t, alice)
}

func TestNamesAreNamespaced(t *testing.T) {
	// Alice holds the name "web"; Bob asking for "web" must not collide
	// with, or reach, hers.
	cmd := testutil.Command(alice, alice.Home, nil, bin, "--name", "web", "alpine:3.20", "sh", "-c", "echo ready; sleep 30")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatal("alice's container did not start")
	}
	r := cj(t, bob, bob.Home, "--name", "web", "alpine:3.20", "true")
	if r.Code != 0 {
		t.Errorf("bob's --name web failed: %q", r.Stderr)
	}
	names := listContainers("org.containerjob.uid=" + strconv.Itoa(int(alice.UID)))
	if len(names) != 1 {
		t.Errorf("alice's container disappeared: %v", names)
	}
	noContainers(t, bob)
}

func TestAuditTrail(t *testing.T) {
	since := time.Now()
	cj(t, bob, bob.Home, "alpine:3.20", "true")
	cj(t, bob, bob.Home, "alpine:denied", "true")
	data, err := os.ReadFile("/var/log/containerjob/audit.log")
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat("/var/log/containerjob/audit.log")
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
		if ts.Before(since.Add(-time.Second)) || rec["user"] != bob.Name {
			continue
		}
		key := fmt.Sprint(rec["msg"], "/", rec["decision"])
		seen[key] = true
		if rec["msg"] == "decision" && rec["decision"] == "refused" && !strings.Contains(fmt.Sprint(rec["reason"]), "images_deny") {
			t.Errorf("refusal record lacks the rule: %v", rec)
		}
	}
	for _, want := range []string{"decision/allowed", "container-end/<nil>", "decision/refused"} {
		if !seen[want] {
			t.Errorf("audit trail lacks a %s record; saw %v", want, seen)
		}
	}
}

// TestForcedEnvUlimitsAndUserLimit: the policy's forced values reach the
// container, and max_containers_per_user (4 in the test policy) refuses a
// fifth container while four are running.
func TestForcedEnvUlimitsAndUserLimit(t *testing.T) {
	r := cj(t, bob, bob.Home, "-e", "CJ_SITE=mine", "alpine:3.20", "sh", "-c", "echo $CJ_SITE; ulimit -n; ulimit -Hn")
	if r.Code != 0 || r.Stdout != "cluster1\n1024\n2048\n" {
		t.Errorf("forced env and ulimits: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	var running []*exec.Cmd
	defer func() {
		for _, c := range running {
			c.Process.Signal(syscall.SIGTERM)
			c.Wait()
		}
		noContainers(t, bob)
	}()
	for i := 0; i < 4; i++ {
		c := testutil.Command(bob, bob.Home, nil, bin, "alpine:3.20", "sh", "-c", "echo ready; sleep 60")
		out, _ := c.StdoutPipe()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		running = append(running, c)
		if !bufio.NewScanner(out).Scan() {
			t.Fatalf("container %d did not start", i)
		}
	}
	since := time.Now()
	r = cj(t, bob, bob.Home, "alpine:3.20", "true")
	if r.Code != 125 || !strings.Contains(r.Stderr, "a container beyond the 4 allowed (4 exist) is refused, says max_containers_per_user in [defaults] (/etc/containerjob/policy.toml:17)") {
		t.Errorf("fifth container: code %d stderr %q", r.Code, r.Stderr)
	}
	if ev := testutil.ContainerEvents(t, docker, bob.UID, since, "create"); len(ev) > 0 {
		t.Errorf("the refused fifth container was created")
	}
}
