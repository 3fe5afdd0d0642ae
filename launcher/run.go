package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// Engine is the part of the Engine API the launcher uses; *client.Client
// implements it.
type Engine interface {
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImagePull(ctx context.Context, ref string, opts client.ImagePullOptions) (client.ImagePullResponse, error)
	DistributionInspect(ctx context.Context, ref string, opts client.DistributionInspectOptions) (client.DistributionInspectResult, error)
	ContainerCreate(ctx context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerCommit(ctx context.Context, id string, opts client.ContainerCommitOptions) (client.ContainerCommitResult, error)
	ImageRemove(ctx context.Context, image string, opts client.ImageRemoveOptions) (client.ImageRemoveResult, error)
	ContainerAttach(ctx context.Context, id string, opts client.ContainerAttachOptions) (client.ContainerAttachResult, error)
	ContainerStart(ctx context.Context, id string, opts client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerWait(ctx context.Context, id string, opts client.ContainerWaitOptions) client.ContainerWaitResult
	ContainerKill(ctx context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error)
	ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerResize(ctx context.Context, id string, opts client.ContainerResizeOptions) (client.ContainerResizeResult, error)
	ContainerInspect(ctx context.Context, id string, opts client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ExecCreate(ctx context.Context, id string, opts client.ExecCreateOptions) (client.ExecCreateResult, error)
	ExecAttach(ctx context.Context, execID string, opts client.ExecAttachOptions) (client.ExecAttachResult, error)
	ExecInspect(ctx context.Context, execID string, opts client.ExecInspectOptions) (client.ExecInspectResult, error)
	ContainerLogs(ctx context.Context, id string, opts client.ContainerLogsOptions) (client.ContainerLogsResult, error)
	ImageList(ctx context.Context, opts client.ImageListOptions) (client.ImageListResult, error)
	NetworkInspect(ctx context.Context, id string, opts client.NetworkInspectOptions) (client.NetworkInspectResult, error)
	NetworkCreate(ctx context.Context, name string, opts client.NetworkCreateOptions) (client.NetworkCreateResult, error)
	Info(ctx context.Context, opts client.InfoOptions) (client.SystemInfoResult, error)
	ContainerStatPath(ctx context.Context, id string, opts client.ContainerStatPathOptions) (client.ContainerStatPathResult, error)
	CopyFromContainer(ctx context.Context, id string, opts client.CopyFromContainerOptions) (client.CopyFromContainerResult, error)
}

func notify(c chan os.Signal)     { signal.Notify(c, ForwardedSignals...) }
func stopNotify(c chan os.Signal) { signal.Stop(c) }

// Connect returns a client for the engine at host (a unix:// URL from the
// policy, never from the environment). The API version is negotiated on the
// first request, so old (1.41) and current engines both work.
func Connect(host string) (*client.Client, error) {
	return client.New(client.WithHost(host), client.WithUserAgent("containerjob/"+Version))
}

// Exit codes, as docker run has them.
const (
	ExitLaunchFailed   = 125
	ExitCannotInvoke   = 126
	ExitCommandMissing = 127
)

// Error is a failure before or around the container's own run; Code is the
// exit status the CLI reports for it.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func failf(code int, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// IO is where the container's streams go.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal is the file behind stdin when it is a terminal, for -t.
	Terminal *os.File
}

// Options are the run-time knobs that are not policy.
type Options struct {
	// Caller is whose filesystem view mount sources are opened with.
	Caller    userfs.Identity
	StopGrace time.Duration
	// ProbeTimeout bounds opening the mount sources (0: no bound).
	ProbeTimeout time.Duration
	Guard        guard.Expect
	// Signals, when set, replaces signal.Notify (tests inject signals).
	Signals chan os.Signal
	// Created is called with the container id right after create.
	Created func(id string)
	// Phase, when set, is called as each phase of Run ends, by name.
	Phase func(name string)
	// EngineSocket is the engine's unix socket path (the policy's
	// docker_host), for what is cached per engine start.
	EngineSocket string
	// Account is the caller's entry for the container's /etc/passwd and
	// /etc/group (nil: none added).
	Account *Account
	// Interpreter is the #! interpreter of the batch script the container
	// runs ("" for other commands): one the image lacks fails the launch
	// with its name, not the runtime's "exec ...: no such file".
	Interpreter string
	// Notify receives what the launcher has to tell while it runs (nil:
	// nothing is told). The launcher prints nothing itself; the CLI's
	// output contract renders these.
	Notify func(Notice)
	// PinnedImage is the image ID the job's earlier steps on this node
	// ran for the requested reference (an image without a registry
	// digest); the launch runs it, or fails when it is gone.
	PinnedImage string
	// ImageReady, when set, is called with the image the launch will run
	// once it is on the node; an error fails the launch (the job's pin).
	ImageReady func(img client.ImageInspectResult) error
	// RegistryAuth gives the caller's own credentials for a registry host,
	// encoded for the engine (X-Registry-Auth); found is false when the
	// caller has none. Nil: pulls go without credentials.
	RegistryAuth func(host string) (encoded string, found bool, err error)
	// execCreated, when set, is called once Exec has registered its
	// process with the engine (RunNamed's step lock is released then).
	execCreated func()
}

// Notice is something the job's log should say while a launch runs.
type Notice struct {
	Kind NoticeKind
	Text string
	// Bytes, for NoticePulled: the layers' bytes the pull downloaded.
	Bytes int64
}

// NoticeKind says what a Notice is.
type NoticeKind int

const (
	NoticeWarning        NoticeKind = iota // something went wrong that the launch survives
	NoticePulling                          // the image is being pulled; Text is the reference
	NoticeWaitingForPull                   // another launch on the node is pulling the image; Text is the reference
	NoticePulled                           // the pull is done; Text is the reference, Bytes what it downloaded
)

func (o Options) notify(kind NoticeKind, format string, args ...any) {
	if o.Notify != nil {
		o.Notify(Notice{Kind: kind, Text: fmt.Sprintf(format, args...)})
	}
}

// ForwardedSignals reach the container; SIGTERM stops it within the grace
// period instead, as a scheduler expects of a job step.
var ForwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT}

// apiTimeout bounds every engine call that is not the container's own run.
const apiTimeout = 2 * time.Minute

// Result is what the container's run produced.
type Result struct {
	ContainerID string
	ImageID     string
	ExitCode    int
	Started     time.Time
	Ended       time.Time
	Usage       Usage
	// OOMKilled: the kernel killed the container for exceeding its memory,
	// which a bare 137 does not tell; MemoryLimit is that limit in bytes
	// (0 when the decision set none).
	OOMKilled   bool
	MemoryLimit int64
	// EngineStopped: the container died of a signal nobody here sent
	// while the engine stopped (a restart, an upgrade): the engine stops
	// its containers as it goes, which a bare 137 does not tell.
	EngineStopped bool
}

// phases is Phase, or a no-op where none is set.
func (o Options) phases() func(name string) {
	if o.Phase == nil {
		return func(string) {}
	}
	return o.Phase
}

// Run pulls (as allowed), creates, attaches, starts, waits for and removes
// the container of decision d. Any failure before the container's own
// process ran is an *Error with the docker-run exit code.
func Run(ctx context.Context, eng Engine, d *policy.Decision, stdio IO, opts Options) (Result, error) {
	var res Result
	if d.Persist || d.StepShared {
		return RunNamed(ctx, eng, d, stdio, opts)
	}
	phase := opts.phases()
	img, req, err := prepare(ctx, eng, d, opts)
	if err != nil {
		return res, err
	}
	res.ImageID = img.ID
	phase("image")
	var entrypointLog string
	entrypoint, args := effectiveEntrypoint(d, img)
	if argv, log, ok := pyxisEntrypoint(d, entrypoint, args); ok {
		req.Config.Entrypoint, req.Config.Cmd, entrypointLog = argv, nil, log
	}
	stage, err := stageLaunch(ctx, eng, d, img.ID, &req, &opts)
	if err != nil {
		return res, err
	}
	defer stage.Release()
	phase("stage")

	// Signals are caught before anything exists, so none is lost between
	// create and the forwarding loop.
	sigc := opts.Signals
	if sigc == nil {
		sigc = make(chan os.Signal, 16)
		notify(sigc)
		defer stopNotify(sigc)
	}

	// The exact usage totals come from a cgroup of this launch's own,
	// where the engine's driver allows one (acct.go).
	var acct *acctParent
	if d.CgroupParent == "" {
		var err error
		if acct, err = newAcctParent(ctx, eng, opts.EngineSocket, d.Labels[policy.LabelUID], d.PidsPerUser.Max); err != nil {
			return res, &Error{Code: ExitLaunchFailed, Err: err}
		}
		if acct != nil {
			req.HostConfig.CgroupParent = acct.path
			opts.Guard.AccountingParent = acct.path
			defer acct.remove() // after the container's removal below
		}
	} else if err := stepParentHolds(ctx, eng, opts.EngineSocket); err != nil {
		return res, &Error{Code: ExitLaunchFailed, Err: err}
	}
	created, err := guardedCreate(ctx, eng, d.Limits, req, opts.Guard)
	phase("guard")
	var lerr *Error
	if errors.As(err, &lerr) {
		return res, err
	}
	if err != nil {
		return res, failf(ExitLaunchFailed, "creating the container failed: %v", err)
	}
	id := created.ID
	res.ContainerID = id
	phase("create")
	if opts.Created != nil {
		opts.Created(id)
	}
	// One removal, on every path out of here, with its own context: the
	// caller's may already be cancelled when we get here.
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		if _, err := eng.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			opts.notify(NoticeWarning, "container %.12s could not be removed: %v; the job's epilogue will remove it", id, err)
		}
		phase("remove")
	}()

	if err := checkInterpreter(ctx, eng, id, d, opts.Interpreter); err != nil {
		return res, err
	}

	// Attach before start so no byte of output is lost.
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	att, err := eng.ContainerAttach(actx, id, client.ContainerAttachOptions{
		Stream: true, Stdin: d.Interactive, Stdout: true, Stderr: true,
	})
	if err != nil {
		return res, failf(ExitLaunchFailed, "attaching to the container failed: %v", err)
	}
	defer att.Close()
	// Wait is registered before start as well, so a fast exit is not missed.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	waitRes := eng.ContainerWait(wctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	phase("attach")

	// Output goes through sinks that remember the first write error: a
	// reader that went away (EPIPE) or a full or failing disk (ENOSPC,
	// EIO) stops the container instead of leaving it blocked or running.
	sink := &outputSink{}
	stdout, stderrW := sink.wrap(stdio.Stdout), sink.wrap(stdio.Stderr)
	outDone := make(chan error, 1)
	go func() {
		var err error
		if d.Tty {
			_, err = io.Copy(stdout, att.Reader)
		} else {
			_, err = stdcopy.StdCopy(stdout, stderrW, att.Reader)
		}
		outDone <- err
	}()
	if d.Interactive && stdio.Stdin != nil {
		go func() {
			io.Copy(att.Conn, stdio.Stdin)
			att.CloseWrite()
		}()
	}

	var restoreTerm func()
	if d.Tty && stdio.Terminal != nil {
		restoreTerm = makeRaw(stdio.Terminal)
	}
	if restoreTerm != nil {
		defer restoreTerm()
	}

	sctx, scancel := context.WithTimeout(ctx, apiTimeout)
	_, err = eng.ContainerStart(sctx, id, client.ContainerStartOptions{})
	scancel()
	res.Started = time.Now()
	// runc has made the container's own mounts from the staged ones. An
	// entrypoint's log may still have to be copied out through the engine
	// once the container ends (an image store with no upper directory to
	// read: the containerd store), which mounts the staged sources again;
	// then they stay until the launch returns.
	if entrypointLog == "" {
		stage.Release()
	}
	if err != nil {
		return res, startError(err, d.GPUDriver)
	}
	phase("start")
	if d.Tty && stdio.Terminal != nil {
		resize(ctx, eng, id, stdio.Terminal)
	}

	// With an accounting cgroup the exact totals are read at the end;
	// sampling is for engines without one.
	usage := idleUsage()
	if acct == nil || acct.sliceOnly {
		usage = startUsage(ctx, eng, id)
	}
	defer usage.finish()
	var fwd sync.WaitGroup
	var forwarded atomic.Bool // a signal of the caller's reached the container
	stopForwarding := make(chan struct{})
	fwd.Add(1)
	go func() {
		defer fwd.Done()
		forwardSignals(eng, id, sigc, stopForwarding, opts, &forwarded)
	}()
	defer func() {
		close(stopForwarding)
		fwd.Wait()
	}()

	for {
		select {
		case w := <-waitRes.Result:
			phase("exit")
			// The output stream ends when the container's process does; drain
			// it so the last bytes reach the job log before we return.
			if outDone != nil {
				<-outDone
			}
			res.Ended = time.Now()
			res.Usage = usage.finish()
			if u, ok := acct.read(); ok {
				res.Usage = u
			}
			if err := sink.failure(); err != nil {
				return res, err
			}
			if w.Error != nil && w.Error.Message != "" {
				return res, failf(ExitLaunchFailed, "waiting for the container failed: %s", w.Error.Message)
			}
			res.ExitCode = int(w.StatusCode)
			res.ExitCode = entrypointEnded(ctx, eng, id, entrypointLog, d, opts.Caller, res.ExitCode, stdio.Stderr)
			if res.ExitCode > 128 && !forwarded.Load() {
				res.OOMKilled, res.MemoryLimit, res.EngineStopped = signalledWhy(eng, id, d)
			}
			return res, nil
		case err := <-waitRes.Error:
			return res, engineLost(eng, id, err)
		case <-outDone:
			outDone = nil
			if sink.failure() == nil {
				continue // the stream ended with the container; its exit follows
			}
			// Nothing can take the output any more: the container is
			// stopped now, not left to block or run to the job's end. The
			// attach stream goes first: the engine would otherwise wait,
			// kill and all, for someone to read what the container wrote.
			att.Close()
			kctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			eng.ContainerKill(kctx, id, client.ContainerKillOptions{Signal: "SIGKILL"})
			cancel()
			res.Ended = time.Now()
			res.Usage = usage.finish()
			return res, sink.failure()
		}
	}
}

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
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("the engine could not set the policy's ulimits (%s); the admin raises the engine's own limits (LimitMEMLOCK=infinity in its service) or lowers ulimits in the policy", runtimeCause(msg))}
	case strings.Contains(msg, "unable to apply cgroup configuration"):
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("the engine could not set up the container's cgroups: %s", runtimeCause(msg))}
	case gpuDriver != "" && (strings.Contains(msg, "could not select device driver") || strings.Contains(msg, "CDI")):
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("the engine cannot give the job's GPUs as gpus_mode %q asks (%s); the admin installs nvidia-container-toolkit or enables CDI, or sets another gpus_mode in the policy (containerjob doctor checks this)", gpuDriver, runtimeCause(msg))}
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
		return &Error{Code: ExitCommandMissing, Err: fmt.Errorf("the batch script starts with #!%s, which image %s does not have; start the script with an interpreter the image has (#!/bin/sh), or choose an image with %s", interp, d.Image.String(), interp)}
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

// ensureImage makes the image available as the pull mode allows and returns
// what the engine knows of it.
func ensureImage(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, error) {
	ref := d.Image.String()
	var none client.ImageInspectResult
	inspect := func() (client.ImageInspectResult, error) {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		return eng.ImageInspect(ictx, ref)
	}
	if opts.PinnedImage != "" {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		img, err := eng.ImageInspect(ictx, opts.PinnedImage)
		if err != nil {
			return none, failf(ExitLaunchFailed, "image %q ran as %.19s in this job's earlier steps on this node, and that image is gone (%v); the job cannot run another image under the same name", ref, opts.PinnedImage, err)
		}
		return img, nil
	}
	if d.Pull != "always" {
		img, err := inspect()
		if err == nil {
			return img, nil
		}
		if !cerrdefs.IsNotFound(err) {
			return none, failf(ExitLaunchFailed, "inspecting image %q failed: %v", ref, err)
		}
		if d.Pull == "never" {
			return none, failf(ExitLaunchFailed, "image %q is not on this node and the pull mode is never; ask your admin to load it, or use --pull missing if the policy allows", ref)
		}
	}
	// One pull per image and node: whoever holds the lock pulls; the
	// others wait and then take what it pulled.
	unlock, waited, err := lockPull(ctx, ref, func() { opts.notify(NoticeWaitingForPull, "%s", ref) })
	if err != nil {
		return none, failf(ExitLaunchFailed, "%v", err)
	}
	defer unlock()
	if waited {
		if img, err := inspect(); err == nil {
			return img, nil
		}
	}
	auth, credErr := pullAuth(d.Image, opts)
	if d.PrivateRegistry && (credErr != nil || auth == "") {
		return none, noCredentials(d.Image, credErr)
	}
	before := imagesBefore(ctx, eng)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	resp, err := eng.ImagePull(pctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		if credErr != nil {
			return none, failf(ExitLaunchFailed, "pulling image %q failed: %v (your own credentials were not used: %v)", ref, err, credErr)
		}
		return none, failf(ExitLaunchFailed, "pulling image %q failed: %v", ref, err)
	}
	opts.notify(NoticePulling, "%s", ref)
	bytes, err := followPull(pctx, ref, resp)
	resp.Close()
	if err != nil {
		return none, failf(ExitLaunchFailed, "pulling image %q failed: %v", ref, err)
	}
	if opts.Notify != nil {
		opts.Notify(Notice{Kind: NoticePulled, Text: ref, Bytes: bytes})
	}
	img, err := inspect()
	if err != nil {
		return none, failf(ExitLaunchFailed, "image %q is not available after the pull: %v", ref, err)
	}
	markPulledNew(opts.EngineSocket, img.ID, ref, before)
	return img, nil
}

// followPull reads a pull's progress to its end, as Wait does, and returns
// the bytes of the layers it downloaded (pullProgress.downloaded).
func followPull(ctx context.Context, ref string, resp client.ImagePullResponse) (int64, error) {
	pr := newPullProgress(ref)
	for m, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return 0, err
		}
		if m.Error != nil {
			return 0, errors.New(m.Error.Message)
		}
		pr.update(m)
	}
	return pr.downloaded(), nil
}

// EngineProbeTimeout bounds the question whether the engine still
// answers after a container died of a signal nobody here sent.
var EngineProbeTimeout = 3 * time.Second

// signalledWhy asks the engine why a container died of a signal nobody
// here sent: the kernel killed it for exceeding its memory (with the
// limit the decision set), or the engine itself is stopping. A stopping
// engine closes its API before it stops its containers, so a fresh
// question then finds no engine (refused, or, with socket activation,
// unanswered within EngineProbeTimeout).
func signalledWhy(eng Engine, id string, d *policy.Decision) (oom bool, limit int64, engineStopped bool) {
	ctx, cancel := context.WithTimeout(context.Background(), EngineProbeTimeout)
	defer cancel()
	c, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return false, 0, !cerrdefs.IsNotFound(err)
	}
	if c.Container.State == nil || !c.Container.State.OOMKilled {
		return false, 0, false
	}
	if d.Spec.Linux != nil {
		if r := d.Spec.Linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil {
			return true, *r.Memory.Limit, false
		}
	}
	return true, 0, false
}

// DryRun builds and guards the create request for d without creating
// anything; the image is inspected (never pulled) to show the ID it pins.
func DryRun(ctx context.Context, eng Engine, d *policy.Decision, want guard.Expect) (client.ContainerCreateOptions, error) {
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	imageID := d.Image.String()
	var imageEnv []string
	if img, err := eng.ImageInspect(ictx, imageID); err == nil {
		imageID = img.ID
		if img.Config != nil {
			imageEnv = img.Config.Env
		}
	}
	req, err := Build(d, imageID)
	if err != nil {
		return req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	req.Config.Env = imageEnvFirst(d, req.Config.Env, imageEnv)
	if err := guard.Check(req, want); err != nil {
		return req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	return req, nil
}

// Resolve makes the decision's image available as a launch would (pull
// mode, the job's pin) and creates nothing.
func Resolve(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, error) {
	img, err := ensureImage(ctx, eng, d, opts)
	if err != nil {
		return img, err
	}
	if err := checkAccess(ctx, eng, d, img, opts); err != nil {
		return img, err
	}
	markUsed(opts.EngineSocket, img.ID)
	if opts.ImageReady != nil {
		if err := opts.ImageReady(img); err != nil {
			return img, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	return img, nil
}

// pullAuth is the caller's credentials for the image's registry, if any.
// An error (a broken ~/.docker/config.json, a credential helper) lets a
// public image be pulled anonymously; the caller decides.
func pullAuth(ref policy.ImageRef, opts Options) (string, error) {
	if opts.RegistryAuth == nil {
		return "", nil
	}
	auth, _, err := opts.RegistryAuth(ref.Registry())
	return auth, err
}

// oneLine keeps an engine's message to one line of the job's log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// RepoDigest is the registry's digest-pinned name ("NAME@sha256:...") of
// an image the engine has, for ref's repository; "" when it has none (an
// image loaded or built on the node).
func RepoDigest(ref policy.ImageRef, img client.ImageInspectResult) string {
	for _, rd := range img.RepoDigests {
		if r, err := policy.NormalizeImage(rd); err == nil && r.Name == ref.Name && r.Digest != "" {
			return r.String()
		}
	}
	return ""
}

// noCredentials is the refusal of a private registry's image to a caller
// whose own credentials for it are missing or unusable.
func noCredentials(ref policy.ImageRef, err error) error {
	host := ref.Registry()
	if err != nil {
		return failf(ExitLaunchFailed, "image %q is in the private registry %s, which needs your own credentials: %v", ref.String(), host, err)
	}
	return failf(ExitLaunchFailed, "image %q is in the private registry %s, which needs your own credentials, and ~/.docker/config.json has none for it; run `docker login %s` where you have docker, or copy its entry", ref.String(), host, host)
}

// RegistryTimeout bounds the registry's answer to an access check.
var RegistryTimeout = 30 * time.Second

// checkAccess holds an image of a private registry to the caller's own
// access: the image store is shared, so an image that another user pulled
// is on the node whether or not this caller may have it. The engine asks
// the registry for the image's manifest (by the digest that will run,
// where the node knows it) with the caller's credentials, for this one
// request; anything but an answer refuses the launch.
func checkAccess(ctx context.Context, eng Engine, d *policy.Decision, img client.ImageInspectResult, opts Options) error {
	if !d.PrivateRegistry {
		return nil
	}
	host := d.Image.Registry()
	target := d.Image.String()
	if d.Image.Digest == "" {
		if rd := RepoDigest(d.Image, img); rd != "" {
			target = rd
		}
	}
	var auth string
	found := false
	var err error
	if opts.RegistryAuth != nil {
		auth, found, err = opts.RegistryAuth(host)
	}
	if err != nil || !found {
		return noCredentials(d.Image, err)
	}
	cctx, cancel := context.WithTimeout(ctx, RegistryTimeout)
	defer cancel()
	if _, err := eng.DistributionInspect(cctx, target, client.DistributionInspectOptions{EncodedRegistryAuth: auth}); err != nil {
		if cctx.Err() != nil {
			err = fmt.Errorf("no answer within %s", RegistryTimeout)
		}
		return failf(ExitLaunchFailed, "image %q is in the private registry %s, which did not grant your credentials access to %s: %s", d.Image.String(), host, target, oneLine(err.Error()))
	}
	return nil
}

// prepare makes the image available and builds the create request from it.
func prepare(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, client.ContainerCreateOptions, error) {
	img, err := Resolve(ctx, eng, d, opts)
	if err != nil {
		return img, client.ContainerCreateOptions{}, err
	}
	req, err := Build(d, img.ID)
	if err != nil {
		return img, req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if img.Config != nil {
		req.Config.Env = imageEnvFirst(d, req.Config.Env, img.Config.Env)
	}
	if req.HostConfig.NetworkMode == IsolatedBridge {
		if err := EnsureIsolatedBridge(ctx, eng); err != nil {
			return img, req, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	return img, req, nil
}

// EnsureIsolatedBridge creates IsolatedBridge unless it exists, and
// refuses to use one that lacks its isolation (made by hand, say).
// Launches racing to create it are settled by the engine's unique names.
func EnsureIsolatedBridge(ctx context.Context, eng Engine) error {
	for attempt := 0; attempt < 2; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		n, err := eng.NetworkInspect(ictx, IsolatedBridge, client.NetworkInspectOptions{})
		cancel()
		if err == nil {
			net := n.Network
			for k, v := range isolatedBridgeOptions {
				if net.Driver != "bridge" || net.Options[k] != v {
					return fmt.Errorf("network %q exists without containerjob's isolation (driver %q, %s=%q); the admin removes it (docker network rm %s) and containerjob recreates it", IsolatedBridge, net.Driver, k, net.Options[k], IsolatedBridge)
				}
			}
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspecting network %q: %v", IsolatedBridge, err)
		}
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_, err = eng.NetworkCreate(cctx, IsolatedBridge, client.NetworkCreateOptions{
			Driver: "bridge", Options: isolatedBridgeOptions, Labels: map[string]string{policy.LabelManaged: "1"},
		})
		cancel()
		if err != nil && !cerrdefs.IsConflict(err) {
			return fmt.Errorf("creating network %q: %v", IsolatedBridge, err)
		}
	}
	return nil
}

// stageMounts binds the decision's user-controlled sources to private
// staging paths and points the request and the guard at them.
func stageMounts(d *policy.Decision, req *client.ContainerCreateOptions, opts *Options) (*Stage, error) {
	var fixed []string
	for _, m := range req.HostConfig.Mounts {
		if !slices.Contains(d.StageSources, m.Source) {
			fixed = append(fixed, m.Source)
		}
	}
	if err := Probe(fixed, opts.ProbeTimeout); err != nil {
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if len(d.StageSources) > 0 && opts.EngineSocket != "" {
		if err := sameMountNamespace(opts.EngineSocket); err != nil {
			return nil, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	stage, err := NewStage(opts.Caller, d.StageSources, opts.ProbeTimeout)
	if err != nil {
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	for i, m := range req.HostConfig.Mounts {
		req.HostConfig.Mounts[i].Source = stage.Path(m.Source)
	}
	// The guard sees the stage's maps themselves: files the launch adds
	// later (addAccounts) are known to it as they are written.
	opts.Guard.Staged, opts.Guard.Generated, opts.Guard.StageRoot = stage.Sources, stage.Generated, StageRoot
	return stage, nil
}

// stageLaunch stages the mount sources and the generated account files.
func stageLaunch(ctx context.Context, eng Engine, d *policy.Decision, imageID string, req *client.ContainerCreateOptions, opts *Options) (*Stage, error) {
	stage, err := stageMounts(d, req, opts)
	if err != nil {
		return nil, err
	}
	if err := addAccounts(ctx, eng, d, imageID, req, stage, opts.Account); err != nil {
		stage.Release()
		return nil, err
	}
	return stage, nil
}

// guardedCreate is the one way a container is created (a run's, a named
// one, the never-started probe that reads an image's accounts): under the
// caller's launch lock, the decision's limits are checked against the
// containers that exist, the guard checks the final request, and the
// engine creates it.
func guardedCreate(ctx context.Context, eng Engine, limits []policy.CountLimit, req client.ContainerCreateOptions, want guard.Expect) (client.ContainerCreateResult, error) {
	var none client.ContainerCreateResult
	uid := strconv.FormatUint(uint64(want.UID), 10)
	unlock, err := lockLaunches(ctx, uid)
	if err != nil {
		return none, failf(ExitLaunchFailed, "%v", err)
	}
	defer unlock()
	if err := checkLimits(ctx, eng, limits); err != nil {
		return none, err
	}
	if err := guard.Check(req, want); err != nil {
		return none, &Error{Code: ExitLaunchFailed, Err: err}
	}
	// The job's mark goes first: its Epilog looks for it before anything.
	if err := markJobOf(req.Config.Labels); err != nil {
		return none, &Error{Code: ExitLaunchFailed, Err: err}
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return eng.ContainerCreate(cctx, req)
}

// checkLimits counts the containers that exist for each of the decision's
// limits (by containerjob's own labels) and refuses when one is reached.
func checkLimits(ctx context.Context, eng Engine, limits []policy.CountLimit) error {
	list := func(label, value, node string) ([]container.Summary, error) {
		f := client.Filters{}
		f.Add("label", policy.LabelManaged+"=1")
		f.Add("label", label+"="+value)
		if node != "" {
			f.Add("label", policy.LabelNode+"="+node)
		}
		lctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		res, err := eng.ContainerList(lctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			return nil, failf(ExitLaunchFailed, "counting containers: %v", err)
		}
		return res.Items, nil
	}
	for _, l := range limits {
		items, err := list(l.Label, l.Value, l.Node)
		if err != nil {
			return err
		}
		if int64(len(items)) >= l.Max {
			return &Error{Code: ExitLaunchFailed, Err: &policy.Refusal{
				Item: fmt.Sprintf("a container beyond the %d allowed (%d exist)", l.Max, len(items)), Reason: "is refused", Rule: l.Rule,
				Hint: "wait for one of your containers to end, or stop one (containerjob ps, containerjob stop)"}}
		}
	}
	return nil
}
