package tasks

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs the test binary as a server where a test starts it so,
// on the listening socket it passes as descriptor 3.
func TestMain(m *testing.M) {
	if os.Getenv("TASKS_TEST_SERVER") == "1" {
		f := os.NewFile(3, "listener")
		l, err := net.FileListener(f)
		if err != nil {
			os.Exit(2)
		}
		Serve(l.(*net.UnixListener))
		return
	}
	os.Exit(m.Run())
}

// startServer starts a server on a socket of the test's own and returns
// the socket's path.
func startServer(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tasks.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), "TASKS_TEST_SERVER=1", "FROM_SERVER=server", "SHARED=server")
	c.ExtraFiles = []*os.File{f}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return sock
}

type pipes struct{ inR, inW, outR, outW, errR, errW *os.File }

func newPipes(t *testing.T) *pipes {
	t.Helper()
	var p pipes
	var err error
	for _, pair := range []*[2]**os.File{{&p.inR, &p.inW}, {&p.outR, &p.outW}, {&p.errR, &p.errW}} {
		if *pair[0], *pair[1], err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, f := range []*os.File{p.inR, p.inW, p.outR, p.outW, p.errR, p.errW} {
			f.Close()
		}
	})
	return &p
}

// spawn starts argv with the pipes' ends and closes the test's copies of
// the ends the task holds.
func (p *pipes) spawn(t *testing.T, sock string, req Request) (*Task, error) {
	t.Helper()
	fds := []int{int(p.outW.Fd()), int(p.errW.Fd())}
	if req.Stdin {
		fds = append([]int{int(p.inR.Fd())}, fds...)
	}
	task, err := Spawn(sock, req, fds, 10*time.Second)
	p.outW.Close()
	p.errW.Close()
	p.inR.Close()
	return task, err
}

func readAll(f *os.File) string {
	b, _ := io.ReadAll(f)
	return string(b)
}

// A task writes to the descriptors it was sent, reads its stdin, sees the
// container's environment under its own, and its exit code comes back.
func TestSpawnRunsTheTask(t *testing.T) {
	sock := startServer(t)
	p := newPipes(t)
	dir := t.TempDir()
	task, err := p.spawn(t, sock, Request{
		Argv:  []string{"sh", "-c", `read l; echo "out $l $FROM_SERVER $SHARED $FROM_TASK $(pwd)"; echo err >&2; exit 3`},
		Env:   []string{"PATH=/usr/bin:/bin", "SHARED=task", "FROM_TASK=task"},
		Cwd:   dir,
		Stdin: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer task.Close()
	p.inW.WriteString("hello\n")
	p.inW.Close()
	code, err := task.Wait()
	if err != nil || code != 3 {
		t.Fatalf("exit %d, %v; want 3", code, err)
	}
	if got, want := readAll(p.outR), "out hello server task task "+dir+"\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got := readAll(p.errR); got != "err\n" {
		t.Errorf("stderr %q", got)
	}
}

// Without stdin the task reads /dev/null.
func TestSpawnWithoutStdin(t *testing.T) {
	sock := startServer(t)
	p := newPipes(t)
	task, err := p.spawn(t, sock, Request{Argv: []string{"/bin/sh", "-c", "cat; echo done"}})
	if err != nil {
		t.Fatal(err)
	}
	defer task.Close()
	if code, err := task.Wait(); code != 0 || err != nil {
		t.Fatalf("exit %d, %v", code, err)
	}
	if got := readAll(p.outR); got != "done\n" {
		t.Errorf("stdout %q", got)
	}
}

// What did not start is said in the runtime's words.
func TestSpawnStartErrors(t *testing.T) {
	sock := startServer(t)
	notExec := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Argv: []string{"no-such-command"}, Env: []string{"PATH=/usr/bin:/bin"}}, `exec: "no-such-command": executable file not found in $PATH`},
		{Request{Argv: []string{"/no/such/file"}}, "no such file or directory"},
		{Request{Argv: []string{notExec}}, "permission denied"},
		{Request{Argv: []string{"/bin/true"}, Cwd: "/no/such/dir"}, `chdir to cwd ("/no/such/dir") set in the task failed: no such file or directory`},
		{Request{}, "a malformed task"},
	} {
		p := newPipes(t)
		_, err := p.spawn(t, sock, tc.req)
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(se.Msg, tc.want) {
			t.Errorf("%q: %v, want a start error with %q", tc.req.Argv, err, tc.want)
		}
	}
}

// Signals reach the task; a client that goes away takes its task with
// it; the server counts what runs.
func TestSignalsAndTheClientsEnd(t *testing.T) {
	sock := startServer(t)
	p := newPipes(t)
	task, err := p.spawn(t, sock, Request{Argv: []string{"sleep", "30"}, Env: []string{"PATH=/usr/bin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Count(sock, 5*time.Second); n != 1 || err != nil {
		t.Errorf("count %d, %v with one task running", n, err)
	}
	if err := task.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := task.Wait(); code != 128+int(syscall.SIGTERM) || err != nil {
		t.Errorf("exit %d, %v; want %d", code, err, 128+int(syscall.SIGTERM))
	}
	task.Close()

	q := newPipes(t)
	task, err = q.spawn(t, sock, Request{Argv: []string{"sleep", "30"}, Env: []string{"PATH=/usr/bin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	task.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := Count(sock, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks still run 10 s after their client went away", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The task's stdout closed with it: nothing holds the write end.
	q.outR.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.outR.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the killed task's stdout: %v, want its end", err)
	}
}

// TestATasksProcessesGoWithIt: a signal and the client's end reach every
// process of the task (a pipeline here), not only its first: nothing of
// it is left holding the task's output, as Slurm's step would leave none.
func TestATasksProcessesGoWithIt(t *testing.T) {
	sock := startServer(t)
	for _, end := range []string{"signal", "client gone"} {
		p := newPipes(t)
		// "started" is written once both processes of the pipeline run.
		task, err := p.spawn(t, sock, Request{Argv: []string{"sh", "-c", "sleep 30 | (echo started >&2; cat); echo after"}, Env: []string{"PATH=/usr/bin:/bin"}})
		if err != nil {
			t.Fatal(err)
		}
		p.errR.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(p.errR).ReadString('\n'); line != "started\n" {
			t.Fatalf("%s: the task said %q, %v", end, line, err)
		}
		if end == "signal" {
			if err := task.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code, err := task.Wait(); code != 128+int(syscall.SIGTERM) || err != nil {
				t.Errorf("exit %d, %v; want %d", code, err, 128+int(syscall.SIGTERM))
			}
		}
		task.Close()
		p.outR.SetReadDeadline(time.Now().Add(10 * time.Second))
		if out, err := io.ReadAll(p.outR); err != nil || len(out) != 0 {
			t.Errorf("%s: the task's stdout gave %q, %v; want its end, nothing written (no process of the task left)", end, out, err)
		}
	}
}

// A request the server cannot read is refused in one line.
func TestMalformedRequests(t *testing.T) {
	sock := startServer(t)
	for _, raw := range [][]byte{
		{0xff, 0xff, 0xff, 0xff},
		append([]byte{0, 0, 0, 5}, "nope!"...),
		append([]byte{0, 0, 0, 14}, `{"op":"other"}`...),
	} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(raw)
		line, err := readLine(bufio.NewReader(c))
		if err != nil || !strings.HasPrefix(line, "error ") {
			t.Errorf("%q: %q, %v; want an error line", raw, line, err)
		}
		c.Close()
	}
}

// The client holds a hostile server to the protocol.
func TestClientRefusesOtherAnswers(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := []string{"started\nexit 999\n", "started\nexit -1\n", "started\n", "count x\n", strings.Repeat("x", maxLine+10) + "\n"}
	go func() {
		for _, a := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096)) // the request
			c.Write([]byte(a))
			c.Close()
		}
	}()
	for i := 0; i < 3; i++ {
		task, err := Spawn(sock, Request{Argv: []string{"x"}}, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if code, err := task.Wait(); err == nil {
			t.Errorf("answer %q read as exit %d", answers[i], code)
		}
		task.Close()
	}
	if n, err := Count(sock, 5*time.Second); err == nil {
		t.Errorf("count x read as %d", n)
	}
	if _, err := Spawn(sock, Request{Argv: []string{"x"}}, nil, 5*time.Second); err == nil {
		t.Error("a line over the bound was taken")
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2", "PATH=/x"}, []string{"B=3", "C=4", "B=5"})
	if want := []string{"A=1", "B=5", "PATH=/x", "C=4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), nil, 0o755)
	os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	env := []string{"PATH=/nonexistent:" + dir}
	if p, err := lookPath("tool", env); err != nil || p != filepath.Join(dir, "tool") {
		t.Errorf("tool: %q %v", p, err)
	}
	for _, f := range []string{"data", "sub", "missing"} {
		if p, err := lookPath(f, env); err == nil {
			t.Errorf("%s found at %q", f, p)
		}
	}
	if p, _ := lookPath("./rel/x", env); p != "./rel/x" {
		t.Errorf("a name with a slash: %q", p)
	}
	_ = unix.O_RDONLY
}

// A task gets the CPU binding it was sent (its containerjob's, from
// slurmstepd), within what the server may use.
func TestSpawnKeepsTheTasksCPUs(t *testing.T) {
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(0, &own); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for c := 0; c < 1024; c++ {
		if own.IsSet(c) {
			cpu = c
			break
		}
	}
	sock := startServer(t)
	p := newPipes(t)
	task, err := p.spawn(t, sock, Request{Argv: []string{"/bin/sh", "-c", "grep Cpus_allowed_list /proc/self/status"}, CPUs: []int{cpu}})
	if err != nil {
		t.Fatal(err)
	}
	defer task.Close()
	if code, err := task.Wait(); code != 0 || err != nil {
		t.Fatalf("exit %d, %v", code, err)
	}
	if got, want := strings.Fields(readAll(p.outR)), []string{"Cpus_allowed_list:", strconv.Itoa(cpu)}; !reflect.DeepEqual(got, want) {
		t.Errorf("the task's CPUs: %q, want %q", got, want)
	}
}
