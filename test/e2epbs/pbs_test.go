//go:build e2epbs

// Package e2epbs runs containerjob in real PBS jobs, against whatever PBS
// server the machine has (make e2e-pbs; contrib/pbs/testcomplex brings up
// a single-node OpenPBS complex from an installed OpenPBS and runs the
// tier inside it). Where there is no PBS server the tier skips with one
// line: the one tier CI cannot have, and the one exception to "fail when
// CI=true".
package e2epbs

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

var (
	pbsExec    = "/opt/pbs"
	alice, bob testutil.User
	bin        = "/usr/bin/containerjob"
)

// pbsConf reads KEY=VALUE from /etc/pbs.conf.
func pbsConf() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/etc/pbs.conf")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			out[k] = v
		}
	}
	return out
}

func TestMain(m *testing.M) {
	conf := pbsConf()
	if v := conf["PBS_EXEC"]; v != "" {
		pbsExec = v
	}
	if v := os.Getenv("CONTAINERJOB_BIN"); v != "" {
		bin = v
	}
	if out, err := exec.Command(filepath.Join(pbsExec, "bin", "qstat"), "-B").CombinedOutput(); err != nil {
		fmt.Printf("e2e-pbs: skipped: no PBS server answers here (/etc/pbs.conf, %s/bin/qstat -B: %v %s); contrib/pbs/testcomplex brings one up from an installed OpenPBS\n", pbsExec, err, strings.Join(strings.Fields(string(out)), " "))
		os.Exit(0)
	}
	var err error
	if alice, err = testutil.EnsureUser("cjalice", "cjextra"); err == nil {
		bob, err = testutil.EnsureUser("cjbob")
	}
	if err != nil {
		fmt.Printf("e2e-pbs: the test users: %v\n", err)
		os.Exit(1)
	}
	// The site's hook, as the admin guide installs it: the epilogue that
	// removes what a job left, and the launch that runs a job in its image.
	hook := os.Getenv("CONTAINERJOB_PBS_HOOK")
	if hook == "" {
		hook = "/usr/share/containerjob/pbs/containerjob_hook.py"
	}
	// Created once and kept (a deleted hook's name stays pending for a
	// while); imported afresh each run.
	exec.Command(qcmd("qmgr"), "-c", "create hook containerjob").Run()
	for _, c := range []string{"set hook containerjob event = 'execjob_epilogue,execjob_end,execjob_launch'",
		"set hook containerjob fail_action = none", "import hook containerjob application/x-python default " + hook} {
		if out, err := exec.Command(qcmd("qmgr"), "-c", c).CombinedOutput(); err != nil {
			fmt.Printf("e2e-pbs: qmgr -c %q: %v %s\n", c, err, out)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func qcmd(name string) string { return filepath.Join(pbsExec, "bin", name) }

// jobDir is a fresh directory of u's for one test's job.
func jobDir(t *testing.T, u testutil.User) string {
	t.Helper()
	dir := filepath.Join(u.Home, "e2epbs-"+t.Name())
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, int(u.UID), int(u.GID))
	return dir
}

// qsub submits script as u from dir and returns the job id.
func qsub(t *testing.T, u testutil.User, dir, script string, args ...string) string {
	t.Helper()
	path := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(path, int(u.UID), int(u.GID))
	argv := append([]string{qcmd("qsub"), "-j", "oe", "-o", filepath.Join(dir, "out.txt")}, args...)
	r := testutil.Run(t, u, dir, nil, append(argv, path)...)
	if r.Code != 0 {
		t.Fatalf("qsub: code %d stderr %q", r.Code, r.Stderr)
	}
	return strings.TrimSpace(r.Stdout)
}

// job is what qstat -x says of a job.
type job struct {
	State   string `json:"job_state"`
	Session int    `json:"session_id"`
	Exit    *int   `json:"Exit_status"`
}

func qstat(t *testing.T, id string) job {
	t.Helper()
	out, err := exec.Command(qcmd("qstat"), "-x", "-f", "-F", "json", id).Output()
	if err != nil {
		t.Fatalf("qstat -x %s: %v", id, err)
	}
	var doc struct {
		Jobs map[string]job `json:"Jobs"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	for _, j := range doc.Jobs {
		return j
	}
	t.Fatalf("qstat -x %s: no job", id)
	return job{}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func waitDone(t *testing.T, id string) job {
	t.Helper()
	var j job
	waitFor(t, 3*time.Minute, "job "+id+" to finish", func() bool { j = qstat(t, id); return j.State == "F" })
	return j
}

func containers(t *testing.T, id string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+policy.LabelJob+"="+id).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

func readOut(t *testing.T, dir string) string {
	t.Helper()
	var data []byte
	waitFor(t, 30*time.Second, "the job's output file", func() bool {
		var err error
		data, err = os.ReadFile(filepath.Join(dir, "out.txt"))
		return err == nil
	})
	return string(data)
}

// TestWrapperInJob: `containerjob IMG cmd` in a job script runs as the
// job's owner in the job's directory, with the job's id, from the first
// line of the script (the server learns the job's session about 2 s in).
func TestWrapperInJob(t *testing.T) {
	dir := jobDir(t, alice)
	id := qsub(t, alice, dir, `#!/bin/sh
cd $PBS_O_WORKDIR
containerjob alpine:3.20 sh -c 'echo "in $PBS_JOBID uid=$(id -u) cwd=$(pwd)"; . /etc/os-release; echo "image $NAME" > written'
echo "rc=$?"
`, "-l", "select=1:ncpus=1", "-l", "walltime=00:02:00")
	j := waitDone(t, id)
	out := readOut(t, dir)
	if j.Exit == nil || *j.Exit != 0 || !strings.Contains(out, fmt.Sprintf("in %s uid=%d cwd=%s\n", id, alice.UID, dir)) || !strings.Contains(out, "rc=0") {
		t.Errorf("job %s exit %v, output %q", id, j.Exit, out)
	}
	if cs := containers(t, id); len(cs) != 0 {
		t.Errorf("job %s left containers %v", id, cs)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "written")); !strings.Contains(string(data), "image containerjob test image") {
		t.Errorf("what the job wrote in its directory: %q, %v", data, err)
	}
}

// runningJob starts a job of u that sleeps, and waits until the server
// knows its session.
func runningJob(t *testing.T, u testutil.User, script string, args ...string) (id, dir string) {
	t.Helper()
	dir = jobDir(t, u)
	id = qsub(t, u, dir, script, args...)
	t.Cleanup(func() { exec.Command(qcmd("qdel"), "-W", "force", id).Run() })
	waitFor(t, time.Minute, "job "+id+" to run", func() bool { j := qstat(t, id); return j.State == "R" && j.Session != 0 })
	return id, dir
}

// TestSpoofedJobRefused: a process outside the job, with PBS_JOBID naming
// the user's own running job or another user's, is refused.
func TestSpoofedJobRefused(t *testing.T) {
	id, _ := runningJob(t, alice, "#!/bin/sh\nsleep 120\n", "-l", "walltime=00:03:00")
	for _, tt := range []struct {
		u    testutil.User
		want string
	}{
		{alice, "not in that job's session"},
		{bob, "belongs to cjalice"},
	} {
		r := testutil.Run(t, tt.u, tt.u.Home, []string{"PBS_JOBID=" + id}, bin, "alpine:3.20", "true")
		if r.Code != 125 || !strings.Contains(r.Stderr, tt.want) {
			t.Errorf("%s with PBS_JOBID=%s outside the job: code %d stderr %q", tt.u.Name, id, r.Code, r.Stderr)
		}
	}
	if cs := containers(t, id); len(cs) != 0 {
		t.Errorf("containers %v were created", cs)
	}
}

// TestQdelAndWalltimeLeaveNothing: a running containerized job ended by
// qdel, and one that exceeds its walltime, leave no container.
func TestQdelAndWalltimeLeaveNothing(t *testing.T) {
	script := "#!/bin/sh\ncd $PBS_O_WORKDIR\ncontainerjob alpine:3.20 sleep 300\n"
	deleted, _ := runningJob(t, alice, script, "-l", "walltime=00:03:00")
	timed, _ := runningJob(t, bob, script, "-l", "walltime=00:00:15")
	waitFor(t, time.Minute, "both jobs' containers", func() bool { return len(containers(t, deleted)) > 0 && len(containers(t, timed)) > 0 })
	if r := testutil.Run(t, alice, alice.Home, nil, qcmd("qdel"), deleted); r.Code != 0 {
		t.Fatalf("qdel: %q", r.Stderr)
	}
	for _, id := range []string{deleted, timed} {
		waitDone(t, id)
		waitFor(t, time.Minute, "job "+id+"'s containers to go", func() bool { return len(containers(t, id)) == 0 })
	}
}

// TestHookRunsTheJobInTheImage: with the containerjob hook installed (as
// TestMain does, like contrib/pbs/install-hook), qsub -v
// CONTAINERJOB_IMAGE=IMG runs the job script itself in the image, with the
// job's directory, and the hook's epilogue leaves nothing.
func TestHookRunsTheJobInTheImage(t *testing.T) {
	dir := jobDir(t, alice)
	id := qsub(t, alice, dir, "#!/bin/sh\ncd $PBS_O_WORKDIR\n. /etc/os-release; echo \"image $NAME uid=$(id -u)\" | tee written\n", "-v", "CONTAINERJOB_IMAGE=alpine:3.20", "-l", "walltime=00:02:00")
	j := waitDone(t, id)
	out := readOut(t, dir)
	if j.Exit == nil || *j.Exit != 0 || !strings.Contains(out, "image containerjob test image") || !strings.Contains(out, fmt.Sprintf("uid=%d", alice.UID)) {
		t.Errorf("job %s exit %v, output %q; want the script to run in alpine:3.20 as alice", id, j.Exit, out)
	}
	if cs := containers(t, id); len(cs) != 0 {
		t.Errorf("job %s left containers %v", id, cs)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "written")); !strings.Contains(string(data), "image containerjob test image") {
		t.Errorf("what the job wrote in its directory: %q, %v", data, err)
	}
}
