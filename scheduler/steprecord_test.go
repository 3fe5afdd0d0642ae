package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStepRecordSparesTheOtherTasks: the first task of a step asks Slurm,
// the step's other tasks on the node take root's record of its answer;
// a record for another step cgroup, a stale one, one that is not root's or
// is writable by others, or a symlink, is not taken.
func TestStepRecordSparesTheOtherTasks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("records are kept by root only")
	}
	dir := t.TempDir()
	counter := filepath.Join(dir, "asked")
	script := "#!/bin/sh\necho x >> " + counter + "\ncat " + filepath.Join(mustAbs(t, "testdata"), "scontrol-json-26.05-job-sluid.json") + "\n"
	if err := os.WriteFile(dir+"/scontrol", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	records := filepath.Join(dir, "records")
	s := Slurm{Scontrol: dir + "/scontrol", Node: "vm", RecordDir: records}
	cg := CgroupJob{Job: "1", Step: "0", Path: "/slurm_vm/uid_0/job_1/step_0/task_3"}
	asked := func() int {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "x")
	}
	for task := 0; task < 4; task++ {
		cg.Path = "/slurm_vm/uid_0/job_1/step_0/task_" + string(rune('0'+task))
		if job, _, err := s.VerifyStep(context.Background(), 0, cg, "1"); err != nil || job.ID != "1" {
			t.Fatalf("task %d: %+v %v", task, job, err)
		}
	}
	if n := asked(); n != 1 {
		t.Errorf("Slurm asked %d times for 4 tasks of one step, want once", n)
	}
	// Tasks that start together wait for the one that asks.
	os.RemoveAll(records)
	os.Remove(counter)
	var wg sync.WaitGroup
	for task := 0; task < 8; task++ {
		wg.Add(1)
		go func(task int) {
			defer wg.Done()
			c := cg
			c.Path = fmt.Sprintf("/slurm_vm/uid_0/job_1/step_0/task_%d", task)
			if _, _, err := s.VerifyStep(context.Background(), 0, c, "1"); err != nil {
				t.Error(err)
			}
		}(task)
	}
	wg.Wait()
	if n := asked(); n != 1 {
		t.Errorf("Slurm asked %d times for 8 tasks starting together, want once", n)
	}
	rec := filepath.Join(records, "vm", "1", "0.json")
	// Another step of the job has a cgroup of its own: not this record.
	other := CgroupJob{Job: "1", Step: "1", Path: "/slurm_vm/uid_0/job_1/step_1/task_0"}
	if _, ok := loadStepRecord(records, "vm", "1", other, time.Now()); ok {
		t.Error("another step took the record")
	}
	if _, ok := loadStepRecord(records, "vm", "1", cg, time.Now().Add(StepRecordTTL+time.Second)); ok {
		t.Error("a stale record was taken")
	}
	if _, ok := loadStepRecord(records, "vm", "2", cg, time.Now()); ok {
		t.Error("a record was taken for another job id")
	}
	os.Chmod(rec, 0o666)
	if _, ok := loadStepRecord(records, "vm", "1", cg, time.Now()); ok {
		t.Error("a record others may write was taken")
	}
	os.Chmod(rec, 0o600)
	os.Chown(rec, 1000, 1000)
	if _, ok := loadStepRecord(records, "vm", "1", cg, time.Now()); ok {
		t.Error("a record root does not own was taken")
	}
	os.Remove(rec)
	os.Symlink(filepath.Join(dir, "scontrol"), rec)
	if _, ok := loadStepRecord(records, "vm", "1", cg, time.Now()); ok {
		t.Error("a symlink was followed")
	}
	if _, ok := stepRecordPath(records, "vm", "../1", cg); ok {
		t.Error("a job id with a separator names a record")
	}
	old := StepRecordDir
	StepRecordDir = records
	t.Cleanup(func() { StepRecordDir = old })
	if err := DropStepRecords("1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(records, "vm", "1")); !os.IsNotExist(err) {
		t.Errorf("the job's records are left: %v", err)
	}
}

// TestPruneStepRecords: gc removes records past their use, and the job
// directories they leave empty; fresh ones stay.
func TestPruneStepRecords(t *testing.T) {
	old := StepRecordDir
	StepRecordDir = t.TempDir()
	t.Cleanup(func() { StepRecordDir = old })
	stale := filepath.Join(StepRecordDir, "vm", "7", "0.json")
	fresh := filepath.Join(StepRecordDir, "vm", "8", "0.json")
	for _, f := range []string{stale, fresh} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		os.WriteFile(f, []byte("{}"), 0o600)
	}
	past := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, past, past)
	PruneStepRecords(time.Hour, time.Now())
	if _, err := os.Stat(filepath.Dir(stale)); !os.IsNotExist(err) {
		t.Errorf("the stale record's job directory is left: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh record went: %v", err)
	}
}
