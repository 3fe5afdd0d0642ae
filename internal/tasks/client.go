package tasks

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StartError is the server's word on a task that did not start (the
// command not found or not runnable, its working directory missing), in
// the words of the runtime's own start errors.
type StartError struct{ Msg string }

func (e *StartError) Error() string { return e.Msg }

// Task is a started task, until its exit is read.
type Task struct {
	conn *net.UnixConn
	r    *bufio.Reader
}

// Spawn asks the server at socket to start req with the descriptors fds
// (stdin where req.Stdin, then stdout and stderr), and returns once it
// says the task started. Connecting and the answer are bounded by
// timeout together.
func Spawn(socket string, req Request, fds []int, timeout time.Duration) (*Task, error) {
	req.Op = "spawn"
	conn, err := dial(socket, timeout)
	if err != nil {
		return nil, err
	}
	if err := writeRequest(conn, req, unix.UnixRights(fds...)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("asking the step's container to start the task: %v", err)
	}
	t := &Task{conn: conn, r: bufio.NewReaderSize(conn, maxLine)}
	line, err := readLine(t.r)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("the step's container did not say whether the task started (%v)", err)
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		conn.Close()
		return nil, &StartError{Msg: msg}
	}
	if line != "started" {
		conn.Close()
		return nil, fmt.Errorf("%w: %q", ErrProtocol, truncate(line))
	}
	conn.SetDeadline(time.Time{})
	return t, nil
}

// Signal passes sig to the task.
func (t *Task) Signal(sig syscall.Signal) error {
	t.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := fmt.Fprintf(t.conn, "signal %d\n", int(sig))
	return err
}

// Wait returns the task's exit code once it ended; an error where the
// server went away first (its container ended) or said something else.
func (t *Task) Wait() (int, error) {
	line, err := readLine(t.r)
	if err != nil {
		return 0, fmt.Errorf("the step's container went away while the task ran (%v)", err)
	}
	return parseCode(line, "exit", 255)
}

// Close ends the connection: a task still running is killed.
func (t *Task) Close() { t.conn.Close() }

// Count asks the server how many of its tasks run.
func Count(socket string, timeout time.Duration) (int, error) {
	conn, err := dial(socket, timeout)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := writeRequest(conn, Request{Op: "count"}, nil); err != nil {
		return 0, err
	}
	line, err := readLine(bufio.NewReaderSize(conn, maxLine))
	if err != nil {
		return 0, err
	}
	return parseCode(line, "count", 1<<20)
}

func dial(socket string, timeout time.Duration) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	conn := c.(*net.UnixConn)
	conn.SetDeadline(time.Now().Add(timeout))
	return conn, nil
}
