//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// fakeQstat is qstat as the privileged containerjob will run it (from the
// policy, with a clean environment). It serves the recorded outputs in
// scheduler/testdata with this machine's values filled in: the node, the
// test user, a work directory, and the session of whoever runs it (the
// caller's, since containerjob stays in the caller's session). Job ids
// select variants: 4242 the caller's running job; 4243 another user's;
// 4244 another session's; 4245 queued, not running.
const fakeQstat = `#!/bin/sh
id=""; for a in "$@"; do id="$a"; done
sid=$(ps -o sess= -p $$ | tr -d ' ')
user=@USER@; state=R
case "$id" in
4242.pbshead) ;;
4243.pbshead) user=@OTHER@ ;;
4244.pbshead) sid=1 ;;
4245.pbshead) state=Q ;;
*) echo "qstat: Unknown Job Id $id" >&2; exit 153 ;;
esac
sed -e "s/@SESSION@/$sid/" -e "s/node01/$(hostname -s)/g" -e "s/\"alice\"/\"$user\"/g" -e "s/alice@/$user@/" \
    -e "s|/home/alice/run|@WORKDIR@|g" -e "s/\"job_state\":\"R\"/\"job_state\":\"$state\"/" \
    -e "s/4242.pbshead/$id/" @FIXTURE@
`

func TestPBSJobContext(t *testing.T) {
	dir := userDir(t, alice, "pbsjob")
	binDir := t.TempDir()
	os.Chmod(binDir, 0o755)
	fixture, _ := filepath.Abs("../../scheduler/testdata/qstat-f-F-json-running.json")
	script := strings.NewReplacer("@USER@", alice.Name, "@OTHER@", bob.Name, "@WORKDIR@", dir, "@FIXTURE@", fixture).Replace(fakeQstat)
	qstat := filepath.Join(binDir, "qstat")
	if err := os.WriteFile(qstat, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	usePolicy(t, strings.Replace(testPolicy, "[settings]\n", "[settings]\nqstat = \""+qstat+"\"\n", 1))

	// A PBS job's processes run in the session the MOM created for the job
	// (its shell is a session leader); setsid models that. Without it the
	// test would inherit the runner's session, whose leader may live outside
	// this PID namespace (getsid then says 0, which is no job's session).
	inJob := func(argv ...string) []string { return append([]string{"setsid", "--wait"}, argv...) }

	// Inside the job: the job directory is PBS_O_WORKDIR, the environment
	// arrives, the container is labelled with the job.
	r := testutil.Run(t, alice, alice.Home, []string{"PBS_JOBID=4242.pbshead", "MYVAR=x"}, inJob(bin, "alpine:3.20", "sh", "-c", "echo $PBS_JOBID $MYVAR; pwd")...)
	if r.Code != 0 || r.Stdout != "4242.pbshead x\n"+dir+"\n" {
		t.Errorf("in the job: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	tests := []struct {
		name, jobid, want string
	}{
		{"another user's job", "4243.pbshead", "belongs to " + bob.Name + ", not the caller"},
		{"a job in another session (spoofed PBS_JOBID)", "4244.pbshead", "not in that job's session or cgroup"},
		{"a job not running", "4245.pbshead", "is in state Q, not running"},
		{"an unknown job", "99.pbshead", "Unknown Job Id"},
		{"a malformed job id", "1;reboot", "is not a PBS job id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			since := time.Now()
			r := testutil.Run(t, alice, alice.Home, []string{"PBS_JOBID=" + tt.jobid}, inJob(bin, "alpine:3.20", "true")...)
			refused(t, alice, since, r, tt.want)
		})
	}
	// The epilogue for PBS jobs removes the job's containers.
	cmd := testutil.Command(alice, alice.Home, []string{"PBS_JOBID=4242.pbshead"}, inJob(bin, "alpine:3.20", "sh", "-c", "echo ready; sleep 60")...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	stdout.Read(buf)
	if ids := testutil.Containers(t, docker, "org.containerjob.job=4242.pbshead"); len(ids) != 1 {
		t.Fatalf("containers of the PBS job: %v", ids)
	}
	out, err := exec.Command(bin, "epilog", "--scheduler", "pbs", "--job", "4242.pbshead").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "removed container") {
		t.Errorf("epilog: %v %s", err, out)
	}
	cmd.Wait()
	if ids := testutil.Containers(t, docker, "org.containerjob.job=4242.pbshead"); len(ids) != 0 {
		t.Errorf("containers left after the epilogue: %v", ids)
	}
}
