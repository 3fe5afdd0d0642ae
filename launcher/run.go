package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/hint"
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
	ServerVersion(ctx context.Context, opts client.ServerVersionOptions) (client.ServerVersionResult, error)
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

// failHint is failf with what the user can do about it, for the hint line
// (internal/hint).
func failHint(code int, advice, format string, args ...any) error {
	return &Error{Code: code, Err: hint.Errorf(advice, format, args...)}
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
	// Guard is the node's bounds for the create request, from the
	// decision and the verified job; expect completes them.
	Guard guard.Expect
	// added is what this launch added to the request itself (expect).
	added added
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
	// live is the launch's mark for its step's end (Run writes it); a
	// container this launch leaves behind keeps it (live.Leave).
	live *LiveMark
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
	// Output is the way the container's output took: OutputDirect (the
	// command wrote to the caller's descriptors itself), or OutputEngine
	// and why ("engine: a terminal (-t)").
	Output string
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
	live, err := MarkLive(d.Labels)
	if err != nil {
		return Result{}, &Error{Code: ExitLaunchFailed, Err: err}
	}
	opts.live = live
	res, err := run(ctx, eng, d, stdio, opts)
	live.Done(err)
	return res, err
}

func run(ctx context.Context, eng Engine, d *policy.Decision, stdio IO, opts Options) (Result, error) {
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
	entrypointLog := usePyxisEntrypoint(d, img, &req)
	stage, err := stageLaunch(ctx, eng, d, img.ID, &req, &opts)
	if err != nil {
		return res, err
	}
	defer stage.Release()
	ho, output, err := useHandoff(d, img, &req, stdio, stage, &opts)
	if err != nil {
		return res, err
	}
	defer ho.close()
	res.Output = output
	phase("stage")

	sigc, stopSignals := callerSignals(opts)
	defer stopSignals()

	acct, err := launchParent(ctx, eng, d, &req, &opts)
	if err != nil {
		return res, err
	}
	defer acct.remove() // after the container's removal below
	created, err := guardedCreate(ctx, eng, d.Limits, req, opts.expect())
	phase("guard")
	if err != nil {
		return res, createError(err)
	}
	id := created.ID
	res.ContainerID = id
	phase("create")
	if opts.Created != nil {
		opts.Created(id)
	}
	defer removeContainer(eng, id, opts, phase)

	if err := checkInterpreter(ctx, eng, id, d, opts.Interpreter); err != nil {
		return res, err
	}
	a, err := outputOf(eng, id, d, stdio, ho)
	if err != nil {
		return res, err
	}
	defer a.close()
	phase("attach")

	defer rawTerminal(d, stdio)()
	release := releaseAfterStart(stage, entrypointLog)
	ho.start()
	ho.watchReaders(stdio)
	defer ho.stopWatching()
	err = startContainer(ctx, eng, id, d, stdio, release)
	res.Started = time.Now()
	if err != nil {
		return res, err
	}
	phase("start")

	usage := acct.usage(ctx, eng, id)
	defer usage.finish()
	oom := acct.oomWatch(usage)
	forwarded, stopForwarding := startForwarding(eng, id, sigc, opts)
	defer stopForwarding()
	return awaitExit(ctx, eng, d, a, exitState{res: res, usage: usage, oom: oom, acct: acct, entrypointLog: entrypointLog, forwarded: forwarded, stderr: stdio.Stderr, caller: opts.Caller, phase: phase, handoff: ho})
}

// rawTerminal puts the caller's terminal in raw mode for a -t launch and
// returns what puts it back (nothing to do otherwise).
func rawTerminal(d *policy.Decision, stdio IO) func() {
	if d.Tty && stdio.Terminal != nil {
		if restore := makeRaw(stdio.Terminal); restore != nil {
			return restore
		}
	}
	return func() {}
}

// releaseAfterStart is what lets the staged sources go once the container
// started: runc has made the container's own mounts from them once the
// engine answers. An entrypoint's log may still have to be copied out
// through the engine once the container ends (an image store with no
// upper directory to read: the containerd store), which mounts the staged
// sources again; then they stay until the launch returns.
func releaseAfterStart(stage *Stage, entrypointLog string) func() {
	if entrypointLog != "" {
		return func() {}
	}
	return stage.Release
}

// usePyxisEntrypoint gives the request pyxis' way with the image's
// entrypoint where the decision asks for it (entrypoint.go), and returns
// the file its output is kept in ("" otherwise).
func usePyxisEntrypoint(d *policy.Decision, img client.ImageInspectResult, req *client.ContainerCreateOptions) string {
	entrypoint, args := effectiveEntrypoint(d, img)
	argv, log, ok := pyxisEntrypoint(d, entrypoint, args)
	if !ok {
		return ""
	}
	req.Config.Entrypoint, req.Config.Cmd = argv, nil
	return log
}

// callerSignals are the signals to forward: caught before anything
// exists, so none is lost between create and the forwarding loop.
func callerSignals(opts Options) (<-chan os.Signal, func()) {
	if opts.Signals != nil {
		return opts.Signals, func() {}
	}
	sigc := make(chan os.Signal, 16)
	notify(sigc)
	return sigc, func() { stopNotify(sigc) }
}

// startContainer starts the container; released runs once the engine has
// answered, whatever it said.
func startContainer(ctx context.Context, eng Engine, id string, d *policy.Decision, stdio IO, released func()) error {
	sctx, scancel := context.WithTimeout(ctx, apiTimeout)
	_, err := eng.ContainerStart(sctx, id, client.ContainerStartOptions{})
	scancel()
	released()
	if err != nil {
		return startError(err, d.GPUDriver)
	}
	if d.Tty && stdio.Terminal != nil {
		resize(ctx, eng, id, stdio.Terminal)
	}
	return nil
}

// startForwarding relays the caller's signals to the container until the
// returned stop; forwarded says whether one of them reached it.
func startForwarding(eng Engine, id string, sigc <-chan os.Signal, opts Options) (forwarded *atomic.Bool, stop func()) {
	var fwd sync.WaitGroup
	forwarded = new(atomic.Bool)
	done := make(chan struct{})
	fwd.Add(1)
	go func() {
		defer fwd.Done()
		forwardSignals(eng, id, sigc, done, opts, forwarded)
	}()
	return forwarded, func() {
		close(done)
		fwd.Wait()
	}
}

// launchParent chooses the container's cgroup parent: the exact usage
// totals come from a cgroup of this launch's own, where the engine's
// driver allows one, and the per-user cap from the user's cgroup or slice
// above it (acct.go); or the step's cgroup (confine = "cgroup-parent"),
// where the driver can take it.
func launchParent(ctx context.Context, eng Engine, d *policy.Decision, req *client.ContainerCreateOptions, opts *Options) (*acctParent, error) {
	if d.CgroupParent != "" {
		if err := stepParentHolds(ctx, eng, opts.EngineSocket); err != nil {
			return nil, &Error{Code: ExitLaunchFailed, Err: err}
		}
		return nil, nil
	}
	acct, err := newAcctParent(ctx, eng, opts.EngineSocket, d.Labels[policy.LabelUID], d.PidsPerUser.Max)
	if err != nil {
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if acct != nil {
		req.HostConfig.CgroupParent = acct.path
		opts.added.accounting = acct.path
	}
	return acct, nil
}

// createError is a failed create's error for the caller: the guard's and
// the limits' own refusals as they are, the engine's with what failed.
func createError(err error) error {
	var lerr *Error
	if errors.As(err, &lerr) {
		return err
	}
	return failf(ExitLaunchFailed, "creating the container failed: %v", err)
}

// removeContainer is a launch's one removal, on every path out of Run,
// with its own context: the caller's may already be cancelled by then.
func removeContainer(eng Engine, id string, opts Options, phase func(string)) {
	rctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if _, err := eng.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		opts.live.Leave()
		opts.notify(NoticeWarning, "container %.12s could not be removed: %v; the step's end or the job's epilogue will remove it", id, err)
	}
	phase("remove")
}

// attachment is a container's output on its way to the caller: the attach
// stream, copied into sinks that remember the first write error, and the
// wait for its exit, both registered before start so that no byte and no
// fast exit is missed.
type attachment struct {
	att      client.ContainerAttachResult
	attached bool // false where the command writes to the caller itself
	waitRes  client.ContainerWaitResult
	outDone  chan error
	sink     *outputSink
	cancel   func()
}

func (a *attachment) close() {
	if a.attached {
		a.att.Close()
	}
	a.cancel()
}

// outputOf registers the wait for the container's exit and, unless the
// handoff gives the command the caller's descriptors, the attach stream.
func outputOf(eng Engine, id string, d *policy.Decision, stdio IO, ho *handoff) (*attachment, error) {
	if ho == nil {
		return attachOutput(eng, id, d, stdio)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	a := &attachment{sink: &outputSink{}, cancel: wcancel}
	a.waitRes = eng.ContainerWait(wctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	return a, nil
}

func attachOutput(eng Engine, id string, d *policy.Decision, stdio IO) (*attachment, error) {
	actx, acancel := context.WithCancel(context.Background())
	att, err := eng.ContainerAttach(actx, id, client.ContainerAttachOptions{
		Stream: true, Stdin: d.Interactive, Stdout: true, Stderr: true,
	})
	if err != nil {
		acancel()
		return nil, failf(ExitLaunchFailed, "attaching to the container failed: %v", err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	a := &attachment{att: att, attached: true, sink: &outputSink{}, outDone: make(chan error, 1), cancel: func() { wcancel(); acancel() }}
	a.waitRes = eng.ContainerWait(wctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})

	// A reader that went away (EPIPE) or a full or failing disk (ENOSPC,
	// EIO) stops the container instead of leaving it blocked or running.
	stdout, stderrW := a.sink.wrap(stdio.Stdout), a.sink.wrap(stdio.Stderr)
	go func() {
		var err error
		if d.Tty {
			_, err = io.Copy(stdout, att.Reader)
		} else {
			_, err = stdcopy.StdCopy(stdout, stderrW, att.Reader)
		}
		a.outDone <- err
	}()
	if d.Interactive && stdio.Stdin != nil {
		go func() {
			io.Copy(att.Conn, stdio.Stdin)
			att.CloseWrite()
		}()
	}
	return a, nil
}

// exitState is what the end of a run reports from.
type exitState struct {
	res           Result
	usage         *usageSampler
	oom           oomWatch
	acct          *acctParent
	entrypointLog string
	forwarded     *atomic.Bool
	stderr        io.Writer
	caller        userfs.Identity
	phase         func(string)
	handoff       *handoff
}

// awaitExit waits for the container's exit, the engine's loss, or an
// output that nothing takes any more, and makes the launch's result.
func awaitExit(ctx context.Context, eng Engine, d *policy.Decision, a *attachment, st exitState) (Result, error) {
	res, id, outDone := st.res, st.res.ContainerID, a.outDone
	for {
		select {
		case w := <-a.waitRes.Result:
			st.phase("exit")
			// The output stream ends when the container's process does; drain
			// it so the last bytes reach the job log before we return.
			if outDone != nil {
				<-outDone
			}
			res.Ended = time.Now()
			res.Usage = st.usage.finish()
			if u, ok := st.acct.read(); ok {
				res.Usage = u
			}
			if err := a.sink.failure(); err != nil {
				return res, err
			}
			if w.Error != nil && w.Error.Message != "" {
				return res, failf(ExitLaunchFailed, "waiting for the container failed: %s", w.Error.Message)
			}
			if st.handoff != nil {
				if err := st.handoff.outcome(); err != nil && !killedFirst(err, w.StatusCode, st.forwarded.Load()) {
					return res, handoffFailed(err)
				}
				if st.handoff.readerLost() && !st.forwarded.Load() {
					return res, errBrokenPipe()
				}
			}
			res.ExitCode = int(w.StatusCode)
			res.ExitCode = entrypointEnded(ctx, eng, id, st.entrypointLog, d, st.caller, res.ExitCode, st.stderr)
			if res.ExitCode > 128 && !st.forwarded.Load() {
				res.OOMKilled, res.MemoryLimit, res.EngineStopped = signalledWhy(eng, id, d, st.oom)
			}
			return res, nil
		case err := <-a.waitRes.Error:
			return res, engineLost(eng, id, err)
		case <-st.handoff.readerGone():
			// The command writes to the caller's pipe itself: it is
			// stopped as the engine's path stops it below.
			kctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			eng.ContainerKill(kctx, id, client.ContainerKillOptions{Signal: "SIGKILL"})
			cancel()
			res.Ended = time.Now()
			res.Usage = st.usage.finish()
			return res, errBrokenPipe()
		case <-outDone:
			outDone = nil
			if a.sink.failure() == nil {
				continue // the stream ended with the container; its exit follows
			}
			// Nothing can take the output any more: the container is
			// stopped now, not left to block or run to the job's end. The
			// attach stream goes first: the engine would otherwise wait,
			// kill and all, for someone to read what the container wrote.
			a.att.Close()
			kctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			eng.ContainerKill(kctx, id, client.ContainerKillOptions{Signal: "SIGKILL"})
			cancel()
			res.Ended = time.Now()
			res.Usage = st.usage.finish()
			return res, a.sink.failure()
		}
	}
}
