package launcher

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// execEngine answers ExecInspect with a fixed pid; every other call of
// the Engine interface is out of this test's scope (and would panic).
type execEngine struct {
	Engine
	pid     int
	running bool
}

func (e execEngine) ExecInspect(context.Context, string, client.ExecInspectOptions) (client.ExecInspectResult, error) {
	return client.ExecInspectResult{Running: e.running, PID: e.pid}, nil
}

// TestExecSignalsOnlyTheContainersProcess: the exec's process is signalled
// through a pidfd, and only when the kernel places the pid the engine
// reports inside the container's cgroup; a pid that is someone else's by
// now is never signalled.
func TestExecSignalsOnlyTheContainersProcess(t *testing.T) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	ownCgroup := strings.TrimSpace(strings.SplitN(string(self), "\n", 2)[0])
	tests := []struct {
		name       string
		cid        string
		running    bool
		wantSignal bool
	}{
		{"pid inside the container's cgroup", ownCgroup, true, true},
		{"pid reused outside the container", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0", true, false},
		{"engine says the exec ended", ownCgroup, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			child := exec.Command("sleep", "30")
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			defer child.Process.Kill()
			exited := make(chan *os.ProcessState, 1)
			go func() { child.Wait(); exited <- child.ProcessState }()
			proc := &execProcess{eng: execEngine{pid: child.Process.Pid, running: tt.running}, execID: "e", cid: tt.cid, pidfd: -1}
			defer proc.close()
			proc.signal(syscall.SIGTERM)
			// A signalled child exits at once; the positive case waits as
			// long as a busy machine needs, the negative ones a second.
			wait := time.Second
			if tt.wantSignal {
				wait = time.Minute
			}
			select {
			case st := <-exited:
				if !tt.wantSignal {
					t.Fatalf("the process was signalled (%v)", st)
				}
			case <-time.After(wait):
				if tt.wantSignal {
					t.Fatal("the container's own process was not signalled")
				}
			}
		})
	}
}

func TestExecFailureHoldsOnlyTheEnginesMessage(t *testing.T) {
	var b strings.Builder
	e := &execFailure{w: &b}
	e.Write([]byte("OCI runtime exec failed: exec failed: x\r\n"))
	if b.Len() != 0 || e.held == nil {
		t.Fatalf("the engine's message was not held: %q", b.String())
	}
	e.Write([]byte("more\n"))
	if b.String() != "OCI runtime exec failed: exec failed: x\r\nmore\n" {
		t.Fatalf("held output not flushed in order: %q", b.String())
	}
	var c strings.Builder
	e = &execFailure{w: &c}
	e.Write([]byte("hello\n"))
	e.Write([]byte("OCI runtime exec failed: later output is the process's own\n"))
	if e.held != nil || c.String() != "hello\nOCI runtime exec failed: later output is the process's own\n" {
		t.Fatalf("only a first write may be held: %q", c.String())
	}
}
