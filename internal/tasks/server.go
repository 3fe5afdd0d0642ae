package tasks

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// server is containerjob-init --serve: the tasks it started, by pid.
type server struct {
	mu      sync.Mutex
	running map[int]chan int
}

// Serve answers the connections on ln for as long as it is open. It
// must be its process's only waiter for children (the container's PID
// 1): it reaps every child, its tasks and orphans alike.
func Serve(ln *net.UnixListener) error {
	s := &server{running: map[int]chan int{}}
	go s.reap()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(conn)
	}
}

// Reap only reaps: the keeper of a container whose server has no
// socket (started again after a stop), for as long as the process runs.
func Reap() {
	s := &server{running: map[int]chan int{}}
	s.reap()
}

// reap collects every child that ended, on SIGCHLD (and once a second,
// should one be missed), under the lock that spawn holds from fork to
// registration: no task ends unseen.
func (s *server) reap() {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			if ch, ok := s.running[pid]; ok {
				ch <- statusCode(ws)
				delete(s.running, pid)
			}
		}
		s.mu.Unlock()
		select {
		case <-sigc:
		case <-tick.C:
		}
	}
}

// statusCode is the exit code the engine's exec reports: the status, or
// 128 and the signal.
func statusCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

func (s *server) handle(conn *net.UnixConn) {
	defer conn.Close()
	req, fds, err := readRequest(conn)
	if err != nil {
		closeFds(fds)
		fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
		return
	}
	if req.Op == "count" {
		closeFds(fds)
		fmt.Fprintf(conn, "count %d\n", s.count())
		return
	}
	if req.Op != "spawn" {
		closeFds(fds)
		fmt.Fprintf(conn, "error unknown op %q\n", oneLine(req.Op))
		return
	}
	pid, done, err := s.spawn(req, fds)
	if err != nil {
		fmt.Fprintf(conn, "error %s\n", oneLine(err.Error()))
		return
	}
	if _, err := conn.Write([]byte("started\n")); err != nil {
		unix.Kill(-pid, unix.SIGKILL)
		return
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(conn)
		for {
			l, err := readLine(r)
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	for {
		select {
		case code := <-done:
			fmt.Fprintf(conn, "exit %d\n", code)
			return
		case l, ok := <-lines:
			if !ok {
				// The task's containerjob went away: so does its task, with
				// every process it started (a pipeline, a backgrounded
				// helper), as Slurm's step cgroup would take them.
				unix.Kill(-pid, unix.SIGKILL)
				lines = nil
				continue
			}
			if sig, err := parseCode(l, "signal", 64); err == nil && sig > 0 {
				// To the task's process group: Slurm signals every process
				// of a step, not its first one.
				unix.Kill(-pid, unix.Signal(sig))
			}
		}
	}
}

// spawn starts the task; its descriptors are closed here either way.
func (s *server) spawn(req Request, fds []int) (int, chan int, error) {
	defer closeFds(fds)
	want := 2
	if req.Stdin {
		want = 3
	}
	if len(fds) != want || len(req.Argv) == 0 || req.Argv[0] == "" {
		return 0, nil, fmt.Errorf("a malformed task: %d descriptors (want %d), %d arguments", len(fds), want, len(req.Argv))
	}
	files := make([]uintptr, 0, 3)
	if !req.Stdin {
		null, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, nil, err
		}
		defer unix.Close(null)
		files = append(files, uintptr(null))
	}
	for _, fd := range fds {
		files = append(files, uintptr(fd))
	}
	env := mergeEnv(os.Environ(), req.Env)
	if req.Cwd != "" {
		if fi, err := os.Stat(req.Cwd); err != nil || !fi.IsDir() {
			if err == nil {
				err = syscall.ENOTDIR
			}
			return 0, nil, fmt.Errorf("chdir to cwd (%q) set in the task failed: %v", req.Cwd, unwrapPathError(err))
		}
	}
	path, err := lookPath(req.Argv[0], env)
	if err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	restore := bindThread(req.CPUs)
	// Each task leads a process group of its own, which its signals and
	// its end go to (handle).
	pid, err := syscall.ForkExec(path, req.Argv, &syscall.ProcAttr{Dir: req.Cwd, Env: env, Files: files,
		Sys: &syscall.SysProcAttr{Setpgid: true}})
	restore()
	if err != nil {
		return 0, nil, fmt.Errorf("exec: %q: %v", req.Argv[0], err)
	}
	done := make(chan int, 1)
	s.running[pid] = done
	return pid, done, nil
}

// bindThread gives the calling thread the CPUs cpus until restore, so
// that the task forked from it starts bound (the binding is inherited
// through fork and exec; set afterwards, the task's first instructions
// would run unbound). Within the container's cpuset; a binding it cannot
// take leaves the task on the container's CPUs, as an exec's was.
func bindThread(cpus []int) (restore func()) {
	if len(cpus) == 0 {
		return func() {}
	}
	var set, old unix.CPUSet
	for _, c := range cpus {
		if c >= 0 && c < 1024 {
			set.Set(c)
		}
	}
	runtime.LockOSThread()
	if unix.SchedGetaffinity(0, &old) != nil || unix.SchedSetaffinity(0, &set) != nil {
		runtime.UnlockOSThread()
		return func() {}
	}
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// lookPath finds file as the engine's exec would: a name with a slash
// as it is, else the first executable regular file of that name in the
// task's PATH.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}

// mergeEnv is base with over's variables set over it, in base's order
// and then over's: the engine's exec merges its Env over the container's
// the same way.
func mergeEnv(base, over []string) []string {
	key := func(kv string) string { k, _, _ := strings.Cut(kv, "="); return k }
	overKeys := map[string]string{}
	var order []string
	for _, kv := range over {
		k := key(kv)
		if _, seen := overKeys[k]; !seen {
			order = append(order, k)
		}
		overKeys[k] = kv
	}
	out := make([]string, 0, len(base)+len(over))
	used := map[string]bool{}
	for _, kv := range base {
		k := key(kv)
		if v, ok := overKeys[k]; ok {
			if !used[k] {
				out = append(out, v)
				used[k] = true
			}
			continue
		}
		out = append(out, kv)
	}
	for _, k := range order {
		if !used[k] {
			out = append(out, overKeys[k])
		}
	}
	return out
}

// readRequest reads one length-prefixed request and the descriptors
// that came with it.
func readRequest(conn *net.UnixConn) (Request, []int, error) {
	var req Request
	var fds []int
	buf := make([]byte, 0, 4096)
	chunk := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	need := 4
	for len(buf) < need {
		n, oobn, _, _, err := conn.ReadMsgUnix(chunk[:min(len(chunk), need-len(buf))], oob)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, rerr := unix.ParseUnixRights(&m); rerr == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		buf = append(buf, chunk[:n]...)
		if err != nil || n == 0 {
			return req, fds, fmt.Errorf("the request ended early")
		}
		if need == 4 && len(buf) >= 4 {
			size := binary.BigEndian.Uint32(buf[:4])
			if size > maxRequest {
				return req, fds, fmt.Errorf("a request of %d bytes", size)
			}
			need = 4 + int(size)
		}
	}
	if err := json.Unmarshal(buf[4:], &req); err != nil {
		return req, fds, err
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
	return req, fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
