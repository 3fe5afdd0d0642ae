//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

// TestCgroupV2 is the cgroup v2 lane's own (contrib/dev/cgroup2-lane: an
// emulated machine with systemd as init, pure cgroup v2, Docker's systemd
// cgroup driver, Slurm 26.05's cgroup/v2): the job directories are the
// layout the lane asked for (SLUID, or job_ID with CgroupJobIdPaths=yes),
// and a container of a job lives in its user's slice, whose TasksMax is
// pids_limit_per_user, as the kernel reads it.
func TestCgroupV2(t *testing.T) {
	if os.Getenv("CONTAINERJOB_E2E_LANE") != "cgroup2" {
		t.Skip("the cgroup v2 lane's own test (contrib/dev/cgroup2-lane)")
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Fatalf("/sys/fs/cgroup is not cgroup v2 (%v)", err)
	}
	t.Parallel()
	dir := jobDir(t, alice)
	script := `#!/bin/sh
#SBATCH -o out-%j.txt
echo "BATCH $(cat /proc/self/cgroup)"
srun sh -c 'echo "STEP $(cat /proc/self/cgroup)"'
srun containerjob alpine:3.20 sh -c 'while [ ! -e release ]; do sleep 0.2; done; echo released'
`
	id := sbatch(t, alice, dir, script)
	t.Cleanup(func() { os.WriteFile(filepath.Join(dir, "release"), nil, 0o644) })

	// Running, not only created: the engine lists a container before its
	// start, and under emulation the gap is long enough to meet (pid 0).
	var c client.ContainerInspectResult
	waitFor(t, 2*time.Minute, "job "+id+"'s container running", func() bool {
		ids := jobContainers(t, id)
		if len(ids) == 0 {
			return false
		}
		r, err := docker.ContainerInspect(context.Background(), ids[0], client.ContainerInspectOptions{})
		c = r
		return err == nil && r.Container.State != nil && r.Container.State.Running && r.Container.State.Pid > 0
	})
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Container.State.Pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	slice := "containerjob-uid_" + strconv.Itoa(int(alice.UID)) + ".slice"
	if want := "0::/containerjob.slice/" + slice + "/docker-" + c.Container.ID + ".scope\n"; string(b) != want {
		t.Errorf("the container's cgroup %q, want %q (its user's slice)", b, want)
	}
	pidMax, _ := os.ReadFile("/proc/sys/kernel/pid_max")
	n, _ := strconv.ParseInt(strings.TrimSpace(string(pidMax)), 10, 64)
	max, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/containerjob.slice", slice, "pids.max"))
	if got, want := strings.TrimSpace(string(max)), strconv.FormatInt(policy.PidsPerUserDefault(n), 10); got != want {
		t.Errorf("the user's slice has pids.max %q, want pids_limit_per_user's default %s", got, want)
	}
	// Where the launcher looks for the cap before it asks systemctl again.
	if _, err := os.Stat(filepath.Join("/run/systemd/system.control", slice+".d", "50-TasksMax.conf")); err != nil {
		t.Errorf("systemd keeps the cap elsewhere, so every launch asks systemctl: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	// Slurm's own directories: job_ID where the lane asked for them,
	// else the job's SLUID (26.05's default), never job_ID.
	// Debian's slurmd (built for several slurmd per host) names its scope
	// NODE_slurmstepd.scope.
	layout := regexp.MustCompile(`^0::/system\.slice/(?:[^/]+_)?slurmstepd\.scope/s[0-9A-Z]+/step_`)
	if os.Getenv("CGROUP_JOB_ID_PATHS") == "yes" {
		layout = regexp.MustCompile(`^0::/system\.slice/(?:[^/]+_)?slurmstepd\.scope/job_` + id + `/step_`)
	}
	for _, want := range []string{"BATCH ", "STEP "} {
		if l := strings.TrimPrefix(lineWith(out, want), want); !layout.MatchString(l) {
			t.Errorf("the %sstep's cgroup %q, want %s; output %q", strings.ToLower(want), l, layout, out)
		}
	}
	if !strings.Contains(out, "released\n") {
		t.Errorf("job output %q lacks the container's line", out)
	}

	// doctor on this node says what holds here.
	doc, err := exec.Command(bin, "doctor").CombinedOutput()
	for _, want := range []string{"v2 (unified)", "driver systemd, cgroup v2", "containerjob-uid_UID.slice, whose TasksMax is pids_limit_per_user"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("doctor on the cgroup v2 node lacks %q (%v):\n%s", want, err, doc)
		}
	}
}

// TestCgroupV2StepParent: confine = "cgroup-parent" cannot hold with
// Docker's systemd driver (it takes slices only); the step is refused with
// one line that names the setting, and nothing is created.
func TestCgroupV2StepParent(t *testing.T) {
	if os.Getenv("CONTAINERJOB_E2E_LANE") != "cgroup2" {
		t.Skip("the cgroup v2 lane's own test (contrib/dev/cgroup2-lane)")
	}
	pol := strings.Replace(testPolicy, `confine = "limits"`, `confine = "cgroup-parent"`, 1)
	if pol == testPolicy {
		t.Fatal("the suite's policy has no confine line to change")
	}
	usePolicy(t, pol)
	dir := jobDir(t, bob)
	r := as(t, bob, dir, `srun containerjob alpine:3.20 true`)
	if r.Code != 125 || !strings.Contains(r.Stderr, `confine = "cgroup-parent" cannot place the container under the step's cgroup`) {
		t.Errorf("confine cgroup-parent with the systemd driver: code %d stderr %q; want 125 and the line that names it", r.Code, r.Stderr)
	}
	if ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(bob.UID))); len(ids) > 0 {
		t.Errorf("the refused step left containers %v", ids)
	}
}
