// Package nodefile writes and locks the node's own state files (root's,
// under /run or a directory the admin names): a file is replaced whole, by
// a temporary file of the writer's own renamed over it, so a reader sees
// the old content or the new, never half, and concurrent writers never
// write into each other's; a lock is waited for only up to a bound.
package nodefile

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Write replaces path with data (mode for the new file). The temporary
// file is the writer's own (its pid in the name), made afresh and never
// through a symlink; it is removed when anything fails.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp := path + "." + strconv.Itoa(os.Getpid()) + ".tmp"
	os.Remove(tmp) // left by a writer of the same pid that died
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Lock takes an exclusive lock on the file path (made 0600, never through
// a symlink), trying every 5 ms for up to bound. The error is the open's
// (*os.PathError), or the lock's: syscall.EWOULDBLOCK when another holder
// kept it past the bound. unlock lets go.
func Lock(path string, bound time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(bound)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing lets go of the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
