package scheduler

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBatchScript(t *testing.T) {
	for _, c := range []struct {
		job  Job
		want string
	}{
		{Job{Scheduler: "slurm", ID: "42", Step: "batch"}, "/var/spool/slurmd/job00042/slurm_script"},
		{Job{Scheduler: "slurm", ID: "123456", Step: "batch"}, "/var/spool/slurmd/job123456/slurm_script"},
		{Job{Scheduler: "slurm", ID: "42", Step: "0"}, ""},
		{Job{Scheduler: "slurm", ID: "../x", Step: "batch"}, ""},
		{Job{Scheduler: "pbs", ID: "42", Step: "batch"}, ""},
	} {
		if got := BatchScript(c.job, "/var/spool/slurmd"); got != c.want {
			t.Errorf("BatchScript(%+v) = %q, want %q", c.job, got, c.want)
		}
	}
}

// TestPMIxDirs: a step's PMIx directories are derived from the verified
// job and step and taken only when each is a real directory of root's or
// the job owner's; a symlink or a stranger's directory fails the launch.
func TestPMIxDirs(t *testing.T) {
	root := t.TempDir()
	spool, tmp := filepath.Join(root, "spool", "%n"), filepath.Join(root, "tmp", "%n")
	job := Job{Scheduler: "slurm", ID: "42", Step: "1", Node: "n1"}
	server := filepath.Join(root, "spool", "n1", "pmix.42.1")
	owner := uint32(os.Getuid())
	app := filepath.Join(root, "tmp", "n1", fmt.Sprintf("spmix_appdir_%d_42.1", owner))
	if dirs, err := PMIxDirs(job, spool, tmp, owner); err != nil || dirs != nil {
		t.Fatalf("no PMIx step: %v, %v", dirs, err)
	}
	for _, d := range []string{server, app} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if dirs, err := PMIxDirs(job, spool, tmp, owner); err != nil || !reflect.DeepEqual(dirs, []string{server, app}) {
		t.Errorf("a PMIx step: %v, %v", dirs, err)
	}
	for _, other := range []Job{{Scheduler: "slurm", ID: "42", Step: "batch", Node: "n1"}, {Scheduler: "pbs", ID: "42", Step: "1", Node: "n1"}} {
		if dirs, _ := PMIxDirs(other, spool, tmp, owner); dirs != nil {
			t.Errorf("%+v: %v", other, dirs)
		}
	}
	if os.Getuid() == 0 {
		if err := os.Chown(server, 4242, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := PMIxDirs(job, spool, tmp, owner); err == nil || !strings.Contains(err.Error(), "neither root nor the job's owner") {
			t.Errorf("a stranger's directory: %v", err)
		}
	}
	os.RemoveAll(server)
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, server); err != nil {
		t.Fatal(err)
	}
	if _, err := PMIxDirs(job, spool, tmp, owner); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("a symlinked server directory: %v", err)
	}
}
