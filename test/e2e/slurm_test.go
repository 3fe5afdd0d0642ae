//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
)

func TestWrapperInsideStep(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	r := as(t, alice, dir, `MYVAR=from-host srun -n2 containerjob alpine:3.20 sh -c 'echo rank=$SLURM_PROCID job=$SLURM_JOB_ID my=$MYVAR; pwd; id -u; grep Cpus_allowed_list /proc/self/status'`)
	if r.Code != 0 {
		t.Fatalf("srun containerjob: code %d stderr %q", r.Code, r.Stderr)
	}
	for _, want := range []string{"rank=0", "rank=1", "my=from-host", dir, strconv.Itoa(int(alice.UID))} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output %q lacks %q", r.Stdout, want)
		}
	}
	// The two tasks share one container, which has the step's CPUs (not
	// the first task's binding: both ranks once ran on one CPU), and each
	// rank keeps its own binding from slurmstepd, as the same step's
	// tasks without a container do (the container's server forks each
	// task bound to its containerjob's CPUs).
	cpusOf := func(out string) []string {
		var cpus []string
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				cpus = append(cpus, strings.TrimSpace(v))
			}
		}
		slices.Sort(cpus)
		return cpus
	}
	bare := as(t, alice, dir, `srun -n2 grep Cpus_allowed_list /proc/self/status`)
	if got, want := cpusOf(r.Stdout), cpusOf(bare.Stdout); len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("the ranks' CPUs %q; want the bare step's %q", got, want)
	}
}

func TestSrunContainerImage(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	r := as(t, alice, dir, `srun --container-image=alpine:3.20 --container-workdir=/tmp sh -c 'head -1 /etc/os-release; pwd; echo job=$SLURM_JOB_ID; exit 4'`)
	if r.Code != 4 {
		t.Errorf("exit code %d, want the task's 4 (stderr %q)", r.Code, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "containerjob test image") || !strings.Contains(r.Stdout, "/tmp\n") || !strings.Contains(r.Stdout, "job=") {
		t.Errorf("output %q", r.Stdout)
	}
}

func TestSbatchContainerImage(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH --container-image=alpine:3.20
#SBATCH --container-mounts=/srv/cje2e:/data
#SBATCH -o slurm-%j.out
head -1 /etc/os-release
echo "job $SLURM_JOB_ID in $(pwd) as $(id -u)"
cat /data/input
exit 7
`)
	state, exit := waitJob(t, id, 2*time.Minute)
	if state != "FAILED" || exit != "7:0" {
		t.Errorf("job %s: state %s exit %s, want FAILED 7:0", id, state, exit)
	}
	out := readOutput(t, filepath.Join(dir, "slurm-"+id+".out"))
	// As under pyxis, the script starts in the image's WORKDIR (the test
	// image sets none: /), not the submit directory.
	for _, want := range []string{"containerjob test image", fmt.Sprintf("job %s in / as %d", id, alice.UID), "e2e input"} {
		if !strings.Contains(out, want) {
			t.Errorf("slurm-%s.out %q lacks %q", id, out, want)
		}
	}
}

func TestPolicyRefusalInJobOutput(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o slurm-%j.out
srun --container-image=alpine:denied true
echo "step exit $?"
srun --container-image=alpine:3.20 --container-mounts=/etc:/x true
echo "step exit $?"
`)
	waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "slurm-"+id+".out"))
	for _, want := range []string{
		`containerjob: error: image "alpine:denied" is denied, says images_deny in [defaults] (/etc/containerjob/policy.toml:15)`,
		`mount source "/etc" (the host's /etc) can never be mounted`,
		"step exit 125",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("job output %q lacks %q", out, want)
		}
	}
	if ids := jobContainers(t, id); len(ids) > 0 {
		t.Errorf("refused steps left containers %v", ids)
	}
}

func TestExitCodesReachSlurm(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 no-such-command\nexit $?\n")
	state, exit := waitJob(t, id, 2*time.Minute)
	if state != "FAILED" || exit != "127:0" {
		t.Errorf("job %s: %s %s, want FAILED 127:0", id, state, exit)
	}
}

func TestSpoofedJobIDRefused(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	// Inside job A's step, claiming job 999999.
	r := as(t, alice, dir, `srun sh -c 'SLURM_JOB_ID=999999 containerjob alpine:3.20 true'`)
	if r.Code != 125 || !strings.Contains(r.Stderr, `SLURM_JOB_ID="999999" does not match job`) {
		t.Errorf("spoofed id inside a step: code %d stderr %q", r.Code, r.Stderr)
	}
	// Outside any job, claiming one: the kernel says otherwise.
	r = as(t, alice, dir, `SLURM_JOB_ID=1 containerjob alpine:3.20 true`)
	if r.Code != 125 || !strings.Contains(r.Stderr, "this process is not in a Slurm job step on this node") {
		t.Errorf("spoofed id outside a job: code %d stderr %q", r.Code, r.Stderr)
	}
	// Outside any job with no claim: the policy's outside_jobs decides.
	r = as(t, alice, dir, `containerjob alpine:3.20 true`)
	if r.Code != 125 || !strings.Contains(r.Stderr, "a launch outside a scheduler job is not allowed, says outside_jobs in [defaults] (/etc/containerjob/policy.toml:20)") {
		t.Errorf("outside a job: code %d stderr %q", r.Code, r.Stderr)
	}
}

func TestScancelLeavesNoContainer(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 sh -c 'echo started; sleep 600'\n")
	waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })
	if out, err := exec.Command("scancel", id).CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v %s", err, out)
	}
	state, _ := waitJob(t, id, 2*time.Minute)
	if state != "CANCELLED" {
		t.Errorf("state %s, want CANCELLED", state)
	}
	// Slurm's KillWait is 10s in the test cluster; the epilogue runs after.
	waitFor(t, 30*time.Second, "no container of the cancelled job", func() bool { return len(jobContainers(t, id)) == 0 })
}

func TestTimeLimitLeavesNoContainer(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 sleep 600\n", "--time=1")
	waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })
	state, _ := waitJob(t, id, 4*time.Minute)
	if state != "TIMEOUT" {
		t.Errorf("state %s, want TIMEOUT", state)
	}
	waitFor(t, 30*time.Second, "no container of the timed-out job", func() bool { return len(jobContainers(t, id)) == 0 })
}

// TestEpilogueRemovesOrphan: kill -9 of the privileged containerjob leaves
// the container running; the epilogue must remove it.
func TestEpilogueRemovesOrphan(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	marker := "orphan-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 sh -c 'echo "+marker+"; sleep 600'\necho step-ended\n")
	waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })
	killPrivileged(t, marker)
	waitJob(t, id, 2*time.Minute)
	waitFor(t, 30*time.Second, "the epilogue to remove the orphan", func() bool { return len(jobContainers(t, id)) == 0 })
	if !strings.Contains(readOutput(t, filepath.Join(dir, "out-"+id+".txt")), "step-ended") {
		t.Errorf("the batch script did not continue after the killed step")
	}
}

// TestEpilogueTwiceAndEngineDown: the epilogue is idempotent and reports,
// without failing, when the engine cannot be reached.
func TestEpilogueTwiceAndEngineDown(t *testing.T) {
	for i := 0; i < 2; i++ {
		out, err := exec.Command(bin, "epilog", "--scheduler", "slurm", "--job", "424242").CombinedOutput()
		if err != nil {
			t.Errorf("epilog run %d: %v %s", i, err, out)
		}
	}
	bad := strings.Replace(testPolicy, "[settings]\n", "[settings]\ndocker_host = \"unix:///nonexistent/docker.sock\"\n", 1)
	path := filepath.Join(t.TempDir(), "p.toml")
	if err := writeRootFile(path, bad); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "epilog", "--scheduler", "slurm", "--job", "424242", "--policy", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the engine cannot be reached") {
		t.Errorf("epilog with the engine down: %v %q", err, out)
	}
}

func TestEpilogIsForRoot(t *testing.T) {
	r := as(t, alice, alice.Home, bin+" epilog --job 1")
	if r.Code != 125 || !strings.Contains(r.Stderr, "is run by the scheduler as root") {
		t.Errorf("user running epilog: code %d stderr %q", r.Code, r.Stderr)
	}
}

// TestContainerNameAcrossSteps: a named container lives for the job; what
// one step writes into its filesystem the next step sees; another name or
// no name does not; a step with other mounts gets them, with the
// container's files; the epilogue removes it and its committed image.
func TestContainerNameAcrossSteps(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt
srun --container-image=alpine:3.20 --container-name=work sh -c 'echo from-step-1 > /tmp/state; hostname'
echo "step1 $?"
srun --container-image=alpine:3.20 --container-name=work sh -c 'cat /tmp/state; exit 5'
echo "step2 $?"
srun --container-image=alpine:3.20 --container-name=other sh -c 'cat /tmp/state'
echo "step3 $?"
srun --container-image=alpine:3.20 --container-name=work --container-mounts=`+dir+`:/mnt sh -c 'cat /tmp/state; ls -d /mnt/out-*'
echo "step4 $?"
`)
	waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	host, _ := exec.Command("hostname", "-s").Output()
	for _, want := range []string{
		strings.TrimSpace(string(host)) + "\nstep1 0",
		"from-step-1\n",
		"step2 5",
		"can't open '/tmp/state'",
		"step3 1",
		// Other mounts: the step gets them, in the container's files
		// (MLPerf's run.sub; the previous binary refused).
		"from-step-1\n/mnt/out-" + id + ".txt\nstep4 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("job output %q lacks %q", out, want)
		}
	}
	waitFor(t, 30*time.Second, "the epilogue to remove the named containers", func() bool { return len(jobContainers(t, id)) == 0 })
	waitFor(t, 30*time.Second, "the epilogue to drop the job's mark", func() bool {
		_, err := os.Stat("/run/containerjob/jobs/slurm-" + id)
		return os.IsNotExist(err)
	})
	waitFor(t, 30*time.Second, "the epilogue to remove the job's committed image", func() bool {
		out, _ := exec.Command("docker", "images", "-q", "--filter", "label=org.containerjob.committed=1", "--filter", "label=org.containerjob.job="+id).Output()
		return strings.TrimSpace(string(out)) == ""
	})
}

// TestPyxisOptions: the remaining pyxis options behave as pyxis users know
// them, through the plugin and the policy: --container-env lets a host
// variable override what containerjob otherwise keeps from the image,
// --container-readonly (--container-writable is refused), the
// entrypoint's output under a read-only root, --no-container-entrypoint,
// and --container-mount-home.
func TestPyxisOptions(t *testing.T) {
	t.Parallel()
	const epImage = "alpine:e2e-entrypoint"
	out, err := exec.Command("docker", "create", "alpine:3.20", "true").Output()
	if err != nil {
		t.Fatalf("docker create: %v", err)
	}
	cid := strings.TrimSpace(string(out))
	commit := exec.Command("docker", "commit", "--change", `ENTRYPOINT ["/bin/echo", "ep:"]`, cid, epImage)
	if out, err := commit.CombinedOutput(); err != nil {
		t.Fatalf("docker commit: %v: %s", err, out)
	}
	exec.Command("docker", "rm", cid).Run()
	t.Cleanup(func() { exec.Command("docker", "rmi", epImage).Run() })

	dir := jobDir(t, alice)
	marker := filepath.Join(alice.Home, ".cje2e-home-marker")
	if err := os.WriteFile(marker, []byte("home-is-mounted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker) })

	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt
#SBATCH --container-readonly
export PYTHONPATH=/from-the-host
srun --container-image=alpine:3.20 sh -c 'echo "py=[$PYTHONPATH]"'
srun --container-image=alpine:3.20 --container-env=PYTHONPATH sh -c 'echo "py-env=[$PYTHONPATH]"'
srun --container-image=alpine:3.20 sh -c 'touch /tmp/probe; echo "readonly $?"'
srun --container-image=alpine:3.20 --container-writable sh -c 'touch /tmp/probe; echo "writable $?"'; echo "writable-rc $?"
srun --container-image=`+epImage+` echo inner; echo "ep-rc $?"
srun --container-image=`+epImage+` --no-container-entrypoint echo inner-alone
srun --container-image=alpine:3.20 --container-mount-home cat `+marker+`
srun --container-image=alpine:3.20 cat `+marker+`
echo "no-home $?"
`)
	waitJob(t, id, 2*time.Minute)
	got := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	for _, want := range []string{
		"py=[]\n",                         // host-only by default: the image's own (none) wins
		"py-env=[/from-the-host]\n",       // named by --container-env: the host's wins
		"Read-only file system",           // #SBATCH --container-readonly reaches the step
		"readonly 1\n",                    //
		"--container-writable is refused", // the image's files are root's here
		"writable-rc 125\n",
		// With a read-only root nothing can be kept aside: the
		// entrypoint's output is shown (docs/user-guide.md).
		"ep: /bin/sh -c", "ep-rc 0\n",
		"\ninner-alone\n",           // --no-container-entrypoint: the command alone
		"home-is-mounted\n",         // --container-mount-home
		"No such file or directory", // without it, home is not there
		"no-home 1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("job output %q lacks %q", got, want)
		}
	}
	if strings.Count(got, "home-is-mounted") != 1 {
		t.Errorf("home visible without --container-mount-home: %q", got)
	}
}

// TestGCKeepsWhenSlurmUnreachable: gc that cannot ask slurmctld (here its
// slurm.conf names a port nobody listens on) keeps a running job's
// container and says why; with Slurm reachable it keeps it too, because
// the job runs.
func TestGCKeepsWhenSlurmUnreachable(t *testing.T) {
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\nsrun containerjob alpine:3.20 sleep 60\n")
	defer cancelAndClean(t, alice, dir, id)
	waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })

	conf, err := os.ReadFile(slurmConf)
	if err != nil {
		t.Fatal(err)
	}
	broken := regexp.MustCompile(`(?m)^SlurmctldPort=.*$`).ReplaceAllString(string(conf), "")
	broken = "SlurmctldPort=1\n" + broken
	tmp := t.TempDir()
	brokenConf := filepath.Join(tmp, "slurm.conf")
	if err := os.WriteFile(brokenConf, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	pol := strings.Replace(testPolicy, `slurm_conf = "`+slurmConf+`"`, `slurm_conf = "`+brokenConf+`"`, 1)
	polPath := filepath.Join(tmp, "policy.toml")
	if err := os.WriteFile(polPath, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "gc", "--grace", "0s", "--policy", polPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "keeping the containers of slurm job "+id) {
		t.Errorf("gc with slurmctld unreachable: %v %q; want it to keep job %s's container and say so", err, out, id)
	}
	if len(jobContainers(t, id)) == 0 {
		t.Fatalf("gc removed a running job's container while it could not ask Slurm")
	}
	out, err = exec.Command(bin, "gc", "--grace", "0s").CombinedOutput()
	if err != nil || strings.Contains(string(out), id) && strings.Contains(string(out), "removing") {
		t.Errorf("gc with Slurm reachable: %v %q", err, out)
	}
	if len(jobContainers(t, id)) == 0 {
		t.Errorf("gc removed a running job's container")
	}
}

// TestPolicyMistakesNeverDrain: an admin's broken policy (a syntax error,
// mode 0664, missing, or replaced while a job runs) fails the job's
// container steps with a line naming the problem, while the prolog and
// epilogue still succeed and clean up: the node never drains.
func TestPolicyMistakesNeverDrain(t *testing.T) {
	good := testPolicy // what TestMain installed
	restore := func() {
		os.Remove(policyPath)
		writeRootFile(policyPath, good)
	}
	defer restore()
	nodeOK := func(when string) {
		t.Helper()
		out, _ := exec.Command("sinfo", "-h", "-N", "-o", "%N %T %E").Output()
		if strings.Contains(strings.ToLower(string(out)), "drain") {
			t.Errorf("%s: the node drained: %q", when, out)
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					exec.Command("scontrol", "update", "nodename="+f[0], "state=resume").Run()
				}
			}
		}
	}
	cases := []struct {
		name   string
		break_ func() error
		want   string
	}{
		{"syntax error", func() error { return writeRootFile(policyPath, good+"\n[defaults\n") }, "containerjob: error: " + policyPath + ":"},
		{"mode 0664", func() error {
			if err := writeRootFile(policyPath, good); err != nil {
				return err
			}
			return os.Chmod(policyPath, 0o664)
		}, "containerjob: error: policy " + policyPath + " is writable by group or others"},
		{"missing", func() error { return os.Remove(policyPath) }, "containerjob: error: policy file " + policyPath + " cannot be read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer restore()
			if err := c.break_(); err != nil {
				t.Fatal(err)
			}
			dir := jobDir(t, alice)
			id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 true; echo step=$?\n")
			state, _ := waitJob(t, id, 2*time.Minute)
			out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
			if state != "COMPLETED" || !strings.Contains(out, "step=125") || !strings.Contains(out, c.want) {
				t.Errorf("job %s with a broken policy: state %s, output %q; want the step refused with a line naming the policy (%q)", id, state, out, c.want)
			}
			nodeOK(c.name)
		})
	}
	t.Run("replaced while a job runs", func(t *testing.T) {
		defer restore()
		dir := jobDir(t, alice)
		marker := "midjob-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		id := sbatch(t, alice, dir, "#!/bin/sh\nsrun containerjob alpine:3.20 sh -c 'echo "+marker+"; sleep 600'\n")
		waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })
		// Leave the container to the epilogue: the client goes first.
		killPrivileged(t, marker)
		if err := writeRootFile(policyPath, good+"\n[defaults\n"); err != nil {
			t.Fatal(err)
		}
		as(t, alice, dir, "scancel "+id)
		waitJob(t, id, 2*time.Minute)
		waitFor(t, time.Minute, "the epilogue to remove the container under a broken policy", func() bool { return len(jobContainers(t, id)) == 0 })
		nodeOK("replaced mid-job")
	})
}

// killPrivileged SIGKILLs the privileged containerjob whose command line
// holds marker (found by pid, not by name).
func killPrivileged(t *testing.T, marker string) {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		exe, _ := os.Readlink(filepath.Join(d, "exe"))
		if err != nil || exe != bin || !strings.Contains(string(cmdline), marker) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
	t.Fatalf("no privileged containerjob running %s", marker)
}

// TestMaxContainersUnderBurst: 20 tasks of one step launch at once, each
// with a container of its own (step_containers = "per-task"), with
// max_containers_per_job = 10; counting and creating under the node's
// launch lock lets exactly 10 run and refuses the other 10.
func TestMaxContainersUnderBurst(t *testing.T) {
	// Each task its own container, and the limit in [defaults].
	usePolicy(t, strings.Replace(strings.Replace(testPolicy, "outside_jobs = false\n", "outside_jobs = false\nmax_containers_per_job = 10\n", 1),
		"[settings]\n", "[settings]\nstep_containers = \"per-task\"\n", 1))
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun -O -n20 containerjob alpine:3.20 sh -c 'echo started; sleep 600'\n", "-n20", "-O")
	defer cancelAndClean(t, alice, dir, id)
	out := filepath.Join(dir, "out-"+id+".txt")
	waitFor(t, 4*time.Minute, "all 20 tasks to start or be refused", func() bool {
		data, _ := os.ReadFile(out)
		return strings.Count(string(data), "started")+strings.Count(string(data), "a container beyond the 10 allowed") >= 20
	})
	data, _ := os.ReadFile(out)
	if n := strings.Count(string(data), "started"); n != 10 {
		t.Errorf("%d containers started, want 10 (output %q)", n, data)
	}
	if n := len(jobContainers(t, id)); n != 10 {
		t.Errorf("the engine holds %d containers of the job, want 10", n)
	}
}

// TestStepEndRemovesItsContainers: a client killed with SIGKILL leaves its
// container; the SPANK plugin removes it when the step's task has ended,
// while the job goes on, not at the job's end. The container holds the
// step's output (the handoff): without the plugin's cleanup after a failed
// task, slurmstepd waited 60 s for that output before the step could end.
// Named containers stay for later steps.
func TestStepEndRemovesItsContainers(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	marker := "stepend-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\n"+
		"srun --container-image=alpine:3.20 --container-name=keep true\n"+
		"srun containerjob alpine:3.20 sh -c 'echo "+marker+"; sleep 600'\n"+
		"echo step-ended; sleep 600\n")
	defer cancelAndClean(t, alice, dir, id)
	waitFor(t, 2*time.Minute, "the step's container", func() bool { return len(jobContainers(t, id)) == 2 })
	// The step's command runs and has written: its container holds the
	// step's output when the client goes.
	waitFor(t, time.Minute, "the step's command to write", func() bool {
		out, _ := os.ReadFile(filepath.Join(dir, "out-"+id+".txt"))
		return strings.Contains(string(out), marker)
	})
	killPrivileged(t, marker)
	waitFor(t, time.Minute, "the step's end to remove its container", func() bool {
		out, _ := os.ReadFile(filepath.Join(dir, "out-"+id+".txt"))
		return strings.Contains(string(out), "step-ended") && len(jobContainers(t, id)) == 1
	})
	if state, _ := jobState(t, id); state != "RUNNING" {
		t.Errorf("job %s is %s; the step's container should go while the job runs", id, state)
	}
	ids := jobContainers(t, id)
	if len(ids) == 1 {
		c, err := docker.ContainerInspect(context.Background(), ids[0], client.ContainerInspectOptions{})
		if err != nil || c.Container.Config.Labels["org.containerjob.name"] != "keep" {
			t.Errorf("the container left is not the job's named one: %v %+v", err, c.Container.Config.Labels)
		}
	}
	// The launches' marks, which the plugin reads before a step's cleanup
	// (launcher.LiveMark): the first step's launch ended cleanly and took
	// its mark away (that step's end started no cleanup); the killed
	// client's stays.
	live := "/run/containerjob/jobs/slurm-" + id + "/@live/"
	if ents, err := os.ReadDir(live + "0"); err != nil || len(ents) != 0 {
		t.Errorf("the clean step's launch marks: %v %v; want its directory, empty", ents, err)
	}
	if ents, err := os.ReadDir(live + "1"); err != nil || len(ents) != 1 {
		t.Errorf("the killed client's launch marks: %v %v; want one", ents, err)
	}
}

// TestContainerNameAloneNeverRunsOnTheHost: pyxis runs a step with only
// --container-name in the job's existing container of that name; without
// one, the step is refused (125, one line), never run on the host.
func TestContainerNameAloneNeverRunsOnTheHost(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\n"+
		"srun --container-name=nosuch sh -c 'echo ran-on-host'; echo rc=$?\n"+
		"srun --container-image=alpine:3.20 --container-name=alone sh -c 'echo inside > /tmp/mark'\n"+
		"srun --container-name=alone cat /tmp/mark; echo rc=$?\n")
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if strings.Contains(out, "ran-on-host") || !strings.Contains(out, "rc=125") ||
		!strings.Contains(out, `containerjob: error: --container-name "nosuch" without --container-image (job `+id+` has no container of that name on this node)`) {
		t.Errorf("a name-only step without the container: %q; want one refusal line and rc=125, nothing run", out)
	}
	if !strings.Contains(out, "inside\nrc=0") {
		t.Errorf("a name-only step with the container did not run in it: %q", out)
	}
}

// TestPyxisSyntax: job scripts written for pyxis run unchanged, or are
// refused with one line: enroot image syntax, +-joined mount flags, the
// remap-root pair, PYXIS_CONTAINER_* variables.
func TestPyxisSyntax(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\n"+
		"srun --container-image=docker.io#alpine:3.20 sh -c 'echo hash-form $(grep -c containerjob /etc/os-release)'\n"+
		"srun --container-image=docker://alpine:3.20 --no-container-remap-root sh -c 'echo uri-form $(id -u)'\n"+
		"srun --container-image=dockerd://alpine:3.20 --container-mounts=/srv/cje2e:/in:ro+rprivate sh -c 'cat /in/input; touch /in/x 2>/dev/null || echo read-only'\n"+
		"srun --container-image=alpine:3.20 --container-remap-root id -u; echo remap=$?\n"+
		"srun --container-image=/scratch/x.sqsh true; echo sqsh=$?\n"+
		"PYXIS_CONTAINER_IMAGE=alpine:3.20 srun sh -c 'echo env-form $(grep -c containerjob /etc/os-release)'\n")
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	for _, want := range []string{
		"hash-form 1\n", "uri-form " + strconv.Itoa(int(alice.UID)) + "\n", "e2e input\nread-only\n",
		"containerjob: error: container options from srun/sbatch: --container-remap-root is refused", "remap=125",
		"a squashfs file is not a Docker image", "sqsh=125", "env-form 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestConcurrentEpilogues: two epilogues of one job at once (Slurm can run
// them on requeue or retry) both succeed, and the job's containers go.
func TestConcurrentEpilogues(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	marker := "twoepi-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	id := sbatch(t, alice, dir, "#!/bin/sh\nsrun containerjob alpine:3.20 sh -c 'echo "+marker+"; sleep 600'\n")
	defer cancelAndClean(t, alice, dir, id)
	waitFor(t, 2*time.Minute, "the job's container", func() bool { return len(jobContainers(t, id)) > 0 })
	killPrivileged(t, marker) // the container is the epilogues' to remove
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, 2)
	for i := 0; i < 2; i++ {
		go func() {
			out, err := exec.Command(bin, "epilog", "--scheduler", "slurm", "--job", id).CombinedOutput()
			results <- result{out, err}
		}()
	}
	for i := 0; i < 2; i++ {
		if r := <-results; r.err != nil {
			t.Errorf("epilog %d of 2 at once: %v %q", i+1, r.err, r.out)
		}
	}
	if ids := jobContainers(t, id); len(ids) > 0 {
		t.Errorf("containers left after two epilogues: %v", ids)
	}
}

// TestStepStdinAndPty: a containerized step reads its stdin as srun gives
// it (piped, or a file), and srun --pty gives it a terminal, as pyxis does.
func TestStepStdinAndPty(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	if err := os.WriteFile(filepath.Join(dir, "input"), []byte(strings.Repeat("x", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := as(t, alice, dir, `echo piped-line | srun --container-image=alpine:3.20 cat; srun --container-image=alpine:3.20 wc -c < input; srun containerjob alpine:3.20 wc -c < input`)
	// The wrapper form reads it too (it counted 0 bytes, silently).
	if r.Code != 0 || !strings.Contains(r.Stdout, "piped-line\n") || strings.Count(r.Stdout, "100000") != 2 {
		t.Errorf("stdin of steps: code %d stdout %q stderr %q; want the piped line and 100000 bytes through the plugin and the wrapper", r.Code, r.Stdout, r.Stderr)
	}
	// A real terminal: script(1) gives srun one, srun --pty gives the task one.
	r = as(t, alice, dir, `script -qec "srun --pty --container-image=alpine:3.20 sh -c 'tty; echo pty-done'" /dev/null`)
	if !strings.Contains(r.Stdout, "/dev/pts/") || !strings.Contains(r.Stdout, "pty-done") {
		t.Errorf("srun --pty: code %d stdout %q stderr %q; want a terminal inside", r.Code, r.Stdout, r.Stderr)
	}
}

// cancelAndClean cancels job id and waits until it has ended and its
// epilogue has removed its containers (named ones included), so that no
// test leaves a container for the suite's final check to find.
func cancelAndClean(t *testing.T, u testutil.User, dir, id string) {
	t.Helper()
	as(t, u, dir, "scancel "+id)
	waitJob(t, id, 2*time.Minute)
	waitFor(t, time.Minute, "job "+id+"'s containers to be removed", func() bool { return len(jobContainers(t, id)) == 0 })
}

// TestUserKnownInsideJob: in a batch script under #SBATCH --container-image
// and in an srun step of the plugin, the caller has a name inside.
func TestUserKnownInsideJob(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH --container-image=alpine:3.20\n#SBATCH -o out-%j.txt\n"+
		"echo batch=$(id -un)/$(whoami)\n")
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	if out := readOutput(t, filepath.Join(dir, "out-"+id+".txt")); !strings.Contains(out, "batch="+alice.Name+"/"+alice.Name+"\n") {
		t.Errorf("batch script: %q", out)
	}
	r := as(t, alice, dir, `srun --container-image=alpine:3.20 sh -c 'echo step=$(id -un); grep "^`+alice.Name+`:" /etc/passwd'`)
	if r.Code != 0 || !strings.Contains(r.Stdout, "step="+alice.Name+"\n") || !strings.Contains(r.Stdout, alice.Name+":x:"+strconv.Itoa(int(alice.UID))+":") {
		t.Errorf("srun step: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}

// TestRefusalOncePerStep: a refusal that the request alone decides is the
// same for every task of a step; the step's log gets it once per node, not
// once per task, and the step still fails with 125.
func TestRefusalOncePerStep(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -n2\n#SBATCH -o out-%j.txt\n"+
		"srun -n2 --container-image=alpine:denied true; echo rc=$?\n"+
		"srun -n2 --container-image=alpine:3.20 --container-remap-root true; echo rc=$?\n")
	waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	for _, want := range []string{`image "alpine:denied" is denied, says images_deny`, "--container-remap-root is refused"} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("%q printed %d times, want once:\n%s", want, n, out)
		}
	}
	if strings.Count(out, "rc=125") != 2 {
		t.Errorf("want both steps to fail with 125:\n%s", out)
	}
}

// TestErrorsUsersCanActOn: a batch script whose interpreter the image lacks
// says which, in one line; a named container's exec failures are
// translated as run's are, not passed through raw.
func TestErrorsUsersCanActOn(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/bash\n#SBATCH --container-image=alpine:3.20\n#SBATCH -o out-%j.txt\necho ran\n")
	state, exit := waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "FAILED" || exit != "127:0" || strings.Contains(out, "ran") ||
		strings.TrimSpace(out) != "containerjob: error: the batch script starts with #!/bin/bash, which image docker.io/library/alpine:3.20 does not have\n"+
			"containerjob: hint: start the script with an interpreter the image has (#!/bin/sh), or choose an image with /bin/bash" {
		t.Errorf("job %s: %s %s, output %q", id, state, exit, out)
	}
	id = sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\n"+
		"srun --container-image=alpine:3.20 --container-name=e true\n"+
		"srun --container-name=e nosuchcmd; echo rc=$?\n"+
		"srun --container-name=e /etc/passwd; echo rc=$?\n"+
		"srun --container-name=e sh -c 'echo OCI runtime exec failed; exit 3'; echo rc=$?\n")
	waitJob(t, id, 2*time.Minute)
	out = readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	for _, want := range []string{
		"containerjob: error: the command was not found in the image: \"nosuchcmd\": executable file not found in $PATH\n", "rc=127\n",
		"containerjob: error: the command cannot be run: \"/etc/passwd\": permission denied\n", "rc=126\n",
		"OCI runtime exec failed\n", "rc=3\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "OCI runtime") != 1 {
		t.Errorf("a raw engine message reached the log:\n%s", out)
	}
}

// TestPlugstackMistakeFailsOnlyContainerSteps: an admin's mistake in
// plugstack.conf (a relative containerjob= path) fails no job that uses no
// container, on any Slurm (since 25.05 a non-zero SPANK callback fails the
// job, and init runs for every job); a container step is refused with one
// line that names it. Not parallel: it changes the cluster's plugstack.conf
// while no other test runs. The previous plugin failed both.
func TestPlugstackMistakeFailsOnlyContainerSteps(t *testing.T) {
	path := clusterDir + "/plugstack.conf"
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(orig), "containerjob=/") {
		t.Fatalf("plugstack.conf without the plugin: %q", orig)
	}
	t.Cleanup(func() { os.WriteFile(path, orig, 0o644) })
	broken := strings.Replace(string(orig), "containerjob=/", "containerjob=relative/", 1)
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := jobDir(t, alice)
	r := as(t, alice, dir, `srun -N1 sh -c 'echo plain-ran'; echo "plain $?"
srun -N1 --container-image=alpine:3.20 echo container-ran; echo "container $?"`)
	for _, want := range []string{"plain-ran\n", "plain 0\n", "container 1\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout %q lacks %q (stderr %q)", r.Stdout, want, r.Stderr)
		}
	}
	if strings.Contains(r.Stdout, "container-ran") || !strings.Contains(r.Stderr, "plugstack.conf argument containerjob=relative/") {
		t.Errorf("the container step: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
}

// TestSubmitTimeRefusal: a container job the policy refuses whatever the
// node (a denied image, an option containerjob does not offer) is refused
// where sbatch, salloc or srun runs, with the node's own line, and nothing
// is queued: --container-image, #SBATCH, PYXIS_CONTAINER_IMAGE, srun and
// salloc outside a job. An allowed one is queued as before. The previous
// plugin queued them all, to fail on the node.
func TestSubmitTimeRefusal(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	name := "cjsubmit-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	script := filepath.Join(dir, "denied.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n#SBATCH --container-image=alpine:denied\ntrue\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(script, int(alice.UID), int(alice.GID))
	r := as(t, alice, dir, `n=`+name+`
sbatch -J $n --container-image=alpine:denied --wrap true; echo "option $?"
sbatch -J $n denied.sh; echo "directive $?"
PYXIS_CONTAINER_IMAGE=alpine:denied sbatch -J $n --wrap true; echo "pyxis-env $?"
sbatch -J $n --container-image=alpine:3.20 --container-writable --wrap true; echo "writable $?"
srun -J $n --container-image=alpine:denied true; echo "srun $?"
salloc -J $n --container-image=alpine:denied true; echo "salloc $?"
echo "queued $(squeue -h -n $n | wc -l)"
sbatch -J $n -o /dev/null --container-image=alpine:3.20 --wrap true >/dev/null; echo "allowed $?"
echo "queued-after $(squeue -h -n $n | wc -l) $(sacct -n -X --name $n 2>/dev/null | wc -l)"`)
	for _, want := range []string{"option 1\n", "directive 1\n", "pyxis-env 1\n", "writable 1\n", "srun 1\n", "salloc 1\n", "queued 0\n", "allowed 0\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout %q lacks %q (stderr %q)", r.Stdout, want, r.Stderr)
		}
	}
	if n := strings.Count(r.Stderr, `containerjob: error: image "alpine:denied" is denied, says images_deny`); n != 5 {
		t.Errorf("the node's refusal line %d times, want 5: %q", n, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "--container-writable is refused") {
		t.Errorf("no refusal of --container-writable: %q", r.Stderr)
	}
}

// TestBatchOutputGoesStraightToItsFile: a batch step's container writes to
// the job's output file itself (launcher/handoff.go): /proc/self/fd/1 is
// the file, every byte arrives in order, and a batch script's own lines
// around a wrapper-form launch keep their places (the container shares the
// script's file offset, as a bare command does). The audit says which
// path each container's output took.
func TestBatchOutputGoesStraightToItsFile(t *testing.T) {
	dir := jobDir(t, alice)
	const size = 8 << 20
	gen := fmt.Sprintf("yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c %d", size)
	spank := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH --container-image=alpine:3.20\nreadlink /proc/self/fd/1\n"+gen+"\necho\necho end\n", "-o", "spank-%j.out")
	wrapper := sbatch(t, alice, dir, "#!/bin/sh\necho before\n"+bin+" alpine:3.20 sh -c 'echo inside; echo inside-err >&2; readlink /proc/self/fd/1'\necho after\n", "-o", "wrapper-%j.out")
	for _, id := range []string{spank, wrapper} {
		if state, exit := waitJob(t, id, 3*time.Minute); state != "COMPLETED" {
			t.Fatalf("job %s %s (exit %s)", id, state, exit)
		}
	}
	// The policy's report_usage adds containerjob's own usage line.
	withoutUsage := func(s string) string {
		return regexp.MustCompile(`(?m)^containerjob: usage: .*\n`).ReplaceAllString(s, "")
	}
	spankOut := filepath.Join(dir, "spank-"+spank+".out")
	want := spankOut + "\n" + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\n", size/37+1)[:size] + "\nend\n"
	if got := withoutUsage(readOutput(t, spankOut)); got != want {
		t.Errorf("batch step output: %d bytes, want %d; starts %q", len(got), len(want), got[:min(len(got), 200)])
	}
	wrapperOut := filepath.Join(dir, "wrapper-"+wrapper+".out")
	if got, want := withoutUsage(readOutput(t, wrapperOut)), "before\ninside\ninside-err\n"+wrapperOut+"\nafter\n"; got != want {
		t.Errorf("wrapper form in a batch script: output %q, want %q", got, want)
	}
	trail, _ := os.ReadFile("/var/log/containerjob/audit.log")
	for _, id := range []string{spank, wrapper} {
		direct := false
		for _, l := range strings.Split(string(trail), "\n") {
			if strings.Contains(l, `"msg":"container-end"`) && strings.Contains(l, `"job":"`+id+`"`) && strings.Contains(l, `"output":"direct"`) {
				direct = true
			}
		}
		if !direct {
			t.Errorf("the audit trail has no container-end of job %s with output direct", id)
		}
	}
}

// TestSharedStepTasksThroughTheServer: a shared step's tasks are forked
// by the container's own server (containerjob-init --serve, its PID 1),
// each with its own rank and output, and steps of fast tasks one after
// the other all succeed: a task that ended first never removes the
// container under the tasks still joining it. Each step's container and
// task socket are gone after it.
func TestSharedStepTasksThroughTheServer(t *testing.T) {
	dir := jobDir(t, alice)
	script := "#!/bin/sh\n#SBATCH -o out-%j.txt\n"
	for i := 0; i < 4; i++ {
		script += "srun -O -n16 --container-image=alpine:3.20 sh -c 'echo rank-$SLURM_PROCID $(tr \"\\\\0\" \" \" < /proc/1/cmdline)'\n"
	}
	id := sbatch(t, alice, dir, script, "-N1", "-n16", "-O")
	state, exit := waitJob(t, id, 4*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "COMPLETED" {
		t.Fatalf("job %s %s (exit %s): %s", id, state, exit, out)
	}
	for r := 0; r < 16; r++ {
		if n := strings.Count(out, fmt.Sprintf("rank-%d /.containerjob/init --serve\n", r)); n != 4 {
			t.Errorf("rank %d ran %d times under the container's server, want 4; output %q", r, n, out)
		}
	}
	if ids := jobContainers(t, id); len(ids) != 0 {
		t.Errorf("containers left after the steps: %v", ids)
	}
	if socks, _ := filepath.Glob("/run/containerjob/tasks/cj-*-" + id + "-*"); len(socks) != 0 {
		t.Errorf("task sockets left after the steps: %v", socks)
	}
}
