// Command containerjob-init is the first process of a container whose
// output goes straight to the job's own files (launcher/handoff.go). It is
// bound read-only into the container and runs there as the job's owner,
// with the container's confinement: it takes the job's stdout and stderr
// (and stdin, where the launch forwards it) from containerjob over the
// socket bound next to it, puts them on descriptors 0-2 and execs the
// command, as the runtime would have. The bytes then go from the command
// to the job's file or pipe with no engine, shim or client in between.
//
// It is built static (CGO_ENABLED=0): images bring their own C library, or
// none.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/tasks"
)

// The socket's place in the container (launcher/handoff.go); a variable
// for tests.
var socketPath = "/.containerjob/handoff.sock"

// The exit codes are docker run's.
const (
	exitFailed     = 125
	exitCannotRun  = 126
	exitNotFound   = 127
	maxDescriptors = 3
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--serve" {
		serve()
	}
	if len(os.Args) < 3 || os.Args[1] != "--" {
		fail(-1, exitFailed, "containerjob-init is started by containerjob, as: containerjob-init -- COMMAND [ARG...]")
	}
	argv := os.Args[2:]
	conn, err := take()
	if err != nil {
		fail(-1, exitFailed, "containerjob-init: the job's output could not be taken over: %v", err)
	}
	path, err := exec.LookPath(argv[0])
	if errors.Is(err, exec.ErrDot) {
		err = nil // as runc: a relative PATH entry is the image's choice
	}
	if err != nil {
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, syscall.ENOENT) {
			code = exitNotFound
		}
		fail(conn, code, "%v", err)
	}
	// The socket is close-on-exec: containerjob reads its end (EOF) as
	// the command started, and a message before it as why not.
	err = unix.Exec(path, argv, os.Environ())
	code := exitCannotRun
	if errors.Is(err, syscall.ENOENT) {
		code = exitNotFound
	}
	fail(conn, code, "exec: %q: %v", argv[0], err)
}

// take receives the job's descriptors and puts them in place: one
// message of one byte ('o': stdout and stderr; 'i': stdin as well).
func take() (int, error) {
	conn, kind, fds, err := receive()
	if err != nil {
		return -1, err
	}
	want := map[byte][]int{'o': {1, 2}, 'i': {0, 1, 2}}[kind]
	if want == nil || len(fds) != len(want) {
		return -1, fmt.Errorf("unexpected message (kind %q, %d descriptors)", kind, len(fds))
	}
	for i, fd := range fds {
		// dup3 leaves the copy without close-on-exec: the command keeps it.
		if err := unix.Dup3(fd, want[i], 0); err != nil {
			return -1, err
		}
	}
	for _, fd := range fds {
		if fd > 2 {
			unix.Close(fd)
		}
	}
	return conn, nil
}

// receive connects to the launch's socket and reads its one message: a
// kind byte and its descriptors (close-on-exec here).
func receive() (conn int, kind byte, fds []int, err error) {
	conn, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, nil, err
	}
	if err := unix.Connect(conn, &unix.SockaddrUnix{Name: socketPath}); err != nil {
		unix.Close(conn)
		return -1, 0, nil, fmt.Errorf("connecting to %s: %v", socketPath, err)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*maxDescriptors))
	n, oobn, _, _, err := unix.Recvmsg(conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		unix.Close(conn)
		return -1, 0, nil, err
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if n != 1 {
		unix.Close(conn)
		return -1, 0, fds, fmt.Errorf("unexpected message (%d bytes)", n)
	}
	return conn, buf[0], fds, nil
}

// serve is the keeper of a shared step container (containerjob-init
// --serve, its PID 1): it takes the listening socket of the step's tasks
// ('s', one descriptor) and starts each task the node's containerjob
// asks for (internal/tasks); without one (the container started again
// after a stop), it only reaps. SIGTERM, SIGINT and SIGHUP end it, and
// with it the container, as the shell keeper's trap did.
func serve() {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-sigc
		os.Exit(0)
	}()
	conn, kind, fds, err := receive()
	if err == nil && kind == 's' && len(fds) == 1 {
		unix.Close(conn)
		f := os.NewFile(uintptr(fds[0]), "tasks")
		if l, err := net.FileListener(f); err == nil {
			if ln, ok := l.(*net.UnixListener); ok {
				f.Close()
				tasks.Serve(ln)
			}
		}
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	tasks.Reap()
}

// fail reports why the command did not start: to containerjob over the
// socket where there is one, else on the container's own stderr.
func fail(conn, code int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if conn < 0 {
		fmt.Fprintln(os.Stderr, msg)
	} else {
		unix.Write(conn, []byte(msg))
	}
	os.Exit(code)
}
