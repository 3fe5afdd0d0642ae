package launcher

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerjob/containerjob/internal/tasks"
	"github.com/containerjob/containerjob/policy"
)

// serveTasksForTest is the test binary as a step container's server, on
// the listening socket passed as descriptor 3 (the reaper it runs must
// be its process's only one).
func serveTasksForTest() {
	l, err := net.FileListener(os.NewFile(3, "tasks"))
	if err != nil {
		os.Exit(2)
	}
	tasks.Serve(l.(*net.UnixListener))
}

// stepServer starts a server for the step container of decision d, at
// its socket under TaskSocketDir.
func stepServer(t *testing.T) *policy.Decision {
	t.Helper()
	d := &policy.Decision{Name: "cj-step-" + strings.ReplaceAll(t.Name(), "/", "-"), StepShared: true,
		Spec: specs.Spec{Process: &specs.Process{User: specs.User{UID: uint32(os.Getuid())}}}}
	if err := privateRoot(TaskSocketDir); err != nil {
		t.Fatal(err)
	}
	path := taskSocket(d.Name)
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "LAUNCHER_TEST_TASK_SERVER=1")
	c.ExtraFiles = []*os.File{f}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { c.Process.Kill(); c.Wait(); os.Remove(path) })
	return d
}

func taskPipes(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// A task of a shared step runs through its container's server: its output
// reaches the caller's pipe itself, its exit code comes back, and the step
// counts it while it runs.
func TestRunTaskThroughTheServer(t *testing.T) {
	d := stepServer(t)
	r, w := taskPipes(t)
	registered := false
	opts := Options{execCreated: func() { registered = true }}
	done := make(chan error, 1)
	var code int
	go func() {
		var used bool
		var err error
		code, _, _, used, err = runTask(d, []string{"sh", "-c", "echo from the task; sleep 1; exit 4"}, []string{"PATH=/usr/bin:/bin"}, "/", IO{Stdout: w, Stderr: w}, opts)
		if !used {
			err = errors.New("the server was not used")
		}
		done <- err
	}()
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if string(buf[:n]) != "from the task\n" {
		t.Fatalf("the caller's pipe has %q", buf[:n])
	}
	if !stepTasksRunning(d.Name) {
		t.Error("the step's running task is not counted")
	}
	if err := <-done; err != nil || code != 4 || !registered {
		t.Fatalf("exit %d, %v, registered %v; want 4", code, err, registered)
	}
	if stepTasksRunning(d.Name) {
		t.Error("a task counted after it ended")
	}
}

// A command that is not there is the runtime's start error (127); a
// task is signalled as an exec is (SIGTERM: 143).
func TestRunTaskErrorsAndSignals(t *testing.T) {
	d := stepServer(t)
	_, w := taskPipes(t)
	_, _, _, used, err := runTask(d, []string{"no-such-command"}, []string{"PATH=/usr/bin:/bin"}, "/", IO{Stdout: w, Stderr: w}, Options{})
	var lerr *Error
	if !used || !errors.As(err, &lerr) || lerr.Code != ExitCommandMissing {
		t.Errorf("a missing command: used %v, %v; want exit %d", used, err, ExitCommandMissing)
	}
	sigc := make(chan os.Signal, 1)
	sigc <- syscall.SIGTERM
	code, _, _, used, err := runTask(d, []string{"sleep", "30"}, []string{"PATH=/usr/bin:/bin"}, "/", IO{Stdout: w, Stderr: w}, Options{Signals: sigc, StopGrace: 10 * time.Second})
	if !used || err != nil || code != 128+int(syscall.SIGTERM) {
		t.Errorf("SIGTERM: used %v, exit %d, %v; want %d", used, code, err, 128+int(syscall.SIGTERM))
	}
}

// A caller whose output has no reader any more stops the task with the
// broken-pipe line (141).
func TestRunTaskBrokenPipe(t *testing.T) {
	d := stepServer(t)
	r, w := taskPipes(t)
	r.Close()
	_, _, _, used, err := runTask(d, []string{"sleep", "30"}, []string{"PATH=/usr/bin:/bin"}, "/", IO{Stdout: w, Stderr: w}, Options{})
	var lerr *Error
	if !used || !errors.As(err, &lerr) || lerr.Code != ExitBrokenPipe {
		t.Fatalf("used %v, %v; want the broken-pipe error", used, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for stepTasksRunning(d.Name) {
		if time.Now().After(deadline) {
			t.Fatal("the task still runs after its caller's reader went")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Without a server (no socket, or one nobody listens on), a terminal, or
// descriptors that cannot be handed over, the engine's exec serves.
func TestRunTaskFallsBack(t *testing.T) {
	_, w := taskPipes(t)
	d := &policy.Decision{Name: "cj-no-server", StepShared: true}
	if _, _, _, used, _ := runTask(d, []string{"true"}, nil, "/", IO{Stdout: w, Stderr: w}, Options{}); used {
		t.Error("used without a socket")
	}
	d = stepServer(t)
	if _, _, _, used, _ := runTask(d, []string{"true"}, nil, "/", IO{Stdout: io.Discard, Stderr: w}, Options{}); used {
		t.Error("used with a stdout that is not a file")
	}
	tty := *d
	tty.Tty = true
	if _, _, _, used, _ := runTask(&tty, []string{"true"}, nil, "/", IO{Stdout: w, Stderr: w}, Options{}); used {
		t.Error("used for a terminal")
	}
	// A socket nobody listens on any more: the container is gone.
	stale := &policy.Decision{Name: "cj-stale", StepShared: true}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: taskSocket(stale.Name), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, _, _, used, _ := runTask(stale, []string{"true"}, nil, "/", IO{Stdout: w, Stderr: w}, Options{}); used {
		t.Error("used with a stale socket")
	}
	if stepTasksRunning(stale.Name) {
		t.Error("a stale socket counts as tasks running")
	}
	cleanStaleTaskSockets()
	if _, err := os.Lstat(taskSocket(stale.Name)); err == nil {
		t.Error("the stale socket was not removed")
	}
	if _, err := os.Lstat(taskSocket(d.Name)); err != nil {
		t.Errorf("the live server's socket was removed: %v", err)
	}
}

// A task that ends while another still joins the step's container (the
// join lock held shared) leaves the last-task check to that one, at
// once: it neither waits for the lock nor looks at the container.
func TestEndStepTaskLeavesTheCheckToAJoiningTask(t *testing.T) {
	old := StepLockDir
	StepLockDir = t.TempDir()
	defer func() { StepLockDir = old }()
	join, _ := containerLocks("cj-step-joining")
	unlock, _, err := takeLock(context.Background(), join, "a joining task", syscall.LOCK_SH, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	done := make(chan struct{})
	go func() {
		endStepTask(nil, "id", "cj-step-joining", Options{}) // a nil engine: never asked
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("endStepTask waited for a joining task's lock")
	}
}
