package launcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/containerjob/containerjob/policy"
)

// JobMarkDir holds a mark for every job that may have containers (or
// pins) on this host: JobMarkDir/SCHED-JOB/NODE, written before any of the
// job's containers is created. The Slurm Prolog and Epilog scripts start
// containerjob only for a job with a mark (or an image to prefetch): the
// jobs that never ran a container pay for a stat(2), not for a process,
// a policy, an audit log and an engine query. Root's; a variable for
// tests.
var JobMarkDir = "/run/containerjob/jobs"

var safeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.\[\]-]{1,128}$`)

// SafeName reports whether a scheduler's word (a job id, a node name) can
// name a file of the node's state: no separator, not only dots. Job marks
// and the job's image pins use it.
func SafeName(s string) bool { return safeNameRE.MatchString(s) && strings.Trim(s, ".") != "" }

// jobMarkPath is where the mark of job on node lives; ok is false for a
// launch outside a job, or names that are no safe file names.
func jobMarkPath(sched, job, node string) (dir, file string, ok bool) {
	if node == "" {
		node = "_"
	}
	if job == "" || !SafeName(sched) || !SafeName(job) || !SafeName(node) {
		return "", "", false
	}
	dir = filepath.Join(JobMarkDir, sched+"-"+job)
	return dir, filepath.Join(dir, node), true
}

// MarkJob records that job may have containers or pins on node. A job
// whose mark cannot be written is refused its container: its Epilog
// would skip it.
func MarkJob(sched, job, node string) error {
	if job == "" {
		return nil // outside a job: gc cleans up
	}
	dir, file, ok := jobMarkPath(sched, job, node)
	if !ok {
		return fmt.Errorf("job %q on node %q cannot be marked for its epilogue (not a safe file name)", job, node)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("marking job %s for its epilogue: %w", job, err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("marking job %s for its epilogue: %w", job, err)
	}
	return f.Close()
}

// markJobOf marks the job a create request's labels name.
func markJobOf(labels map[string]string) error {
	return MarkJob(labels[policy.LabelScheduler], labels[policy.LabelJob], labels[policy.LabelNode])
}

// DropJobMark removes job's mark for node once its epilogue cleaned up,
// and the job's directory with the last node's.
func DropJobMark(sched, job, node string) error {
	dir, file, ok := jobMarkPath(sched, job, node)
	if !ok {
		return nil
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return err
	}
	return nil
}

// JobMarked reports whether job has a mark on this host, for any node.
func JobMarked(sched, job string) bool {
	dir, _, ok := jobMarkPath(sched, job, "_")
	if !ok {
		return true // cannot tell: assume it may have containers
	}
	_, err := os.Stat(dir)
	return err == nil
}
