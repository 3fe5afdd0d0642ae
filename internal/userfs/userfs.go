// Package userfs looks at the host filesystem with the caller's identity, so
// that the kernel, not containerjob, decides what the caller may reach
// (ACLs, root-squashed NFS and 0700 parents included).
package userfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Identity is the filesystem identity to assume.
type Identity struct {
	UID    uint32
	GID    uint32
	Groups []uint32
}

// As runs fn on a fresh OS thread whose filesystem uid, gid and groups are
// id's. The raw syscalls change only that thread (Go's own Setgroups would
// change every thread), and the thread is never returned to the scheduler:
// the goroutine exits while locked, so the runtime destroys the thread and a
// changed identity cannot leak into other work.
func As(id Identity, fn func() error) error {
	if !privileged() {
		// Not privileged: we already are the caller.
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := assume(id); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// privileged and assume are variables for tests: the thread a caller's
// work runs on can be tested without root.
var (
	privileged = func() bool { return os.Geteuid() == 0 }
	assume     = become
)

func become(id Identity) error {
	groups := id.Groups
	if groups == nil {
		groups = []uint32{}
	}
	var ptr unsafe.Pointer
	if len(groups) > 0 {
		ptr = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(ptr), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	unix.RawSyscall(unix.SYS_SETFSGID, uintptr(id.GID), 0, 0)
	unix.RawSyscall(unix.SYS_SETFSUID, uintptr(id.UID), 0, 0)
	// setfsuid reports no errors; asking with an invalid id returns the
	// current one without changing it.
	cur, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
	curg, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
	if uint32(cur) != id.UID || uint32(curg) != id.GID {
		return errors.New("could not assume the caller's filesystem identity")
	}
	return nil
}

// TimeoutError: a file of the caller's did not answer within the bound (a
// hung NFS home, say).
type TimeoutError struct {
	Path  string
	After time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s did not answer within %s", e.Path, e.After)
}

// ReadRegular opens path as id without ever waiting on it (O_NONBLOCK: a
// FIFO the caller owns would wait for a writer the caller controls), with
// the extra open flags given (O_NOFOLLOW, say), refuses anything but a
// regular file, and runs fn on it as id, all within timeout. After a
// timeout the reading thread is left to the process's exit: it holds
// nothing but its own descriptor. The open's error is an *os.PathError.
func ReadRegular(id Identity, path string, flags int, timeout time.Duration, fn func(*os.File) error) error {
	done := make(chan error, 1)
	go func() {
		done <- As(id, func() error {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY|flags, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: path, Err: err}
			}
			f := os.NewFile(uintptr(fd), path)
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("it is not a regular file (%s)", fi.Mode().Type())
			}
			return fn(f)
		})
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return &TimeoutError{Path: path, After: timeout}
	}
}

// maxPathLen bounds a user-supplied path.
const maxPathLen = 4096

// Resolve makes path absolute (relative to cwd), follows every symbolic
// link, and proves the result can be opened for reading. It must run inside
// As so that each step is taken with the caller's permissions.
func Resolve(path, cwd string) (string, error) {
	if path == "" || len(path) > maxPathLen || strings.ContainsRune(path, 0) {
		return "", fmt.Errorf("path %q is empty, too long, or contains NUL", truncate(path))
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(cwd, path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("path %q cannot be resolved as the caller: %w", path, unwrapPathErr(err))
	}
	if !filepath.IsAbs(real) {
		return "", fmt.Errorf("path %q resolved to the relative path %q", path, real)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("path %q cannot be accessed as the caller: %w", path, unwrapPathErr(err))
	}
	switch {
	case fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0:
		return "", fmt.Errorf("path %q is a device file; devices are given only from the job's allocation", path)
	case !fi.IsDir() && !fi.Mode().IsRegular():
		// Sockets and FIFOs: the search permission on every parent was
		// proven by the resolution; opening them could block or act.
		return real, nil
	}
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if fi.IsDir() {
		flags |= unix.O_DIRECTORY
	}
	fd, err := unix.Open(real, flags, 0)
	if err != nil {
		return "", fmt.Errorf("path %q cannot be opened as the caller: %w", path, err)
	}
	unix.Close(fd)
	return real, nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func truncate(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}
