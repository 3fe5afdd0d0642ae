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
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
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
	conn, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(conn, &unix.SockaddrUnix{Name: socketPath}); err != nil {
		return -1, fmt.Errorf("connecting to %s: %v", socketPath, err)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4*maxDescriptors))
	n, oobn, _, _, err := unix.Recvmsg(conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, err
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	want := map[byte][]int{'o': {1, 2}, 'i': {0, 1, 2}}[buf[0]]
	if n != 1 || want == nil || len(fds) != len(want) {
		return -1, fmt.Errorf("unexpected message (%d bytes, %d descriptors)", n, len(fds))
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
