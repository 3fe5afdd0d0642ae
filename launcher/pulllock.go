package launcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"syscall"
	"time"
)

// PullLockDir holds one lock per image reference on the node: launches,
// `containerjob pull` and prolog prefetches that need the same image pull
// it once, the others wait for that pull instead of starting their own (a
// 64-task step would otherwise ask the registry 64 times at once).
// Root's, like every lock of the launcher; a variable for tests.
var PullLockDir = "/run/containerjob/pull"

// PullWait bounds how long a launch waits for another launch's pull of the
// same image before it fails saying so (the pull itself has its own 30
// minute bound).
var PullWait = 30 * time.Minute

// pullPoll is how often a waiting launch tries the lock again.
const pullPoll = 100 * time.Millisecond

// lockPull takes the node's lock for ref. When another process holds it,
// waiting is called once and the lock is tried again until PullWait or
// ctx ends; waited then tells the caller that a pull of ref finished while
// it waited, so what the engine now has is as fresh as its own pull.
func lockPull(ctx context.Context, ref string, waiting func()) (unlock func(), waited bool, err error) {
	sum := sha256.Sum256([]byte(ref))
	path := filepath.Join(PullLockDir, hex.EncodeToString(sum[:16])+".lock")
	f, err := openLock(path)
	if err != nil {
		return nil, false, err
	}
	unlock = func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
	deadline := time.NewTimer(PullWait)
	defer deadline.Stop()
	tick := time.NewTicker(pullPoll)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return unlock, waited, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, false, fmt.Errorf("the node's pull lock %s: %v", path, err)
		}
		if !waited {
			waited = true
			waiting()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, false, ctx.Err()
		case <-deadline.C:
			f.Close()
			return nil, false, fmt.Errorf("another launch on this node has been pulling %q for %s; try again later, or ask your admin to look at the registry", ref, PullWait)
		case <-tick.C:
		}
	}
}
