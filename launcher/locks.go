package launcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The node's locks are per resource, never per node: one user's launch
// that is slow, stopped or frozen while it holds a lock can delay only
// launches that need the very same thing (their own next container, the
// same step, the same image), and every wait has a bound and says what it
// waits for. The holder ignores job-control stops (cmd's ownResources),
// reads the caller's files before it takes any lock, and never writes to
// the caller's descriptors while it holds one (asyncNotifier).
var (
	// LaunchLockDir holds one lock per user: counting a user's containers
	// and creating the next one happen under it, so that a burst of one
	// user's launches (20 tasks of one srun) cannot all count before any
	// creates. Every limit a decision carries is a count of the caller's
	// own containers (per user, per job of theirs), so other users never
	// wait on it.
	LaunchLockDir = "/run/containerjob/launch"
	// StepLockDir holds, per shared step container, the lock its tasks
	// hold shared from finding the container to registering their exec,
	// and the one task that ends last holds exclusively; and the lock of
	// the one task that creates it.
	StepLockDir = "/run/containerjob/step"
	// NodeCacheDir holds what is cached per engine start (the cgroup
	// driver).
	NodeCacheDir = "/run/containerjob"
)

// LockWait bounds a wait for a launch or step lock. Its holders do only
// bounded engine calls under it (each apiTimeout), so a wait this long
// means the holder is stuck; the waiter fails saying so instead of
// waiting with it.
var LockWait = 5 * time.Minute

// lockName is a lock file's name for a resource key that may contain any
// byte (an image reference, a container name).
func lockName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16]) + ".lock"
}

// userLaunchLock is the lock of uid's launches on this node.
func userLaunchLock(uid string) (string, error) {
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
		return "", fmt.Errorf("the launch lock: uid %q", uid)
	}
	return filepath.Join(LaunchLockDir, "uid_"+uid+".lock"), nil
}

// openLock opens (making it, root's, 0600) the lock file at path.
func openLock(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("the node's lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the node's lock %s: %w", path, err)
	}
	return f, nil
}

// tryLock takes the lock at path only where it is free now; ok is false
// where another holds it.
func tryLock(path string, how int) (unlock func(), ok bool, err error) {
	f, err := openLock(path)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("the node's lock %s: %w", path, err)
	}
	lockTaken()
	var once sync.Once
	return func() {
		once.Do(func() {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
			lockReleased()
		})
	}, true, nil
}

// lockWaitError is a lock wait that ran out: it names what was waited for.
type lockWaitError struct {
	What  string
	Bound time.Duration
}

func (e *lockWaitError) Error() string {
	return fmt.Sprintf("waited %s for %s on this node, which another launch still holds; try again later, and tell your admin if it persists", e.Bound, e.What)
}

// takeLock takes flock's how (LOCK_SH or LOCK_EX) on path, trying again
// until bound or ctx ends. what names the resource for the caller;
// waiting, when set, is called once when the lock is found taken.
// waited tells the caller that someone else held it meanwhile.
func takeLock(ctx context.Context, path, what string, how int, bound time.Duration, waiting func()) (unlock func(), waited bool, err error) {
	f, err := openLock(path)
	if err != nil {
		return nil, false, err
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
			lockReleased()
		})
	}
	err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	if err == nil {
		lockTaken()
		return unlock, false, nil
	}
	if err != syscall.EWOULDBLOCK {
		f.Close()
		return nil, false, fmt.Errorf("the node's lock %s: %w", path, err)
	}
	if waiting != nil {
		waiting()
	}
	began := time.Now()
	defer func() { lockWaited(path, time.Since(began)) }()
	// A blocking flock wakes the moment the holder lets go (polling would
	// add its interval to every wait); it runs on a thread of its own so
	// that the wait can end at the bound. A wait given up on is left to
	// finish, and lets go of what it gets at once.
	got := make(chan error, 1)
	go func() {
		for {
			err := syscall.Flock(int(f.Fd()), how)
			if err != syscall.EINTR {
				got <- err
				return
			}
		}
	}()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	giveUp := func() {
		go func() {
			if <-got == nil {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			}
			f.Close()
		}()
	}
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, true, fmt.Errorf("the node's lock %s: %w", path, err)
		}
		lockTaken()
		return unlock, true, nil
	case <-ctx.Done():
		giveUp()
		return nil, true, fmt.Errorf("stopped waiting for %s: %v", what, ctx.Err())
	case <-deadline.C:
		giveUp()
		return nil, true, &lockWaitError{What: what, Bound: bound}
	}
}

// LockWaits, when set, hears of every wait for a lock of the node, by the
// lock's kind (launch, step, pull) and how long it took (node metrics).
var LockWaits func(kind string, d time.Duration)

func lockWaited(path string, d time.Duration) {
	if LockWaits == nil {
		return
	}
	kind := "other"
	for k, dir := range map[string]string{"launch": LaunchLockDir, "step": StepLockDir, "pull": PullLockDir} {
		if strings.HasPrefix(path, dir+"/") {
			kind = k
		}
	}
	LockWaits(kind, d)
}

// lockLaunches takes uid's launch lock.
func lockLaunches(ctx context.Context, uid string) (func(), error) {
	path, err := userLaunchLock(uid)
	if err != nil {
		return nil, err
	}
	unlock, _, err := takeLock(ctx, path, "your other launch's container count", syscall.LOCK_EX, LockWait, nil)
	return unlock, err
}

// containerLocks are the two locks of one shared step container or named
// container, by its engine-wide name: join (its tasks, shared) and create
// (its one creator, or a step recreating it).
func containerLocks(name string) (join, create string) {
	base := lockName(name)
	return filepath.Join(StepLockDir, base), filepath.Join(StepLockDir, "create-"+base)
}
