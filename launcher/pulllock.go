package launcher

import (
	"context"
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

// lockPull takes the node's lock for ref. When another process holds it,
// waiting is called once and the lock is tried again until PullWait or
// ctx ends; waited then tells the caller that a pull of ref finished while
// it waited, so what the engine now has is as fresh as its own pull.
func lockPull(ctx context.Context, ref string, waiting func()) (unlock func(), waited bool, err error) {
	return takeLock(ctx, filepath.Join(PullLockDir, lockName(ref)), fmt.Sprintf("another launch's pull of %q", ref), syscall.LOCK_EX, PullWait, waiting)
}
