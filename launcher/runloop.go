package launcher

// What the run loop of a launch uses once the container exists: the
// output sink and its failures, the signals forwarded to the container,
// the causes of a failed start, and why a container ended (OOM, a
// limit, an engine that went away).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/policy"
)

// outputSink remembers the first error writing the container's output.
type outputSink struct {
	mu  sync.Mutex
	err error
}

type sinkWriter struct {
	w    io.Writer
	sink *outputSink
}

func (s *outputSink) wrap(w io.Writer) io.Writer { return sinkWriter{w, s} }

func (w sinkWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil {
		w.sink.mu.Lock()
		if w.sink.err == nil {
			w.sink.err = err
		}
		w.sink.mu.Unlock()
	}
	return n, err
}

// failure is the launch's error for a failed write, if there was one: a
// closed reader exits 141 as a shell pipeline's writer does (128+SIGPIPE).
func (s *outputSink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.err == nil:
		return nil
	case errors.Is(s.err, syscall.EPIPE):
		return failf(ExitBrokenPipe, "the container's output has no reader any more (broken pipe); the container was stopped")
	case errors.Is(s.err, syscall.ENOSPC), errors.Is(s.err, syscall.EDQUOT):
		return failf(ExitLaunchFailed, "the container's output could not be written: the disk or quota is full (%v); the container was stopped", s.err)
	}
	return failf(ExitLaunchFailed, "the container's output could not be written (%v); the container was stopped", s.err)
}

// ExitBrokenPipe is what a writer killed by SIGPIPE exits with in a shell.
const ExitBrokenPipe = 141

// engineLost reports, in one line, that the engine went away while the
// container ran, and what is known of the container's fate.
func engineLost(eng Engine, id string, err error) error {
	fate := "its state is unknown; the job's epilogue removes it if it is left"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, ierr := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); ierr == nil && c.Container.State != nil {
		if c.Container.State.Running {
			fate = "it is still running and is stopped now"
			eng.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "SIGKILL"})
		} else {
			fate = fmt.Sprintf("it is %s (exit %d)", c.Container.State.Status, c.Container.State.ExitCode)
		}
	}
	return failf(ExitLaunchFailed, "the connection to the container engine was lost while the container ran (%v); %s", err, fate)
}

// forwardSignals relays what the caller receives to the container. SIGTERM
// becomes a stop with a grace period, after which the engine kills.
func forwardSignals(eng Engine, id string, sigc <-chan os.Signal, stop <-chan struct{}, opts Options, forwarded *atomic.Bool) {
	grace := opts.StopGrace
	for {
		select {
		case <-stop:
			return
		case s := <-sigc:
			sig, ok := s.(syscall.Signal)
			if !ok {
				continue
			}
			if sig == syscall.SIGWINCH {
				continue
			}
			forwarded.Store(true)
			if sig == syscall.SIGTERM {
				secs := int(grace / time.Second)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), grace+apiTimeout)
					defer cancel()
					eng.ContainerStop(ctx, id, client.ContainerStopOptions{Signal: "SIGTERM", Timeout: &secs})
				}()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			if _, err := eng.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: unixSignalName(sig)}); err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
				opts.notify(NoticeWarning, "forwarding %s failed: %v", unixSignalName(sig), err)
			}
			cancel()
		}
	}
}

func unixSignalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return fmt.Sprintf("%d", int(s))
}

// startError maps the runtime's complaint about the command to docker run's
// exit codes: 127 not found, 126 cannot be invoked, else 125. An engine that
// cannot honour the GPU request is the site's setup, not the user's command:
// the error says which policy setting asked for what.
func startError(err error, gpuDriver string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "error setting rlimit"):
		// Raising a hard limit needs CAP_SYS_RESOURCE where the runtime
		// runs; memlock=-1 for RDMA is the usual case.
		return failHint(ExitLaunchFailed, "the admin raises the engine's own limits (LimitMEMLOCK=infinity in its service) or lowers ulimits in the policy", "the engine could not set the policy's ulimits (%s)", runtimeCause(msg))
	case strings.Contains(msg, "unable to apply cgroup configuration"):
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("the engine could not set up the container's cgroups: %s", runtimeCause(msg))}
	case gpuDriver != "" && (strings.Contains(msg, "could not select device driver") || strings.Contains(msg, "CDI")):
		return failHint(ExitLaunchFailed, "the admin installs nvidia-container-toolkit or enables CDI, or sets another gpus_mode in the policy (containerjob doctor checks this)", "the engine cannot give the job's GPUs as gpus_mode %q asks (%s)", gpuDriver, runtimeCause(msg))
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return &Error{Code: ExitCommandMissing, Err: fmt.Errorf("the command was not found in the image: %s", runtimeCause(msg))}
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "exec format error"), strings.Contains(msg, "is a directory"):
		return &Error{Code: ExitCannotInvoke, Err: fmt.Errorf("the command cannot be run: %s", runtimeCause(msg))}
	}
	return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("starting the container failed: %s", msg)}
}

// checkInterpreter looks for the batch script's interpreter in the created
// container (its image and mounts), before anything runs.
func checkInterpreter(ctx context.Context, eng Engine, id string, d *policy.Decision, interp string) error {
	if interp == "" {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := eng.ContainerStatPath(sctx, id, client.ContainerStatPathOptions{Path: interp})
	if cerrdefs.IsNotFound(err) {
		return failHint(ExitCommandMissing, "start the script with an interpreter the image has (#!/bin/sh), or choose an image with "+interp, "the batch script starts with #!%s, which image %s does not have", interp, d.Image.String())
	}
	return nil // anything else is left to the runtime to report
}

// runtimeCause trims the runtime's nested prefixes down to the part a user
// can act on.
func runtimeCause(msg string) string {
	if i := strings.LastIndex(msg, "exec: "); i >= 0 {
		return strings.TrimSuffix(msg[i+len("exec: "):], ": unknown")
	}
	return msg
}

// EngineProbeTimeout bounds the question whether the engine still
// answers after a container died of a signal nobody here sent.
var EngineProbeTimeout = 3 * time.Second

// oomSettle: the waits before asking again whether a SIGKILLed container
// was killed for its memory (signalledWhy); a variable for tests.
// About 8 s in all, most of it only where no OOM kill is told: under
// emulation (the cgroup v2 lane, ~17x slower, with other tests beside)
// one second was not always enough once the output handoff let the exit
// be seen sooner, and three seconds twice in about ten runs. Only a
// SIGKILL that containerjob did not forward waits at all (a kill -9
// inside, an admin's docker kill); an OOM kill is told as soon as the
// engine knows it.
var oomSettle = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond,
	500 * time.Millisecond, 700 * time.Millisecond, 750 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2500 * time.Millisecond}

// signalledWhy asks the engine why a container died of a signal nobody
// here sent: the kernel killed it for exceeding its memory (with the
// limit the decision set), or the engine itself is stopping. A stopping
// engine closes its API before it stops its containers, so a fresh
// question then finds no engine (refused, or, with socket activation,
// unanswered within EngineProbeTimeout).
func signalledWhy(eng Engine, id string, d *policy.Decision, counted oomWatch) (oom bool, limit int64, engineStopped bool) {
	ctx, cancel := context.WithTimeout(context.Background(), EngineProbeTimeout)
	defer cancel()
	c, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return false, 0, !cerrdefs.IsNotFound(err)
	}
	// The engine learns of an OOM kill from an event of its own (on
	// cgroup v2, the shim's watch of memory.events), which can come after
	// the exit it reports (seen on the cgroup v2 lane): a SIGKILL without
	// it is asked about again for about eight seconds, unless the kernel's
	// own count (where there is one) tells it first, without waiting.
	for _, wait := range oomSettle {
		if st := c.Container.State; st == nil || st.OOMKilled || st.ExitCode != 137 {
			break
		}
		if counted.fired() {
			return true, memoryLimit(d), false
		}
		time.Sleep(wait)
		actx, acancel := context.WithTimeout(context.Background(), EngineProbeTimeout)
		again, err := eng.ContainerInspect(actx, id, client.ContainerInspectOptions{})
		acancel()
		if err != nil {
			break
		}
		c = again
	}
	if c.Container.State == nil || !c.Container.State.OOMKilled {
		return false, 0, false
	}
	return true, memoryLimit(d), false
}

// memoryLimit is the container's memory limit as the decision set it, 0
// for none.
func memoryLimit(d *policy.Decision) int64 {
	if d.Spec.Linux != nil {
		if r := d.Spec.Linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil {
			return *r.Memory.Limit
		}
	}
	return 0
}
