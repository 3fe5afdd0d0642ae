package launcher

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// locksHeld counts the node's locks this process holds now (takeLock).
// While it is above zero nothing may wait on the caller's descriptors: a
// pipe the caller never reads, or a terminal they stopped, would hold the
// lock, and with it every other launch that needs it.
var locksHeld atomic.Int32

func lockTaken() { locksHeld.Add(1) }

func lockReleased() {
	if locksHeld.Add(-1) == 0 {
		drainCallerOutput()
	}
}

// callerWriters are the process's CallerWriters, drained in order when
// its last lock is released.
var (
	callerWritersMu sync.Mutex
	callerWriters   []*CallerWriter
)

// drainWait bounds how long a released lock's holder waits for lines
// queued while it held the lock to reach the caller. Only the caller's
// own launch waits; past it, the launch goes on and the lines follow.
var drainWait = 10 * time.Second

func drainCallerOutput() {
	callerWritersMu.Lock()
	ws := append([]*CallerWriter(nil), callerWriters...)
	callerWritersMu.Unlock()
	for _, w := range ws {
		w.Drain(drainWait)
	}
}

// CallerWriter writes containerjob's own lines (notices, warnings, pull
// progress) to one of the caller's descriptors, in order, from a goroutine
// of its own. A Write while the process holds a lock of the node returns
// at once (the line is queued, or dropped and counted when the queue is
// full); otherwise it returns when the line is written, as a plain write
// would. The container's own output never goes through it: nothing of it
// may be dropped, and none is written under a lock.
type CallerWriter struct {
	queue   chan callerLine
	dropped atomic.Int64
}

type callerLine struct {
	b    []byte
	done chan struct{}
}

// NewCallerWriter starts a CallerWriter for w.
func NewCallerWriter(w io.Writer) *CallerWriter {
	c := &CallerWriter{queue: make(chan callerLine, 256)}
	go func() {
		for l := range c.queue {
			if l.b != nil {
				w.Write(l.b)
			}
			close(l.done)
		}
	}()
	callerWritersMu.Lock()
	callerWriters = append(callerWriters, c)
	callerWritersMu.Unlock()
	return c
}

// Write queues p; see CallerWriter.
func (c *CallerWriter) Write(p []byte) (int, error) {
	l := callerLine{b: append([]byte(nil), p...), done: make(chan struct{})}
	if locksHeld.Load() > 0 {
		select {
		case c.queue <- l:
		default:
			c.dropped.Add(1)
		}
		return len(p), nil
	}
	c.queue <- l
	<-l.done
	return len(p), nil
}

// Drain waits up to bound for every queued line to be written.
func (c *CallerWriter) Drain(bound time.Duration) bool {
	l := callerLine{done: make(chan struct{})}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case c.queue <- l:
	case <-t.C:
		return false
	}
	select {
	case <-l.done:
		return true
	case <-t.C:
		return false
	}
}

// Dropped is how many lines were dropped because the caller did not read
// them while the process held a lock.
func (c *CallerWriter) Dropped() int64 { return c.dropped.Load() }
