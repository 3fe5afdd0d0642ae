package scheduler

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/containerjob/containerjob/internal/nodefile"
)

// A step's tasks on one node all start together, and each used to ask
// slurmctld about the job (a process and an RPC each: 16 tasks on 2 CPUs
// spent a median of 224 ms there, benchmarks section 7). The first task's
// verified answer is kept as root's record of the step; the step's other
// tasks on the node take it for StepRecordTTL instead of asking again.
// Each task is still placed in the step by the kernel (its cgroup path,
// root-made) and checked against the record: the owner, the node, the
// SLURM_JOB_ID it claims. What the record holds cannot change for a
// running step (owner, nodes, the job's GPUs); its state can only end,
// and a step whose job ended has no tasks left to start.
var (
	// StepRecordDir is root's (0700); "" keeps no records (tests, and
	// any process that is not root).
	StepRecordDir = "/run/containerjob/steprecord"
	StepRecordTTL = 30 * time.Second
)

type stepRecord struct {
	Cgroup string    `json:"cgroup"` // the step's cgroup, as the kernel placed the first task
	Asked  time.Time `json:"asked"`
	Job    SlurmJob  `json:"job"`
}

var recordNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// recordName reports whether a scheduler's word (a node, a job id, a step)
// can name a file of the records: no separator, not only dots.
func recordName(s string) bool { return recordNameRE.MatchString(s) && strings.Trim(s, ".") != "" }

// stepRecordPath is the record of cg's step on node; ok is false where a
// name is no safe file name (then no record is kept).
// The job is its id (what the epilogue knows), the step cgroup decides.
func stepRecordPath(dir, node, job string, cg CgroupJob) (string, bool) {
	if node == "" {
		node = "_"
	}
	if !recordName(node) || !recordName(job) || !recordName(cg.Step) {
		return "", false
	}
	return filepath.Join(dir, node, job, cg.Step+".json"), true
}

// loadStepRecord is the record of cg's step on node when it is root's,
// fresh, and made for the same step cgroup.
func loadStepRecord(dir, node, job string, cg CgroupJob, now time.Time) (SlurmJob, bool) {
	path, ok := stepRecordPath(dir, node, job, cg)
	if dir == "" || !ok || os.Geteuid() != 0 {
		return SlurmJob{}, false
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return SlurmJob{}, false
	}
	defer f.Close()
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Uid != 0 || st.Mode&0o022 != 0 {
		return SlurmJob{}, false
	}
	var rec stepRecord
	if json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&rec) != nil {
		return SlurmJob{}, false
	}
	age := now.Sub(rec.Asked)
	if rec.Cgroup == "" || rec.Cgroup != stepCgroup(cg) || rec.Job.ID != job || age < 0 || age > StepRecordTTL {
		return SlurmJob{}, false
	}
	return rec.Job, true
}

// saveStepRecord keeps sj as the record of cg's step on node, written whole
// (a temporary file renamed into place). Best effort: a task that cannot
// keep it asked Slurm itself, and the next one will too.
func saveStepRecord(dir, node string, cg CgroupJob, sj SlurmJob, now time.Time) {
	path, ok := stepRecordPath(dir, node, sj.ID, cg)
	if dir == "" || !ok || os.Geteuid() != 0 {
		return
	}
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	b, err := json.Marshal(stepRecord{Cgroup: stepCgroup(cg), Asked: now, Job: sj})
	if err != nil {
		return
	}
	nodefile.Write(path, b, 0o600)
}

// StepRecordWait bounds how long a task waits for the step's first task
// to ask Slurm; then it asks itself.
var StepRecordWait = 10 * time.Second

// lockStepRecord makes the step's tasks on the node ask one at a time, so
// that one asks and the others take its record: a lock of the step's own
// (never the node's), held only while its holder asks Slurm (bounded by
// ShowJob's own timeout). unlock is a no-op where no lock was taken.
func lockStepRecord(dir, node, job string, cg CgroupJob) (unlock func()) {
	path, ok := stepRecordPath(dir, node, job, cg)
	if dir == "" || !ok || os.Geteuid() != 0 || os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return func() {}
	}
	if unlock, err := nodefile.Lock(path+".lock", StepRecordWait); err == nil {
		return unlock
	}
	return func() {} // no lock within the bound: this task asks itself
}

// DropStepRecords removes the records of job (its epilogue), under every
// node name of this host: a record only spares a question, so removing
// one of a node whose tasks still start costs them a question, no more.
func DropStepRecords(job string) error {
	if StepRecordDir == "" || !recordName(job) {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(StepRecordDir, "*", job))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

// PruneStepRecords removes records older than age, with their locks and
// the job directories they leave empty (gc): a step refused before any
// container was made leaves no mark for its job's epilogue to find.
func PruneStepRecords(age time.Duration, now time.Time) {
	if StepRecordDir == "" {
		return
	}
	files, _ := filepath.Glob(filepath.Join(StepRecordDir, "*", "*", "*"))
	for _, f := range files {
		if fi, err := os.Lstat(f); err == nil && now.Sub(fi.ModTime()) > age {
			os.Remove(f)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(StepRecordDir, "*", "*"))
	for _, d := range dirs {
		os.Remove(d) // only an empty one goes
	}
}
