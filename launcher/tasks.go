package launcher

// A shared step container's tasks, and a named container's, without the
// engine's exec (issue 29, item 2): the container's PID 1 is
// containerjob-init --serve, handed at
// start a listening socket of root's on the host (TaskSocketDir); each of
// the step's tasks on the node asks it to fork and exec the task there
// (internal/tasks), with the task's own stdin, stdout and stderr. A runc
// exec per task (about 0.3 s of CPU each here, 16 at once on 2 CPUs)
// becomes a fork in the container. The task is a child of the container's
// PID 1: its namespaces, cgroup, seccomp profile, capabilities and
// no_new_privs are the container's, as an exec's are.
//
// Where any of it is missing (no containerjob-init, a container made by an
// earlier version, one started again after a stop, a terminal), the task
// takes the engine's exec as before.

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/tasks"
	"github.com/containerjob/containerjob/policy"
)

// TaskSocketDir holds the task sockets of the node's shared step and
// named containers, one per container, named after it; root's, 0700.
var TaskSocketDir = "/run/containerjob/tasks"

// taskAnswer bounds connecting to a step container's server and its
// answer that a task started (or why not).
var taskAnswer = 30 * time.Second

func taskSocket(name string) string { return filepath.Join(TaskSocketDir, name+".sock") }

// taskServer is the keeper's side of a new step container: the host's
// listening socket, handed to the container once it runs.
type taskServer struct {
	path string
	ln   *net.UnixListener
	ho   *handoff
}

// serveTasks points the keeper's request at containerjob-init --serve
// where it can serve the step's tasks, and returns what hands it its
// socket once started (nil where the keeper stays the shell).
func serveTasks(d *policy.Decision, req *client.ContainerCreateOptions, stage *Stage, opts *Options) (*taskServer, error) {
	if !d.StepShared && !d.Persist || !initInstalled() {
		return nil, nil
	}
	if err := privateRoot(TaskSocketDir); err != nil {
		return nil, nil // the engine's exec still serves
	}
	path := taskSocket(d.Name)
	os.Remove(path) // a container of this name made before, gone now
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil
	}
	ln.SetUnlinkOnClose(false)
	fd, err := listenerFd(ln)
	if err != nil {
		ln.Close()
		os.Remove(path)
		return nil, nil
	}
	stageLn, sock, err := stage.AddSocket("handoff.sock", handoffTarget)
	if err != nil {
		closeAll([]int{fd})
		ln.Close()
		os.Remove(path)
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	req.Config.Entrypoint = []string{initTarget, "--serve"}
	req.Config.Cmd = nil
	return &taskServer{path: path, ln: ln, ho: bindInit(d, req, stageLn, sock, []int{fd}, 's', opts)}, nil
}

func listenerFd(ln *net.UnixListener) (int, error) {
	f, err := ln.File() // a copy, blocking
	if err != nil {
		return -1, err
	}
	defer f.Close()
	return dupFile(f)
}

// handOver gives the started keeper its socket; a keeper that does not
// take it within taskAnswer leaves its tasks to the engine's exec.
func (s *taskServer) handOver(started bool) {
	if s == nil {
		return
	}
	defer s.ln.Close() // the keeper holds its own copy from here
	if !started {
		s.ho.close()
		os.Remove(s.path)
		return
	}
	s.ho.start()
	select {
	case err := <-s.ho.result:
		if err == nil {
			return
		}
	case <-time.After(taskAnswer):
		s.ho.close()
	}
	os.Remove(s.path)
}

// runTask runs the step's task through its container's server; used is
// false where there is none to ask (or the task's descriptors cannot be
// handed over), and the caller takes the engine's exec.
func runTask(d *policy.Decision, cmd, env []string, cwd string, stdio IO, opts Options) (code int, started, ended time.Time, used bool, err error) {
	path := taskSocket(d.Name)
	if d.Tty {
		return 0, started, ended, false, nil
	}
	if _, err := os.Lstat(path); err != nil {
		return 0, started, ended, false, nil
	}
	fds, kind, why := handoffFds(d, stdio)
	if why != "" {
		return 0, started, ended, false, nil
	}
	task, err := tasks.Spawn(path, tasks.Request{Argv: cmd, Env: env, Cwd: cwd, Stdin: kind == 'i', CPUs: ownCPUs()}, fds, taskAnswer)
	closeAll(fds)
	var se *tasks.StartError
	switch {
	case err == nil:
	case errors.As(err, &se):
		opts.taskStarted()
		return 0, started, ended, true, startError(errors.New(se.Msg), "")
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return 0, started, ended, false, nil // a keeper without its server
	default:
		opts.taskStarted()
		return 0, started, ended, true, failf(ExitLaunchFailed, "starting the task in the step's container failed: %v", err)
	}
	defer task.Close()
	opts.taskStarted()
	started = time.Now()
	code, err = awaitTask(task, stdio, opts)
	return code, started, time.Now(), true, err
}

// taskStarted: the task is registered (or will not be): the step's join
// lock may go.
func (o Options) taskStarted() {
	if o.execCreated != nil {
		o.execCreated()
	}
}

// awaitTask relays the caller's signals to the task (SIGTERM, then
// SIGKILL after the grace period, as for an exec) and stops it when the
// caller's output has no reader any more, until it ends.
func awaitTask(task *tasks.Task, stdio IO, opts Options) (int, error) {
	sigc := opts.Signals
	if sigc == nil {
		c := make(chan os.Signal, 16)
		notify(c)
		defer stopNotify(c)
		sigc = c
	}
	watch := &handoff{}
	watch.watchReaders(stdio)
	defer watch.stopWatching()
	type exit struct {
		code int
		err  error
	}
	done := make(chan exit, 1)
	go func() {
		code, err := task.Wait()
		done <- exit{code, err}
	}()
	var kill <-chan time.Time
	for {
		select {
		case e := <-done:
			if e.err != nil {
				return 0, failf(ExitLaunchFailed, "%v", e.err)
			}
			if watch.readerLost() {
				return e.code, errBrokenPipe()
			}
			return e.code, nil
		case <-watch.readerGone():
			task.Signal(syscall.SIGKILL)
			return 0, errBrokenPipe()
		case <-kill:
			task.Signal(syscall.SIGKILL)
			kill = nil
		case s := <-sigc:
			sig, ok := s.(syscall.Signal)
			if !ok || sig == syscall.SIGWINCH {
				continue
			}
			if err := task.Signal(sig); err != nil {
				opts.notify(NoticeWarning, "forwarding %s failed: %v", unixSignalName(sig), err)
			}
			if sig == syscall.SIGTERM && kill == nil {
				kill = time.After(opts.StopGrace)
			}
		}
	}
}

// stepTasksRunning says whether the step container's server still runs
// a task (false where it has no server, or none that answers).
func stepTasksRunning(name string) bool {
	n, err := tasks.Count(taskSocket(name), 5*time.Second)
	if err != nil {
		// No server (none made, or it went with its container): the
		// engine's execs alone tell. One that does not answer is taken
		// for busy: the step's end removes the container anyway.
		return !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT)
	}
	return n > 0
}

// cleanStaleTaskSockets removes the sockets whose server is gone (their
// container ended), for the epilogue and gc.
func cleanStaleTaskSockets() {
	entries, err := os.ReadDir(TaskSocketDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(TaskSocketDir, e.Name())
		c, err := net.DialTimeout("unix", p, 100*time.Millisecond)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(p)
		}
	}
}

// ownCPUs is this process's CPU affinity, which slurmstepd set for the
// task (--cpu-bind) and sudo kept: the task in the container gets it too.
// None where it cannot be read.
func ownCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus
}
