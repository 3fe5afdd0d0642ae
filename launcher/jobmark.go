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
// and the job's directory with the last node's (its steps' launch marks
// with it: every container of the job on this node is gone by then).
func DropJobMark(sched, job, node string) error {
	dir, file, ok := jobMarkPath(sched, job, node)
	if !ok {
		return nil
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) == 1 && ents[0].Name() == "@live" {
		if err := os.RemoveAll(filepath.Join(dir, "@live")); err != nil {
			return err
		}
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

// liveDir is where the launches of a job's steps on this host keep their
// marks: JobMarkDir/SCHED-JOB/@live/STEP ("@" is in no node's name, so it
// never meets a node's mark beside it). STEP is Slurm's (digits, batch,
// extern, interactive); a job without steps (PBS) keeps its marks in "_".
func liveDir(sched, job, step string) (string, bool) {
	if step == "" {
		step = "_" // a scheduler without steps (PBS)
	}
	dir, _, ok := jobMarkPath(sched, job, "_")
	if !ok || !SafeName(step) {
		return "", false
	}
	return filepath.Join(dir, "@live", step), true
}

// LiveMark is one launch's mark in its step's live directory, written
// before the launch creates or joins a container and removed once it has
// ended having left nothing behind: it removed what it made, or left the
// step's shared container to a task still in it. A launch killed outright,
// or one that failed or could not remove its container, leaves its mark.
// So at the step's end the SPANK plugin starts the step's cleanup
// (containerjob epilog --step) only where a mark is left: a step whose
// launches all ended cleanly has nothing of its own to remove, and its
// end (a batch job's end among them) costs a directory read instead of a
// process, a policy and an engine query. Nil outside a job: no-op.
type LiveMark struct {
	path string
	left bool
}

// MarkLive writes the mark of a launch of the step the labels name.
func MarkLive(labels map[string]string) (*LiveMark, error) {
	sched, job, step := labels[policy.LabelScheduler], labels[policy.LabelJob], labels[policy.LabelStep]
	if job == "" {
		return nil, nil // outside a job: gc cleans up
	}
	dir, ok := liveDir(sched, job, step)
	if !ok {
		return nil, fmt.Errorf("job %q step %q cannot be marked for its step's end (not a safe file name)", job, step)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("marking the launch for its step's end: %w", err)
	}
	f, err := os.CreateTemp(dir, "launch-")
	if err != nil {
		return nil, fmt.Errorf("marking the launch for its step's end: %w", err)
	}
	f.Close()
	return &LiveMark{path: f.Name()}, nil
}

// Leave records that the launch left something to the step's end (a
// container it could not remove): its mark stays.
func (m *LiveMark) Leave() {
	if m != nil {
		m.left = true
	}
}

// Done removes the mark of a launch that ended with err, unless it failed
// or left something: the step's cleanup then looks.
func (m *LiveMark) Done(err error) {
	if m == nil || err != nil || m.left {
		return
	}
	os.Remove(m.path)
}

// StepLive reports whether a launch of the step left its mark on this
// host (or the marks cannot be read): what the SPANK plugin asks before
// the step's cleanup (step_live), here for the tests.
func StepLive(sched, job, step string) bool {
	dir, ok := liveDir(sched, job, step)
	if !ok {
		return true
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	return err != nil || len(ents) > 0
}
