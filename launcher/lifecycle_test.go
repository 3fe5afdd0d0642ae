package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/moby/moby/api/types/container"
	moby "github.com/moby/moby/client"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/policy"
)

const lifecyclePolicy = `
[defaults]
images_allow = ["alpine:*"]
pull = ["never", "missing"]
mount_job_dir = false
flags_allow = ["name", "tty", "interactive"]
max_containers_per_job = 3
`

// lifecycle sets up a launch against the fake engine: a decision for bob
// in job 7 without host mounts (nothing to stage, so no root needed), and
// the node's lock, caches and staging under the test's own directory.
func lifecycle(t *testing.T, req policy.Request) (*fakeEngine, *policy.Decision, Options) {
	t.Helper()
	dir := t.TempDir()
	oldMarks := JobMarkDir
	JobMarkDir = filepath.Join(dir, "jobs")
	t.Cleanup(func() { JobMarkDir = oldMarks })
	oldLock, oldStep, oldCache, oldNode, oldStage, oldPull, oldPulled := LaunchLockDir, StepLockDir, AccountsCache, NodeCacheDir, StageRoot, PullLockDir, PulledDir
	LaunchLockDir, StepLockDir, AccountsCache, NodeCacheDir, StageRoot, PullLockDir, PulledDir = filepath.Join(dir, "launch"), filepath.Join(dir, "step"), filepath.Join(dir, "accounts"), dir, filepath.Join(dir, "stage"), filepath.Join(dir, "pull"), filepath.Join(dir, "pulled")
	t.Cleanup(func() {
		LaunchLockDir, StepLockDir, AccountsCache, NodeCacheDir, StageRoot, PullLockDir, PulledDir = oldLock, oldStep, oldCache, oldNode, oldStage, oldPull, oldPulled
	})
	if req.Image == "" {
		req.Image = "alpine:3.20"
	}
	d := decideFor(t, lifecyclePolicy, req, policy.Job{Scheduler: "slurm", ID: "7", Step: "0", Node: "n1"})
	if len(d.StageSources) > 0 {
		t.Fatalf("the lifecycle decision stages %v; it must need no root", d.StageSources)
	}
	return newFakeEngine(t), d, Options{Guard: expect(), Signals: make(chan os.Signal, 4)}
}

// lineWriter collects output and reports each line as it completes.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
	err   error // returned by every write, once set
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 64)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			return len(p), nil
		}
		w.lines <- strings.TrimSuffix(line, "\n")
	}
}

func (w *lineWriter) await(t *testing.T, want string) {
	t.Helper()
	for l := range w.lines {
		if l == want {
			return
		}
	}
}

func (w *lineWriter) all() string {
	close(w.lines)
	var out []string
	for l := range w.lines {
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func TestRunStreamsExitCodeAndRemoves(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"work", "a b"}})
	eng.Program["work"] = func(p *fakeProc) int {
		fmt.Fprintf(p.Stdout, "args %q\n", p.Args)
		fmt.Fprintln(p.Stderr, "to stderr")
		return 3
	}
	var phases []string
	opts.Phase = func(n string) { phases = append(phases, n) }
	stdout, stderr := newLineWriter(), newLineWriter()
	res, err := Run(context.Background(), eng, d, IO{Stdout: stdout, Stderr: stderr}, opts)
	if err != nil || res.ExitCode != 3 {
		t.Fatalf("Run = %+v, %v; want exit 3", res, err)
	}
	if got := stdout.all(); got != `args ["work" "a b"]` {
		t.Errorf("stdout %q", got)
	}
	if got := stderr.all(); got != "to stderr" {
		t.Errorf("stderr %q", got)
	}
	if len(eng.Live()) != 0 {
		t.Errorf("containers left: %d", len(eng.Live()))
	}
	// Attach and wait come before start: no output and no exit is missed.
	calls := strings.Join(eng.Calls, ",")
	if a, w, s := strings.Index(calls, "ContainerAttach"), strings.Index(calls, "ContainerWait"), strings.Index(calls, "ContainerStart"); a < 0 || w < 0 || s < a || s < w {
		t.Errorf("engine calls in order %s", calls)
	}
	if want := []string{"image", "stage", "guard", "create", "attach", "start", "exit", "remove"}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
}

func TestRunForwardsSignalsAndStopsOnTerm(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"wait"}})
	eng.Program["wait"] = untilTerm("")
	stdout := newLineWriter()
	done := make(chan error, 1)
	var res Result
	go func() {
		var err error
		res, err = Run(context.Background(), eng, d, IO{Stdout: stdout, Stderr: newLineWriter()}, opts)
		done <- err
	}()
	stdout.await(t, "up")
	opts.Signals <- syscall.SIGUSR1
	stdout.await(t, "got SIGUSR1")
	opts.Signals <- syscall.SIGTERM
	if err := <-done; err != nil || res.ExitCode != 143 {
		t.Fatalf("Run = %+v, %v; want 143 after SIGTERM", res, err)
	}
	if !slices.Contains(eng.Calls, "ContainerStop") {
		t.Errorf("SIGTERM did not become a stop with grace: %v", eng.Calls)
	}
}

func TestRunReportsOOM(t *testing.T) {
	oldSettle := oomSettle
	oomSettle = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond}
	defer func() { oomSettle = oldSettle }()
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"hog"}})
	eng.Program["hog"] = func(*fakeProc) int { return 137 }
	eng.OOMOnExit137 = true
	stderr := newLineWriter()
	res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: stderr}, opts)
	if err != nil || res.ExitCode != 137 || !res.OOMKilled {
		t.Fatalf("Run = %+v, %v; want exit 137, killed for its memory", res, err)
	}
	if got := stderr.all(); got != "" {
		t.Errorf("the launcher printed %q itself", got)
	}
	// The engine's OOM event may come after its exit: still told.
	eng.OOMLate, eng.Inspects137 = 3, 0
	if res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: stderr}, opts); err != nil || !res.OOMKilled {
		t.Errorf("Run with the OOM event after the exit = %+v, %v; want killed for its memory", res, err)
	}
	// A 137 from a kill is not reported as memory.
	eng.OOMOnExit137 = false
	if res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: stderr}, opts); err != nil || res.ExitCode != 137 || res.OOMKilled {
		t.Errorf("Run after a plain SIGKILL = %+v, %v", res, err)
	}
}

// TestRunTellsAnEngineStopFromAnOOMKill: a container the engine killed
// as it stopped (a restart, an upgrade) ends with its 137 and
// EngineStopped, neither OOMKilled nor silent; one killed by the kernel
// for its memory, or by the caller's own signal, is not taken for that.
func TestRunTellsAnEngineStopFromAnOOMKill(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"victim"}})
	eng.Program["victim"] = func(*fakeProc) int {
		eng.Mu.Lock()
		eng.Down = true // the engine stops, then kills its containers
		eng.Mu.Unlock()
		return 137
	}
	res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	if err != nil || res.ExitCode != 137 || !res.EngineStopped || res.OOMKilled {
		t.Fatalf("Run = %+v, %v; want 137 with the engine's stop told", res, err)
	}
	eng.Program["victim"] = func(*fakeProc) int { return 137 }
	eng.OOMOnExit137 = true
	if res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil || res.EngineStopped || !res.OOMKilled {
		t.Errorf("an OOM kill: %+v, %v", res, err)
	}
	eng.OOMOnExit137 = false
	eng.Program["victim"] = func(*fakeProc) int { return 139 }
	if res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil || res.EngineStopped || res.OOMKilled {
		t.Errorf("a segfault with the engine up: %+v, %v", res, err)
	}
}

func TestRunFailures(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(e *fakeEngine)
		wantCode int
		wantErr  string
	}{
		{"create fails", func(e *fakeEngine) { e.CreateErr = errors.New("no space left on device") }, ExitLaunchFailed, "creating the container failed: no space left on device"},
		{"command not found", func(e *fakeEngine) {
			e.StartErr = errors.New(`OCI runtime create failed: runc create failed: unable to start container process: exec: "nosuch": executable file not found in $PATH: unknown`)
		}, ExitCommandMissing, `the command was not found in the image: "nosuch": executable file not found in $PATH`},
		{"not executable", func(e *fakeEngine) {
			e.StartErr = errors.New(`OCI runtime create failed: unable to start container process: exec: "/etc/passwd": permission denied: unknown`)
		}, ExitCannotInvoke, `the command cannot be run: "/etc/passwd": permission denied`},
		{"attach fails", func(e *fakeEngine) { e.AttachErr = errors.New("hijack refused") }, ExitLaunchFailed, "attaching to the container failed"},
		{"engine lost mid-run", func(e *fakeEngine) { e.WaitErr = errors.New("unexpected EOF") }, ExitLaunchFailed, "the connection to the container engine was lost while the container ran (unexpected EOF)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
			tt.setup(eng)
			_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
			var lerr *Error
			if !errors.As(err, &lerr) || lerr.Code != tt.wantCode || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run error %v; want code %d and %q", err, tt.wantCode, tt.wantErr)
			}
			if n := len(eng.Live()); n != 0 {
				t.Errorf("%d containers left after %s", n, tt.name)
			}
		})
	}
}

func TestRunStopsWhenOutputBreaks(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"chatty"}})
	eng.Program["chatty"] = func(p *fakeProc) int {
		for {
			if _, err := fmt.Fprintln(p.Stdout, "line"); err != nil {
				return 1
			}
			select {
			case <-p.Killed:
				return 137
			default:
			}
		}
	}
	stdout := newLineWriter()
	stdout.err = syscall.EPIPE
	_, err := Run(context.Background(), eng, d, IO{Stdout: stdout, Stderr: newLineWriter()}, opts)
	var lerr *Error
	if !errors.As(err, &lerr) || lerr.Code != ExitBrokenPipe {
		t.Fatalf("Run error %v; want exit %d", err, ExitBrokenPipe)
	}
	if !slices.Contains(eng.Calls, "ContainerKill SIGKILL") {
		t.Errorf("the container was not killed: %v", eng.Calls)
	}
}

func TestRunPullsMissingImageOnce(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Image: "alpine:3.21", Pull: "missing", Cmd: []string{"true"}})
	stderr := newLineWriter()
	res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: stderr}, opts)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if !slices.Equal(eng.Pulls, []string{"docker.io/library/alpine:3.21"}) {
		t.Errorf("pulls %v", eng.Pulls)
	}
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil || len(eng.Pulls) != 1 {
		t.Errorf("second run: %v, pulls %v; the image is there now", err, eng.Pulls)
	}
}

// TestConcurrentLaunchesPullOnce: launches on one node that need the same
// missing image make one pull; the others wait on the node's pull lock,
// say so, and take what it pulled. The engine's pull is held until every
// other launch waits (with the lock) or a second pull begins (without it).
func TestConcurrentLaunchesPullOnce(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Image: "alpine:3.21", Pull: "missing", Cmd: []string{"true"}})
	eng.PullGate = make(chan struct{})
	const n = 8
	var waiting, done atomic.Int32
	opts.Notify = func(nt Notice) {
		if nt.Kind == NoticeWaitingForPull {
			waiting.Add(1)
		}
	}
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := ensureImage(context.Background(), eng, d, opts)
			done.Add(1)
			errs <- err
		}()
	}
	for waiting.Load() < n-1 && eng.PullCount() < 2 && done.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(eng.PullGate)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("launch %d: %v", i, err)
		}
	}
	if got := eng.PullCount(); got != 1 || waiting.Load() != n-1 {
		t.Errorf("%d launches made %d pulls (%d waited); want 1 pull and %d waiting", n, got, waiting.Load(), n-1)
	}
}

func TestRunNeverPullsWhenTheModeSaysNever(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Image: "alpine:3.21", Pull: "never", Cmd: []string{"true"}})
	_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	if err == nil || len(eng.Pulls) != 0 {
		t.Fatalf("Run error %v, pulls %v; want a refusal and no pull", err, eng.Pulls)
	}
	// What to do is the hint's, not the error line's.
	if strings.Contains(err.Error(), "ask your admin") || !strings.HasPrefix(hint.Of(err), "ask your admin to load it") {
		t.Errorf("error %q, hint %q: want the advice on the hint alone", err, hint.Of(err))
	}
}

func TestRunAddsTheCallersAccount(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	opts.Account = &Account{Name: "bob", UID: 1002, GID: 1002, Home: "/home/bob", LoginShell: "/bin/bash", Groups: []Group{{"bob", 1002}, {"proj", 3000}}}
	var created string
	opts.Created = func(id string) { created = id }
	eng.Program["true"] = func(p *fakeProc) int {
		// The generated files exist while the container starts.
		c, _ := eng.Find(created)
		for _, m := range c.Req.HostConfig.Mounts {
			fmt.Fprintf(p.Stdout, "%s ro=%v %q\n", m.Target, m.ReadOnly, c.Mounted[m.Target])
		}
		return 0
	}
	stdout := newLineWriter()
	if _, err := Run(context.Background(), eng, d, IO{Stdout: stdout, Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	want := "/etc/passwd ro=true \"root:x:0:0:root:/root:/bin/sh\\nbob:x:1002:1002::/home/bob:/bin/sh\\n\"\n" +
		"/etc/group ro=true \"root:x:0:\\nbob:x:1002:\\nproj:x:3000:bob\\n\""
	if got := stdout.all(); got != want {
		t.Errorf("mounts seen inside:\n%s\nwant:\n%s", got, want)
	}
	// The image was read once, from a probe container that never started
	// and is gone; a second launch reads the node's cache.
	probes := 0
	for _, c := range eng.Containers {
		if c.Req.Config.Labels[LabelProbe] == "1" {
			probes++
			if !c.Removed || c.State != "created" {
				t.Errorf("probe container state %s removed %v", c.State, c.Removed)
			}
		}
	}
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	for _, c := range eng.Containers {
		if c.Req.Config.Labels[LabelProbe] == "1" {
			probes--
		}
	}
	if probes != 0 {
		t.Errorf("the second launch probed the image again")
	}
	if entries, _ := os.ReadDir(StageRoot); len(entries) != 0 {
		t.Errorf("staging left behind: %v", entries)
	}
}

func TestRunSkipsAccountsForASymlinkedPasswd(t *testing.T) {
	eng, _, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	eng.AddImage("docker.io/library/alpine:evil", map[string]fakeFile{
		"/etc":        {Mode: os.ModeDir | 0o755},
		"/etc/passwd": {Mode: os.ModeSymlink | 0o777, Link: "/home/bob/steer"},
	})
	_, d, _ := lifecycle(t, policy.Request{Image: "alpine:evil", Cmd: []string{"true"}})
	opts.Account = &Account{Name: "bob", UID: 1002, GID: 1002, Home: "/home/bob", Groups: []Group{{"bob", 1002}}}
	var created string
	opts.Created = func(id string) { created = id }
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	if c := eng.Containers[created]; len(c.Req.HostConfig.Mounts) != 0 {
		t.Errorf("mounts %v over a symlinked /etc/passwd", c.Req.HostConfig.Mounts)
	}
}

func TestRunNamesAMissingInterpreter(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"/job/slurm_script"}})
	opts.Interpreter = "/bin/bash"
	_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	var lerr *Error
	if !errors.As(err, &lerr) || lerr.Code != ExitCommandMissing || !strings.Contains(err.Error(), "the batch script starts with #!/bin/bash, which image docker.io/library/alpine:3.20 does not have") {
		t.Fatalf("Run error %v", err)
	}
	if slices.Contains(eng.Calls, "ContainerStart") {
		t.Errorf("the container was started")
	}
	opts.Interpreter = "/bin/sh"
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Errorf("an interpreter the image has: %v", err)
	}
}

func TestRunRefusesBeyondTheJobsLimit(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"hold"}})
	release := make(chan struct{})
	eng.Program["hold"] = func(p *fakeProc) int {
		fmt.Fprintln(p.Stdout, "up")
		select {
		case <-release:
		case <-p.Killed:
		}
		return 0
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		out := newLineWriter()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Run(context.Background(), eng, d, IO{Stdout: out, Stderr: newLineWriter()}, opts); err != nil {
				t.Errorf("launch within the limit: %v", err)
			}
		}()
		out.await(t, "up")
	}
	_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	close(release)
	wg.Wait()
	var ref *policy.Refusal
	if !errors.As(err, &ref) || !strings.Contains(err.Error(), "max_containers_per_job") {
		t.Fatalf("a fourth container: %v; want the job's limit", err)
	}
}

func TestRunNamedSharesOneContainer(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Name: "w", Cmd: []string{"step"}})
	if !d.Persist {
		t.Fatal("a named launch in a job must persist")
	}
	eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 } // the keeper
	eng.Program["step"] = func(p *fakeProc) int { fmt.Fprintln(p.Stdout, "in step"); return 5 }
	// Two tasks at once: the engine's unique names settle who creates.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
			if err != nil {
				t.Errorf("task %d: %v", i, err)
			}
			codes[i] = res.ExitCode
		}()
	}
	wg.Wait()
	live := eng.Live()
	if len(live) != 1 || live[0].Name != d.Name || codes[0] != 5 || codes[1] != 5 {
		t.Fatalf("containers %d, exit codes %v; want one named container and both steps' 5", len(live), codes)
	}
	// An exec that never starts is translated, not passed through.
	eng.ExecStartErr = `OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH: unknown`
	stdout := newLineWriter()
	_, err := Run(context.Background(), eng, d, IO{Stdout: stdout, Stderr: newLineWriter()}, opts)
	var lerr *Error
	if !errors.As(err, &lerr) || lerr.Code != ExitCommandMissing || stdout.all() != "" {
		t.Errorf("failed exec: %v; want 127 and nothing raw on stdout", err)
	}
	// The epilogue's part: list the job's containers and remove them.
	cs, err := ListManaged(context.Background(), eng, "slurm", "7")
	if err != nil || len(cs) != 1 || cs[0].ShortName != "w" {
		t.Fatalf("ListManaged = %+v, %v", cs, err)
	}
	for id, err := range RemoveAll(context.Background(), eng, cs) {
		if err != nil {
			t.Errorf("removing %s: %v", id, err)
		}
	}
	if len(eng.Live()) != 0 {
		t.Errorf("the named container survived RemoveAll")
	}
}

// TestStepSharesOneContainerPerNode: the tasks of a multi-task step on a
// node run in one container, each its own exec with its own environment
// and exit status; the container stays while any task runs and is gone
// after the last one, and a later step of the job gets a new one.
func TestStepSharesOneContainerPerNode(t *testing.T) {
	eng, _, opts := lifecycle(t, policy.Request{})
	job := policy.Job{Scheduler: "slurm", ID: "7", Step: "3", Node: "n1", StepTasks: 3}
	task := func(rank int) *policy.Decision {
		return decideFor(t, lifecyclePolicy, policy.Request{Image: "alpine:3.20", Cmd: []string{"rank"},
			JobEnv: []string{fmt.Sprintf("SLURM_PROCID=%d", rank)}}, job)
	}
	if d := task(0); !d.StepShared || d.Name != "cj-1002-7-n1_step.3" {
		t.Fatalf("a 3-task step: shared %v, name %q", d.StepShared, d.Name)
	}
	eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 } // the keeper
	release := make(chan struct{})
	othersUp := make(chan struct{})
	eng.Program["rank"] = func(p *fakeProc) int {
		rank := 0
		for _, e := range p.Env {
			fmt.Sscanf(e, "SLURM_PROCID=%d", &rank)
		}
		fmt.Fprintf(p.Stdout, "rank %d\n", rank)
		if rank == 2 {
			<-othersUp
			return 3 // ends first, while the others run
		}
		<-release
		return rank
	}
	var wg sync.WaitGroup
	codes := make([]int, 3)
	outs := make([]*lineWriter, 3)
	for rank := range codes {
		outs[rank] = newLineWriter()
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := Run(context.Background(), eng, task(rank), IO{Stdout: outs[rank], Stderr: newLineWriter()}, opts)
			if err != nil {
				t.Errorf("rank %d: %v", rank, err)
			}
			codes[rank] = res.ExitCode
		}()
	}
	for rank := range outs {
		outs[rank].await(t, fmt.Sprintf("rank %d", rank))
	}
	close(othersUp)
	eng.AwaitCalls("ExecInspect", 2) // rank 2 has ended (its status) and found another running
	if live := eng.Live(); len(live) != 1 || live[0].Name != "cj-1002-7-n1_step.3" {
		t.Fatalf("while ranks 0 and 1 run: %d containers; want the step's one", len(live))
	}
	close(release)
	wg.Wait()
	if codes[0] != 0 || codes[1] != 1 || codes[2] != 3 {
		t.Errorf("exit codes %v; want each rank's own (0, 1, 3)", codes)
	}
	if live := eng.Live(); len(live) != 0 {
		t.Errorf("%d containers left after the step's last task", len(live))
	}
	if StepLive("slurm", "7", "3") {
		t.Error("the step's tasks all ended cleanly, yet a launch mark is left: the step's end would start its cleanup")
	}
	if n := eng.Count("ContainerCreate"); n != 1 {
		t.Errorf("%d creates for one step on one node", n)
	}
	// One task alone, or per-task containers by policy: not shared.
	job.StepTasks = 1
	if d := decideFor(t, lifecyclePolicy, policy.Request{Image: "alpine:3.20"}, job); d.StepShared {
		t.Error("a one-task step was shared")
	}
	job.StepTasks = 4
	if d := decideFor(t, lifecyclePolicy+"\n[settings]\nstep_containers = \"per-task\"\n", policy.Request{Image: "alpine:3.20"}, job); d.StepShared {
		t.Error("step_containers = per-task was shared")
	}
}

// TestStepContainerThatFailsToStartIsRemoved: when the engine cannot
// start a step's container, every task of the step reports the engine's
// reason (not a stale container of the first task's) and nothing is left.
func TestStepContainerThatFailsToStartIsRemoved(t *testing.T) {
	eng, _, opts := lifecycle(t, policy.Request{})
	job := policy.Job{Scheduler: "slurm", ID: "7", Step: "4", Node: "n1", StepTasks: 2}
	eng.StartErr = errors.New("failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for rank := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := decideFor(t, lifecyclePolicy, policy.Request{Image: "alpine:3.20", Cmd: []string{"true"}}, job)
			_, errs[rank] = Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
		}()
	}
	wg.Wait()
	for rank, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "could not set the policy's ulimits") {
			t.Errorf("rank %d: %v; want the engine's reason", rank, err)
		}
	}
	if n := eng.Count("ContainerStart"); n != 2 {
		t.Errorf("%d starts; want each task's own try", n)
	}
	if live := eng.Live(); len(live) != 0 {
		t.Errorf("%d containers left by a step that never started", len(live))
	}
}

func TestRunNamedRefusesAnotherImage(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Name: "w", Cmd: []string{"true"}})
	eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 }
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	eng.AddImage("docker.io/library/alpine:3.21", map[string]fakeFile{})
	_, d2, _ := lifecycle(t, policy.Request{Image: "alpine:3.21", Name: "w", Cmd: []string{"true"}})
	_, err := Run(context.Background(), eng, d2, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	if err == nil || !strings.Contains(err.Error(), `container "w" runs another image`) {
		t.Fatalf("another image in the named container: %v", err)
	}
	cs, _ := ListManaged(context.Background(), eng, "slurm", "7")
	RemoveAll(context.Background(), eng, cs)
}

// TestPrivateRegistryNeedsTheCallersAccess: an image of a private registry
// runs only after the registry accepts the caller's own credentials for
// the digest that runs; one already on the node is held to the same; no
// credentials, wrong ones and an unreadable configuration each refuse the
// launch with one line, and nothing is created.
func TestPrivateRegistryNeedsTheCallersAccess(t *testing.T) {
	const pol = `
[settings]
private_registries = ["registry.lab:5000"]
[defaults]
images_allow = ["registry.lab:5000/team/*"]
pull = ["missing"]
`
	const good = "good-token"
	tests := []struct {
		name    string
		auth    func(string) (string, bool, error)
		present bool
		wantErr string
	}{
		{"own credentials, pulled", func(string) (string, bool, error) { return good, true, nil }, false, ""},
		{"own credentials, already here", func(string) (string, bool, error) { return good, true, nil }, true, ""},
		{"none, already here", func(string) (string, bool, error) { return "", false, nil }, true, "has none for it"},
		{"wrong ones, already here", func(string) (string, bool, error) { return "stale", true, nil }, true, "did not grant your credentials access"},
		{"wrong ones, not here", func(string) (string, bool, error) { return "stale", true, nil }, false, "pull access denied"},
		{"unreadable configuration", func(string) (string, bool, error) { return "", false, errors.New("config.json: not JSON") }, true, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng, _, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
			d := decideFor(t, pol, policy.Request{Image: "registry.lab:5000/team/tool:1", Cmd: []string{"true"}}, policy.Job{Scheduler: "slurm", ID: "7", Step: "0", Node: "n1"})
			if !d.PrivateRegistry {
				t.Fatal("the decision does not mark the registry private")
			}
			eng.RegistryAuth = good
			if tt.present {
				eng.AddImage("registry.lab:5000/team/tool:1", map[string]fakeFile{"/bin/sh": {Content: "ELF", Mode: 0o755}})
			}
			opts.RegistryAuth = tt.auth
			_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
			if tt.wantErr == "" {
				if err != nil || len(eng.DistChecks) != 1 {
					t.Errorf("Run = %v, registry asked %v; want a run after one check", err, eng.DistChecks)
				}
				return
			}
			var lerr *Error
			if !errors.As(err, &lerr) || lerr.Code != ExitLaunchFailed || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Run = %v; want one line with code 125 containing %q", err, tt.wantErr)
			}
			if n := eng.Count("ContainerCreate"); n != 0 {
				t.Errorf("%d containers created", n)
			}
		})
	}
}

// TestNamedContainerTakesEachStepsMountsAndAllocation: a step that names
// the job's container with other mounts, or with another allocation (CPUs,
// memory, GPUs), runs in it with its own: the container's files are kept
// (committed into an image of the job's) and it is made anew with this
// step's; a step with the same runs in it as it is. The previous binary
// refused other mounts, and ran a gpu:1 step inside the gpu:2 container.
func TestNamedContainerTakesEachStepsMountsAndAllocation(t *testing.T) {
	eng, _, opts := lifecycle(t, policy.Request{})
	eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 } // the keeper
	eng.Program["write"] = func(p *fakeProc) int { p.Layer["/work/state"] = p.Args[1]; return 0 }
	eng.Program["read"] = func(p *fakeProc) int { fmt.Fprintln(p.Stdout, "state="+p.Layer["/work/state"]); return 0 }
	step := func(cpus string, mem int64, cmd ...string) *policy.Decision {
		return decideFor(t, lifecyclePolicy, policy.Request{Image: "alpine:3.20", Name: "w", Cmd: cmd},
			policy.Job{Scheduler: "slurm", ID: "7", Step: "0", Node: "n1", CPUs: cpus, MemoryBytes: mem})
	}
	run := func(d *policy.Decision) (string, string) {
		t.Helper()
		out := newLineWriter()
		if _, err := Run(context.Background(), eng, d, IO{Stdout: out, Stderr: newLineWriter()}, opts); err != nil {
			t.Fatal(err)
		}
		live := eng.Live()
		if len(live) != 1 {
			t.Fatalf("%d containers, want the job's one", len(live))
		}
		h := live[0].Req.HostConfig
		return out.all(), fmt.Sprintf("%s/%d", h.Resources.CpusetCpus, h.Resources.Memory>>20)
	}
	if _, alloc := run(step("0-1", 2<<30, "write", "one")); alloc != "0-1/2048" {
		t.Fatalf("first step's container: %s", alloc)
	}
	if out, _ := run(step("0-1", 2<<30, "read")); out != "state=one" || eng.Count("ContainerCommit") != 0 {
		t.Errorf("same allocation: %q, %d commits; want it run as it is", out, eng.Count("ContainerCommit"))
	}
	for i, c := range []struct {
		cpus string
		mem  int64
	}{{"1", 2 << 30}, {"0-1", 1 << 30}, {"2-3", 2 << 30}} {
		out, alloc := run(step(c.cpus, c.mem, "read"))
		if want := fmt.Sprintf("%s/%d", c.cpus, c.mem>>20); alloc != want || out != "state=one" {
			t.Errorf("step with %s: container %s, output %q; want %s and the first step's files", want, alloc, out, want)
		}
		if n := eng.Count("ContainerCommit"); n != i+1 {
			t.Errorf("%d commits after %d changes", n, i+1)
		}
	}
	// Each recreation committed on top of the last: the job's images.
	committed := 0
	for id, img := range eng.Images {
		if id == img.ID && img.Labels[policy.LabelCommitted] == "1" {
			committed++
			if img.Labels[policy.LabelJob] != "7" || img.Labels[policy.LabelUID] != "1002" {
				t.Errorf("committed image labels %v", img.Labels)
			}
		}
	}
	if committed != 3 {
		t.Errorf("%d committed images, want one per recreation", committed)
	}
	// gc's view: the node's committed images, with their job.
	if cs, err := ListCommitted(context.Background(), eng, "n1"); err != nil || len(cs) != 3 || cs[0].Job != "7" || cs[0].Scheduler != "slurm" {
		t.Errorf("ListCommitted = %+v, %v", cs, err)
	}
	if cs, _ := ListCommitted(context.Background(), eng, "n2"); len(cs) != 0 {
		t.Errorf("another node's list: %+v", cs)
	}
	// The epilogue's part: another job's or node's commit stays.
	if removed, err := RemoveCommitted(context.Background(), eng, "slurm", "8", "n1"); err != nil || len(removed) != 0 {
		t.Errorf("another job's removal took %v, %v", removed, err)
	}
	if removed, err := RemoveCommitted(context.Background(), eng, "slurm", "7", "n1"); err != nil || len(removed) != 3 {
		t.Errorf("RemoveCommitted = %v, %v; want the job's image", removed, err)
	}
	for _, c := range eng.Live() {
		eng.ContainerRemove(context.Background(), c.ID, moby.ContainerRemoveOptions{Force: true})
	}
}

// TestKernelCountsTheOOMKill: on cgroup v2 the kernel's own count of OOM
// kills above the container (memory.events, hierarchical) tells an OOM
// kill the engine has not told, without waiting for its event; a count
// that did not move, or none at all (cgroup v1), leaves it to the engine.
func TestKernelCountsTheOOMKill(t *testing.T) {
	oldSettle := oomSettle
	oomSettle = []time.Duration{time.Millisecond, time.Millisecond}
	defer func() { oomSettle = oldSettle }()
	eng, d, _ := lifecycle(t, policy.Request{Cmd: []string{"hog"}})
	eng.Program["hog"] = func(*fakeProc) int { return 137 }
	c, err := eng.ContainerCreate(context.Background(), moby.ContainerCreateOptions{Config: &container.Config{Image: "docker.io/library/alpine:3.20", Cmd: []string{"hog"}}, HostConfig: &container.HostConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.ContainerRemove(context.Background(), c.ID, moby.ContainerRemoveOptions{Force: true})
	w := eng.ContainerWait(context.Background(), c.ID, moby.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	eng.ContainerStart(context.Background(), c.ID, moby.ContainerStartOptions{})
	<-w.Result

	events := filepath.Join(t.TempDir(), "memory.events")
	write := func(n int) {
		os.WriteFile(events, []byte(fmt.Sprintf("low 0\nhigh 0\nmax 12\noom 1\noom_kill %d\noom_group_kill 0\n", n)), 0o644)
	}
	write(2)
	watch := watchOOM(events)
	if oom, _, _ := signalledWhy(eng, c.ID, d, watch); oom {
		t.Errorf("a count that did not move told an OOM kill")
	}
	write(3)
	if oom, limit, _ := signalledWhy(eng, c.ID, d, watch); !oom || limit != memoryLimit(d) {
		t.Errorf("the kernel's count moved: oom %v limit %d; want the kill, with the decision's limit", oom, limit)
	}
	if oom, _, _ := signalledWhy(eng, c.ID, d, watchOOM(filepath.Join(t.TempDir(), "none"))); oom {
		t.Errorf("no count (cgroup v1) told an OOM kill the engine did not")
	}
	// The launch's own accounting cgroup counts from zero.
	oldRoot := cgroupRoot
	cgroupRoot = t.TempDir()
	defer func() { cgroupRoot = oldRoot }()
	acct := &acctParent{path: "containerjob/uid_1002/1-ab"}
	os.MkdirAll(filepath.Join(cgroupRoot, acct.path), 0o755)
	os.WriteFile(filepath.Join(cgroupRoot, acct.path, "memory.events"), []byte("oom_kill 1\n"), 0o644)
	if !acct.oomWatch(nil).fired() {
		t.Errorf("a kill in the launch's own accounting cgroup was not counted")
	}
	if (&acctParent{path: "containerjob/uid_1002/2-cd"}).oomWatch(nil).fired() {
		t.Errorf("an accounting cgroup without memory.events (cgroup v1) counted a kill")
	}
}

// TestStepEndSeesWhatALaunchLeft: a launch that removed its container
// leaves no mark for its step's end (which then starts no cleanup), while
// one that failed or could not remove its container leaves one; the job
// stays marked for its Epilog either way.
func TestStepEndSeesWhatALaunchLeft(t *testing.T) {
	for _, c := range []struct {
		name     string
		setup    func(e *fakeEngine)
		wantLive bool
	}{
		{"the command fails, the container is removed", func(e *fakeEngine) {}, false},
		{"the removal fails", func(e *fakeEngine) { e.RemoveErr = errors.New("device or resource busy") }, true},
		{"the start fails", func(e *fakeEngine) { e.StartErr = errors.New("runc: cgroup gone") }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"work"}})
			eng.Program["work"] = func(p *fakeProc) int { return 3 }
			c.setup(eng)
			var warned []string
			opts.Notify = func(n Notice) {
				if n.Kind == NoticeWarning {
					warned = append(warned, n.Text)
				}
			}
			if StepLive("slurm", "7", "0") {
				t.Fatal("a mark before the launch")
			}
			Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
			if got := StepLive("slurm", "7", "0"); got != c.wantLive {
				t.Errorf("a launch mark left: %v, want %v (warnings %q)", got, c.wantLive, warned)
			}
			if StepLive("slurm", "7", "1") || StepLive("slurm", "7", "") {
				t.Error("another step of the job has a mark")
			}
			eng.RemoveErr = nil // the step's cleanup
			for _, c := range eng.Live() {
				eng.ContainerRemove(context.Background(), c.ID, moby.ContainerRemoveOptions{Force: true})
			}
			if !JobMarked("slurm", "7") {
				t.Error("the job has no mark for its Epilog")
			}
			// The job's Epilog, its last node's: nothing of the job is left.
			if err := DropJobMark("slurm", "7", "n1"); err != nil {
				t.Fatal(err)
			}
			if JobMarked("slurm", "7") {
				t.Error("the job's mark directory is left after its Epilog")
			}
		})
	}
}

// TestAJobWithoutStepsIsMarkedToo: a PBS job has no steps; its launch
// writes and removes its mark all the same, and is never refused for it.
func TestAJobWithoutStepsIsMarkedToo(t *testing.T) {
	eng, _, opts := lifecycle(t, policy.Request{})
	d := decideFor(t, lifecyclePolicy, policy.Request{Image: "alpine:3.20", Cmd: []string{"true"}},
		policy.Job{Scheduler: "pbs", ID: "8.server", Node: "n1"})
	res, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if !JobMarked("pbs", "8.server") {
		t.Error("the job has no mark for its epilogue")
	}
	if StepLive("pbs", "8.server", "") {
		t.Error("the launch ended cleanly, yet its mark is left")
	}
}
