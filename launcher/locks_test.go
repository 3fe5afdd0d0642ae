package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/policy"
)

// TestOneUsersLaunchLockNeverHoldsAnother: the launch lock is the user's
// own. While bob's lock is held (a launch of his stopped or frozen in the
// middle of creating), alice's launch creates at once, and bob's next
// launch fails after the bound naming what it waited for, instead of
// waiting for ever (the lock was one per node, and a blocking flock).
func TestOneUsersLaunchLockNeverHoldsAnother(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{})
	req, err := Build(d, eng.AddImage("alpine:3.20", nil))
	if err != nil {
		t.Fatal(err)
	}
	bobLock, err := userLaunchLock("1002")
	if err != nil {
		t.Fatal(err)
	}
	unlock, _, err := takeLock(context.Background(), bobLock, "bob's", syscall.LOCK_EX, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	// Another user's create is not delayed by bob's lock.
	alice := opts.Guard
	alice.UID, alice.GID = 1003, 1003
	areq := req
	cfg := *req.Config
	cfg.User = "1003:1003"
	cfg.Labels = map[string]string{}
	for k, v := range req.Config.Labels {
		cfg.Labels[k] = v
	}
	cfg.Labels[policy.LabelUID] = "1003"
	areq.Config = &cfg
	start := time.Now()
	created, err := guardedCreate(context.Background(), eng, nil, areq, alice)
	if err != nil {
		t.Fatalf("alice's create while bob's lock is held: %v", err)
	}
	eng.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("alice's create took %s while bob's lock was held", el)
	}

	// Bob's own next create waits, within its bound, and says for what.
	old := LockWait
	LockWait = 300 * time.Millisecond
	defer func() { LockWait = old }()
	_, err = guardedCreate(context.Background(), eng, nil, req, opts.Guard)
	var lerr *Error
	if !errors.As(err, &lerr) || lerr.Code != ExitLaunchFailed || !strings.Contains(err.Error(), "waited") || !strings.Contains(err.Error(), "container count") {
		t.Fatalf("bob's create under his held lock: %v; want a bounded wait that names the lock", err)
	}
}

// TestStepLocksAreTheSteps: two steps' shared containers do not share a
// lock: a task stopped while it creates one step's container does not
// hold up another step (the create lock was one per node).
func TestStepLocksAreTheSteps(t *testing.T) {
	lifecycle(t, policy.Request{})
	j1, c1 := containerLocks("cj-1002-7-n1_step.0")
	j2, c2 := containerLocks("cj-1002-7-n1_step.1")
	if j1 == j2 || c1 == c2 || j1 == c1 {
		t.Fatalf("step locks %s %s %s %s are not per step", j1, c1, j2, c2)
	}
	unlock, _, err := takeLock(context.Background(), c1, "step 0", syscall.LOCK_EX, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	u2, _, err := takeLock(context.Background(), c2, "step 1", syscall.LOCK_EX, 200*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("step 1's create lock while step 0's is held: %v", err)
	}
	u2()
}

// TestNoWriteToTheCallerUnderALock: lines containerjob writes while it
// holds a lock of the node (pull progress, notices) never wait on the
// caller's descriptor; once the lock is released they are written in
// order.
func TestNoWriteToTheCallerUnderALock(t *testing.T) {
	lifecycle(t, policy.Request{})
	pr, pw := io.Pipe()
	w := NewCallerWriter(pw)
	unlock, _, err := lockPull(context.Background(), "docker.io/library/alpine:3.20", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ { // more than the queue holds
			w.Write([]byte("containerjob: pull: layer\n"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a write to an unread descriptor blocked while the pull lock was held")
	}
	if w.Dropped() == 0 {
		t.Error("nothing was dropped of 1000 lines to an unread pipe")
	}
	// Released: the holder waits (bounded) for its queued lines, which
	// the reader now takes.
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := pr.Read(b)
		got <- string(b[:n])
		io.Copy(io.Discard, pr)
	}()
	unlock()
	if l := <-got; !strings.HasPrefix(l, "containerjob: pull") {
		t.Errorf("first line after release %q", l)
	}
	// Without a lock a write is a plain write again.
	if _, err := w.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
}

// TestPullLockWaitIsBoundedAndNamed: a launch waiting for another's pull
// of the same image says once that it waits, and gives up at PullWait
// with a line naming the image.
func TestPullLockWaitIsBoundedAndNamed(t *testing.T) {
	lifecycle(t, policy.Request{})
	unlock, _, err := lockPull(context.Background(), "docker.io/library/tool:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	old := PullWait
	PullWait = 200 * time.Millisecond
	defer func() { PullWait = old }()
	told := 0
	_, _, err = lockPull(context.Background(), "docker.io/library/tool:1", func() { told++ })
	if err == nil || !strings.Contains(err.Error(), `"docker.io/library/tool:1"`) || told != 1 {
		t.Fatalf("waiting on a held pull lock: err %v, told %d times", err, told)
	}
	// Another image's pull is not held up.
	u2, _, err := lockPull(context.Background(), "docker.io/library/other:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	u2()
}

// TestJobMarkBeforeTheFirstContainer: a job's first container is created
// only after its mark is on the host (the Slurm Epilog starts containerjob
// only for marked jobs); the epilogue drops the node's mark, and the
// job's with the last node's; a job outside any is never marked.
func TestJobMarkBeforeTheFirstContainer(t *testing.T) {
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	if JobMarked("slurm", "7") {
		t.Fatal("marked before any launch")
	}
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
		t.Fatal(err)
	}
	if !JobMarked("slurm", "7") {
		t.Fatal("a job that ran a container has no mark")
	}
	MarkJob("slurm", "7", "n2")
	DropJobMark("slurm", "7", "n1")
	if !JobMarked("slurm", "7") {
		t.Error("the job's mark went with one node's while another node's is left")
	}
	DropJobMark("slurm", "7", "n2")
	if JobMarked("slurm", "7") {
		t.Error("the job's mark outlived its last node's epilogue")
	}
	if err := MarkJob("slurm", "", "n1"); err != nil || JobMarked("slurm", "") == false {
		// outside a job: nothing to mark; an unreadable name counts as marked
		t.Errorf("outside a job: %v", err)
	}
	if err := MarkJob("slurm", "../../etc", "n1"); err == nil {
		t.Error("a job id that is no file name was marked")
	}
	// The mark is written before the create: a create that fails leaves it.
	eng.CreateErr = fmt.Errorf("boom")
	if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err == nil {
		t.Fatal("create failure not reported")
	}
	if !JobMarked("slurm", "7") {
		t.Error("no mark after a create was tried")
	}
}
