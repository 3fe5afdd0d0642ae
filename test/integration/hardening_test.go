//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/internal/testutil"
)

// privilegedProcesses are the running processes of the installed binary
// with effective uid 0: the privileged side of launches.
func privilegedProcesses(t *testing.T) []string {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		if !identity.SameFile(filepath.Join(d, "exe"), bin) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil || !bytes.Contains(status, []byte("\nUid:\t0\t0\t")) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// startAs starts a shell command line as alice and waits for its first
// line of output; stop sends sig (0: none) and waits for it to end.
func startAs(t *testing.T, shell string, env ...string) (stop func(sig syscall.Signal) testutil.Result) {
	t.Helper()
	cmd := testutil.Command(alice, alice.Home, env, "sh", "-c", shell)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := make(chan bool, 1)
	go func() {
		ready <- sc.Scan()
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("%s: no output; stderr %q", shell, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s: never became ready; stderr %q", shell, stderr.String())
	}
	return func(sig syscall.Signal) testutil.Result {
		if sig != 0 {
			cmd.Process.Signal(sig)
		}
		cmd.Wait()
		return testutil.Result{Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	}
}

// TestPrivilegedProcessOwnsItsResources: while a container runs, the
// privileged process has neither the caller's lowered rlimits nor, on its
// command line (readable by every user), the values of -e.
func TestPrivilegedProcessOwnsItsResources(t *testing.T) {
	const secret = "hunter2-cmdline-secret"
	stop := startAs(t, `ulimit -S -t 1; ulimit -S -f 1; ulimit -S -n 64; exec `+bin+` -e TOKEN=`+secret+` -e FROMENV alpine:3.20 sh -c 'echo "ready $TOKEN $FROMENV"; sleep 3'`,
		"FROMENV=env-"+secret)
	procs := privilegedProcesses(t)
	if len(procs) == 0 {
		t.Fatal("no privileged containerjob process while the container runs")
	}
	for _, p := range procs {
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		if bytes.Contains(cmdline, []byte(secret)) {
			t.Errorf("%s/cmdline holds an -e value: %q", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
		limits, _ := os.ReadFile(filepath.Join(p, "limits"))
		for _, l := range strings.Split(string(limits), "\n") {
			f := strings.Fields(l)
			switch {
			case strings.HasPrefix(l, "Max cpu time"), strings.HasPrefix(l, "Max file size"):
				if len(f) < 5 || f[3] != "unlimited" {
					t.Errorf("%s: %q: the caller's ulimit reached the privileged process", p, l)
				}
			case strings.HasPrefix(l, "Max open files"):
				// Raised to 65536, or to the hard limit where root cannot
				// raise that (no CAP_SYS_RESOURCE).
				var hard unix.Rlimit
				unix.Getrlimit(unix.RLIMIT_NOFILE, &hard)
				want := min(uint64(65536), hard.Max)
				if hasCapSysResource(t) {
					want = 65536
				}
				if n, _ := strconv.ParseUint(f[3], 10, 64); n < want {
					t.Errorf("%s: %q: the caller's ulimit reached the privileged process (want at least %d)", p, l, want)
				}
			}
		}
	}
	if r := stop(0); r.Code != 0 {
		t.Errorf("launch under lowered ulimits: code %d stderr %q", r.Code, r.Stderr)
	}
	// The values still reach the container.
	r := cj(t, alice, alice.Home, "-e", "TOKEN="+secret, "alpine:3.20", "sh", "-c", "echo $TOKEN")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != secret {
		t.Errorf("-e through the descriptor: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

// TestClosedStdoutStopsTheContainer: `containerjob IMG yes | head -1` ends
// like a shell pipeline (141), the container with it.
func TestClosedStdoutStopsTheContainer(t *testing.T) {
	r := testutil.Run(t, alice, alice.Home, nil, "bash", "-c", bin+` alpine:3.20 yes | head -1; echo "status ${PIPESTATUS[0]}"`)
	if !strings.Contains(r.Stdout, "y\nstatus 141\n") || !strings.Contains(r.Stderr, "broken pipe") {
		t.Errorf("yes | head -1: stdout %q stderr %q; want one y, status 141 and a line naming the broken pipe", r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

// TestCPULimitOfTheCaller: with `ulimit -S -t 1` the privileged side
// streams more output than one CPU second allows, and is not killed for it.
func TestCPULimitOfTheCaller(t *testing.T) {
	r := testutil.Run(t, alice, alice.Home, nil, "sh", "-c", `ulimit -S -t 1; `+bin+` alpine:3.20 sh -c 'head -c 600000000 /dev/zero' | wc -c`)
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != "600000000" {
		t.Errorf("600 MB under ulimit -S -t 1: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

// TestHardLimitsOfTheCaller: a hard limit the caller lowered is raised
// back where root has CAP_SYS_RESOURCE (the launch runs); where it lacks
// it (this CI's sandbox does), the launch is refused before anything is
// created, never left to be killed mid-run.
func TestHardLimitsOfTheCaller(t *testing.T) {
	since := time.Now()
	r := testutil.Run(t, alice, alice.Home, nil, "sh", "-c", `ulimit -t 1; ulimit -f 1; exec `+bin+` alpine:3.20 echo ran`)
	if hasCapSysResource(t) {
		if r.Code != 0 || r.Stdout != "ran\n" {
			t.Errorf("hard ulimits with CAP_SYS_RESOURCE: code %d stdout %q stderr %q; want them raised and the launch run", r.Code, r.Stdout, r.Stderr)
		}
		return
	}
	refused(t, alice, since, r, "cpu time (ulimit -t) hard limit 1, file size (ulimit -f) hard limit 512")
}

// hasCapSysResource: may root here raise a hard rlimit?
func hasCapSysResource(t *testing.T) bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<24) != 0 // CAP_SYS_RESOURCE
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// TestAuditFailureRefuses: a decision the trail cannot record is a refused
// launch, never a silent one; and one refused request with huge arguments
// adds a bounded record.
func TestAuditFailureRefuses(t *testing.T) {
	usePolicy(t, strings.Replace(testPolicy, `audit_log = "/var/log/containerjob/audit.log"`, `audit_log = "/dev/full"`, 1))
	since := time.Now()
	r := cj(t, alice, alice.Home, "alpine:3.20", "echo", "ran")
	refused(t, alice, since, r, "refusing to run a container that the audit trail does not record")
	if strings.Contains(r.Stdout, "ran") {
		t.Errorf("the container ran without an audit record")
	}
}

func TestAuditRecordIsCapped(t *testing.T) {
	const log = "/var/log/containerjob/audit.log"
	before, _ := os.Stat(log)
	big := strings.Repeat("A", 120<<10)
	args := []string{"tag"}
	for i := 0; i < 14; i++ {
		args = append(args, big)
	}
	r := cj(t, alice, alice.Home, args...)
	if r.Code != 125 {
		t.Errorf("containerjob tag: code %d stderr %.200q", r.Code, r.Stderr)
	}
	after, err := os.Stat(log)
	if err != nil {
		t.Fatal(err)
	}
	if grew := after.Size() - before.Size(); grew > 16<<10 || grew <= 0 {
		t.Errorf("one refused request with 1.7 MB of arguments grew the audit log by %d bytes; want a record of at most 16 KiB", grew)
	}
}

// TestNestedMountTargetRefused: a mount target inside the job directory
// (which the caller can rearrange while runc creates the mountpoint) is
// refused before anything is created; the same mount outside it runs.
func TestNestedMountTargetRefused(t *testing.T) {
	job := userDir(t, alice, "nestjob")
	src := userDir(t, alice, "nestsrc")
	since := time.Now()
	r := cj(t, alice, job, "-v", src+":"+job+"/race/x", "alpine:3.20", "true")
	refused(t, alice, since, r, "CVE-2024-45310")
	if !strings.Contains(r.Stderr, "nested_mounts in [settings]") {
		t.Errorf("refusal does not name the rule: %q", r.Stderr)
	}
	r = cj(t, alice, job, "-v", src+":/mnt/src", "alpine:3.20", "ls", "-d", "/mnt/src")
	if r.Code != 0 {
		t.Errorf("mount outside the job directory: code %d stderr %q", r.Code, r.Stderr)
	}
	noContainers(t, alice)
}

// TestOutsideJobConfinement: outside a job the caller's CPU affinity
// still binds the container (taskset -c 0 gives it CPU 0 only).
func TestOutsideJobConfinement(t *testing.T) {
	r := testutil.Run(t, alice, alice.Home, nil, "taskset", "-c", "0", bin, "alpine:3.20", "grep", "Cpus_allowed_list", "/proc/self/status")
	if r.Code != 0 || !strings.HasSuffix(strings.TrimSpace(r.Stdout), "\t0") {
		t.Errorf("taskset -c 0: code %d stdout %q stderr %q; want Cpus_allowed_list 0", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}

// TestPidsBudgetPerUser: a user's containers together hold at most
// pids_limit_per_user processes, enforced by the kernel on the user's
// cgroup above all of them: with 80 processes in one container, another
// can start no more than the 70 left of 150, though its own limit is 100.
func TestPidsBudgetPerUser(t *testing.T) {
	usePolicy(t, strings.Replace(testPolicy, "pids_limit = 256\n", "pids_limit = 100\npids_limit_per_user = 150\n", 1))
	first := startAs(t, `exec `+bin+` alpine:3.20 sh -c 'for i in $(seq 79); do sleep 120 & done; echo ready; wait'`)
	defer func() { first(syscall.SIGTERM); noContainers(t, alice) }()
	// Forks until they fail, in a subshell (a failed fork ends it); then
	// the container's processes are counted without forking.
	r := cj(t, alice, alice.Home, "alpine:3.20", "sh", "-c",
		`( for i in $(seq 99); do sleep 120 & done ) 2>/dev/null; set -- /proc/[0-9]*; echo started $#`)
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(r.Stdout), "started %d", &n); err != nil {
		t.Fatalf("second container: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	// 80 in the first (79 sleeps and its shell): at most 70 in the
	// second; without the cap its own pids_limit (100) would allow ~98.
	if n > 150-80 || n < 2 {
		t.Errorf("the second container holds %d processes beside the first's 80; want at most %d (the user's cap 150)", n, 150-80)
	}
}

// TestFullDiskStopsTheContainer: output that cannot be written (ENOSPC:
// the job directory's filesystem is full) stops the container with one
// line naming the cause, instead of leaving both hanging.
func TestFullDiskStopsTheContainer(t *testing.T) {
	r := testutil.Run(t, alice, alice.Home, nil, "sh", "-c", bin+` alpine:3.20 yes > /dev/full; echo "status $?" >&2`)
	if !strings.Contains(r.Stderr, "the disk or quota is full") || !strings.Contains(r.Stderr, "status 125") {
		t.Errorf("yes > /dev/full: stderr %q; want one line naming the full disk and status 125", r.Stderr)
	}
	noContainers(t, alice)
}
