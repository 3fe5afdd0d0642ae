package launcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// keeper holds a named container open between the job's steps. It needs
// /bin/sh and sleep in the image (documented); each step's command is an
// exec in the container, so what one step writes the next one sees.
const keeper = `trap 'exit 0' TERM INT HUP; while :; do sleep 3600 & wait $!; done`

// allocDigest identifies the allocation a container is made with: the
// CPUs, memory, devices and GPUs of the step that made it. A later step
// that execs into a named container runs inside that container's
// cgroups and devices, so it may only do so with the same allocation.
func allocDigest(req client.ContainerCreateOptions) string {
	sum := sha256.Sum256([]byte(allocSummary(req.HostConfig)))
	return hex.EncodeToString(sum[:8])
}

// allocSummary is a container's allocation in a few words, for the
// digest and for the refusal.
func allocSummary(h *container.HostConfig) string {
	if h == nil {
		return "unknown"
	}
	r := h.Resources
	var devs []string
	for _, d := range r.Devices {
		devs = append(devs, d.PathOnHost)
	}
	for _, dr := range r.DeviceRequests {
		devs = append(devs, dr.Driver+"="+strings.Join(dr.DeviceIDs, ","))
	}
	sort.Strings(devs)
	s := fmt.Sprintf("cpus %s, memory %d MiB", r.CpusetCpus, r.Memory>>20)
	if r.NanoCPUs > 0 {
		s += fmt.Sprintf(", %.2f cpus", float64(r.NanoCPUs)/1e9)
	}
	if len(devs) > 0 {
		s += ", devices " + strings.Join(devs, " ")
	}
	return s
}

// mountsDigest identifies a named container's mounts: Docker cannot change
// them after creation, so a later step asking for others is refused rather
// than silently given the first step's.
func mountsDigest(req client.ContainerCreateOptions) string {
	var specs []string
	for _, m := range req.HostConfig.Mounts {
		specs = append(specs, fmt.Sprintf("%s:%s:%v", m.Source, m.Target, m.ReadOnly))
	}
	sort.Strings(specs)
	sum := sha256.Sum256([]byte(strings.Join(specs, "\n")))
	return hex.EncodeToString(sum[:8])
}

// A shared step container's tasks hold its join lock (containerLocks) shared
// from finding the container to registering their exec (tasks join at
// once, side by side), and the task that ends last holds it exclusively to
// see that no exec is left and remove the container. Its create lock is
// held by the one task that creates and starts the container the others
// then find. Both are the step's own: no other step or user waits on them.
// guardedCreate takes the caller's launch lock inside.

// RunNamed runs the decision's command in the job's named container, or
// in the step's shared container on this node, creating and starting that
// container first if this task or step is the first. A named container is
// left for later steps (the job's epilogue removes it); a step's is
// removed by the last of the node's tasks to end.
func RunNamed(ctx context.Context, eng Engine, d *policy.Decision, stdio IO, opts Options) (Result, error) {
	var res Result
	phase := opts.phases()
	img, req, err := prepare(ctx, eng, d, opts)
	if err != nil {
		return res, err
	}
	phase("image")
	res.ImageID = img.ID
	if err := guard.Check(req, opts.expect()); err != nil {
		return res, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if err := namedParent(ctx, eng, d, &req, &opts); err != nil {
		return res, err
	}
	digest := mountsDigest(req)
	req.Config.Labels[policy.LabelMounts] = digest
	req.Config.Labels[policy.LabelAlloc] = allocDigest(req)
	req.Config.Labels[policy.LabelImageID] = img.ID

	var id string
	release := func() {}
	if d.StepShared {
		id, release, err = joinStep(ctx, eng, d, req, img.ID, digest, opts)
		defer release()
		opts.execCreated = func() { release(); phase("exec-create") }
	} else {
		id, err = namedContainer(ctx, eng, d, req, img.ID, digest, opts, false)
	}
	if err != nil {
		return res, err
	}
	res.ContainerID = id
	phase("container")

	entrypoint, args := effectiveEntrypoint(d, img)
	cmd := append(slices.Clone(entrypoint), args...)
	argv, entrypointLog, ok := pyxisEntrypoint(d, entrypoint, args)
	if ok {
		cmd = argv
	}
	if len(cmd) == 0 {
		return res, failf(ExitLaunchFailed, "no command to run in container %q", d.Labels[policy.LabelName])
	}
	p := d.Spec.Process
	var code int
	var started, ended time.Time
	used := false
	if d.StepShared || d.Persist {
		code, started, ended, used, err = runTask(d, cmd, req.Config.Env, p.Cwd, stdio, opts)
	}
	res.Output = OutputDirect
	if !used {
		res.Output = OutputEngine + ": the engine's exec"
		code, started, ended, err = Exec(ctx, eng, id, ExecSpec{
			User: req.Config.User, Env: req.Config.Env, Workdir: p.Cwd, Cmd: cmd, Tty: d.Tty, Interactive: d.Interactive,
		}, stdio, opts)
	}
	res.Started, res.Ended, res.ExitCode = started, ended, code
	if err == nil {
		res.ExitCode = entrypointEnded(ctx, eng, id, entrypointLog, d, opts.Caller, code, stdio.Stderr)
	}
	phase("exit")
	if d.StepShared {
		release()
		endStepTask(eng, id, d.Name, opts)
		phase("end-task")
	}
	return res, err
}

// namedParent puts named and step containers under the caller's own
// cgroup too (the per-user process cap holds on every path to a
// container), or checks the step's parent where the decision names one.
func namedParent(ctx context.Context, eng Engine, d *policy.Decision, req *client.ContainerCreateOptions, opts *Options) error {
	if d.CgroupParent != "" {
		if err := stepParentHolds(ctx, eng, opts.EngineSocket); err != nil {
			return &Error{Code: ExitLaunchFailed, Err: err}
		}
		return nil
	}
	user, err := userCgroup(ctx, eng, opts.EngineSocket, d.Labels[policy.LabelUID], d.PidsPerUser.Max)
	if err != nil {
		return &Error{Code: ExitLaunchFailed, Err: err}
	}
	if user != "" {
		req.HostConfig.CgroupParent = user
		opts.added.accounting = user
	}
	return nil
}

// joinStep finds the step's container on this node, or has it made, and
// returns it with StepLock held shared until release: the caller's exec
// is registered before any task can judge the container unused. A task
// that misses it takes StepCreateLock and looks again before creating,
// so one task creates it and the rest find it; all start at once, and
// the engine's names and these locks settle the order, not timing. The
// join lock stays held (shared) while the task creates or looks again:
// a task that ended (endStepTask, exclusive) cannot remove the container
// between its creation and its first task's registration, nor while
// another task is about to use it (seen when tasks became fast enough to
// end before the others joined: "marked for removal and cannot be
// started").
func joinStep(ctx context.Context, eng Engine, d *policy.Decision, req client.ContainerCreateOptions, imageID, digest string, opts Options) (string, func(), error) {
	joinLock, createLock := containerLocks(d.Name)
	unlock, _, err := takeLock(ctx, joinLock, "the other tasks of this step joining its container", syscall.LOCK_SH, LockWait, nil)
	if err != nil {
		return "", func() {}, &Error{Code: ExitLaunchFailed, Err: err}
	}
	var once sync.Once
	release := func() { once.Do(unlock) }
	id, err := namedContainer(ctx, eng, d, req, imageID, digest, opts, true)
	if err != nil || id != "" {
		if err != nil {
			release()
		}
		return id, release, err
	}
	// Missing: made by this task, unless another made it meanwhile.
	unlockCreate, _, err := takeLock(ctx, createLock, "another task of this step creating its container", syscall.LOCK_EX, LockWait, nil)
	if err != nil {
		release()
		return "", func() {}, &Error{Code: ExitLaunchFailed, Err: err}
	}
	id, err = namedContainer(ctx, eng, d, req, imageID, digest, opts, false)
	unlockCreate()
	if err != nil {
		release()
		return "", func() {}, err
	}
	return id, release, nil
}

// endStepTask removes the step's container when no task of the step on
// this node is left in it: no exec in it runs or waits to be started (the
// engine drops an exec from the container's list when it ends), and its
// server runs none. It does not wait for the join lock: a task holding it
// (shared) is joining, and will look again itself when its own task ends.
// A task killed outright, or one whose join failed, leaves its share to
// the step's end (the SPANK plugin's epilog --step) or the job's epilogue.
func endStepTask(eng Engine, id, name string, opts Options) {
	joinLock, _ := containerLocks(name)
	unlock, ok, err := tryLock(joinLock, syscall.LOCK_EX)
	if err != nil {
		opts.live.Leave()
		opts.notify(NoticeWarning, "%v; the step's container is left to the step's end", err)
		return
	}
	if !ok {
		return // another task is joining: it ends after this one
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	c, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return // gone already
	}
	for _, ex := range c.Container.ExecIDs {
		st, err := eng.ExecInspect(ctx, ex, client.ExecInspectOptions{})
		if err == nil && (st.Running || st.PID == 0) {
			return // another task of the step runs, or is about to
		}
	}
	if stepTasksRunning(name) {
		return // another task runs through the container's own server
	}
	defer os.Remove(taskSocket(name))
	if _, err := eng.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		opts.live.Leave()
		opts.notify(NoticeWarning, "the step's container %.12s could not be removed: %v; the step's end or the job's epilogue will remove it", id, err)
	}
}

// ExecSpec is a process to start in a running container. User must be
// the caller's uid:gid: the container's own security settings (no
// capabilities, no-new-privileges) apply to it.
type ExecSpec struct {
	User        string
	Env         []string
	Workdir     string
	Cmd         []string
	Tty         bool
	Interactive bool
}

// Exec runs spec in container id, relaying its streams and signals, and
// returns its exit status.
func Exec(ctx context.Context, eng Engine, id string, spec ExecSpec, stdio IO, opts Options) (code int, started, ended time.Time, err error) {
	if !regexp.MustCompile(`^[0-9]+:[0-9]+$`).MatchString(spec.User) || strings.HasPrefix(spec.User, "0:") {
		return 0, started, ended, failf(ExitLaunchFailed, "exec user %q is not a non-root uid:gid", spec.User)
	}
	ectx, cancel := context.WithTimeout(ctx, apiTimeout)
	ex, err := eng.ExecCreate(ectx, id, client.ExecCreateOptions{
		User: spec.User, Env: spec.Env, WorkingDir: spec.Workdir, Cmd: spec.Cmd, TTY: spec.Tty,
		AttachStdin: spec.Interactive, AttachStdout: true, AttachStderr: true,
	})
	cancel()
	if opts.execCreated != nil {
		opts.execCreated()
	}
	if err != nil {
		return 0, started, ended, failf(ExitLaunchFailed, "starting the process in container %.12s failed: %v", id, err)
	}
	sigc := opts.Signals
	if sigc == nil {
		sigc = make(chan os.Signal, 16)
		notify(sigc)
		defer stopNotify(sigc)
	}
	att, err := eng.ExecAttach(context.Background(), ex.ID, client.ExecAttachOptions{TTY: spec.Tty})
	if err != nil {
		return 0, started, ended, startError(err, "")
	}
	defer att.Close()
	started = time.Now()
	if spec.Interactive && stdio.Stdin != nil {
		go func() {
			io.Copy(att.Conn, stdio.Stdin)
			att.CloseWrite()
		}()
	}
	proc := &execProcess{eng: eng, execID: ex.ID, cid: id, pidfd: -1}
	done := make(chan struct{})
	var fwd sync.WaitGroup
	fwd.Add(1)
	go func() { defer fwd.Done(); forwardToExec(proc, sigc, done, opts.StopGrace) }()
	defer func() { close(done); fwd.Wait(); proc.close() }()
	sink := &outputSink{}
	out := &execFailure{w: sink.wrap(stdio.Stdout)}
	if spec.Tty {
		io.Copy(out, att.Reader)
	} else {
		stdcopy.StdCopy(out, sink.wrap(stdio.Stderr), att.Reader)
	}
	ended = time.Now()
	if err := sink.failure(); err != nil {
		// Nothing takes the output any more: this step's process ends.
		proc.signal(syscall.SIGKILL)
		return 0, started, ended, err
	}
	ictx, icancel := context.WithTimeout(context.Background(), apiTimeout)
	defer icancel()
	st, err := eng.ExecInspect(ictx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		out.flush()
		return 0, started, ended, failf(ExitLaunchFailed, "the exit status is unknown: %v", err)
	}
	if out.held != nil && st.PID == 0 {
		// The process never started: the engine's message is ours to
		// translate, as run's start errors are.
		return 0, started, ended, startError(errors.New(strings.TrimSpace(string(out.held))), "")
	}
	out.flush()
	return st.ExitCode, started, ended, nil
}

// execFailure holds back an exec's output when it opens with the engine's
// own failure message (which the engine writes into the process's stdout
// stream) until the exec's record says whether the process ever ran.
type execFailure struct {
	w       io.Writer
	decided bool
	held    []byte
}

func (e *execFailure) Write(p []byte) (int, error) {
	if !e.decided {
		e.decided = true
		if bytes.HasPrefix(p, []byte("OCI runtime exec failed")) {
			e.held = bytes.Clone(p)
			return len(p), nil
		}
	}
	if err := e.flush(); err != nil {
		return 0, err
	}
	return e.w.Write(p)
}

// flush writes what was held: it was the process's own output after all.
func (e *execFailure) flush() error {
	if e.held == nil {
		return nil
	}
	held := e.held
	e.held = nil
	_, err := e.w.Write(held)
	return err
}

// namedContainer finds the job's container of that name or creates it;
// with findOnly it returns "" for a missing one.
func namedContainer(ctx context.Context, eng Engine, d *policy.Decision, req client.ContainerCreateOptions, imageID, digest string, opts Options, findOnly bool) (string, error) {
	what := fmt.Sprintf("container %q", d.Labels[policy.LabelName])
	if d.StepShared {
		what = "the step's container on this node"
	}
	// The image a new container is made of: a recreated one's, the
	// commit of its files (on top of any earlier commit of the job's,
	// which stays its parent until the epilogue removes them all).
	createFrom := imageID
	for attempt := 0; attempt < 3; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		found, err := eng.ContainerInspect(ictx, d.Name, client.ContainerInspectOptions{})
		cancel()
		if err == nil {
			id, mismatch, err := useExisting(ctx, eng, d, found.Container, req, imageID, digest, what)
			if err != nil || mismatch == "" {
				return id, err
			}
			// As under pyxis, the step gets its own mounts and
			// allocation and keeps the container's filesystem: the
			// container is committed and made anew from that.
			committed, err := recreateNamed(ctx, eng, d, found.Container.ID, what, mismatch)
			if err != nil {
				return "", err
			}
			createFrom = committed
			continue
		}
		if !cerrdefs.IsNotFound(err) {
			return "", failf(ExitLaunchFailed, "looking up %s failed: %v", what, err)
		}
		if findOnly {
			return "", nil
		}
		id, err := createKeeper(ctx, eng, d, req, imageID, createFrom, opts, what)
		if cerrdefs.IsConflict(err) {
			continue // another task of the step created it first
		}
		return id, err
	}
	return "", failf(ExitLaunchFailed, "%s could not be created or found", what)
}

// useExisting takes the container found under the name: its ID (started
// again if it stopped), or what differs from this step's where the
// container is to be made anew (mismatch), or the refusal of a container
// that is not this one's to use.
func useExisting(ctx context.Context, eng Engine, d *policy.Decision, c container.InspectResponse, req client.ContainerCreateOptions, imageID, digest, what string) (id, mismatch string, err error) {
	l := c.Config.Labels
	base := l[policy.LabelImageID]
	if base == "" {
		base = c.Image
	}
	switch {
	case l[policy.LabelManaged] != "1" || l[policy.LabelUID] != d.Labels[policy.LabelUID] || l[policy.LabelJob] != d.Labels[policy.LabelJob]:
		return "", "", failf(ExitLaunchFailed, "%s: the name belongs to another user or job", what)
	case base != imageID:
		return "", "", failHint(ExitLaunchFailed, "use a new --container-name for "+d.Image.String(), "%s runs another image (%s)", what, l[policy.LabelImage])
	case l[policy.LabelMounts] != digest:
		mismatch = "other mounts"
	case !d.StepShared && l[policy.LabelAlloc] != req.Config.Labels[policy.LabelAlloc]:
		// (A step's shared container is its tasks' alike: each task's
		// CPU binding is a part of the same step.) A step gets its own
		// allocation, never the one a named container was made with (a
		// gpu:1 step in a container of a gpu:2 step would see both GPUs).
		mismatch = fmt.Sprintf("another allocation (%s; this step has %s)", allocSummary(c.HostConfig), allocSummary(req.HostConfig))
	}
	if mismatch != "" {
		if d.StepShared {
			return "", "", failf(ExitLaunchFailed, "%s was created with %s", what, mismatch)
		}
		return "", mismatch, nil
	}
	if c.State == nil || !c.State.Running {
		sctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_, err := eng.ContainerStart(sctx, c.ID, client.ContainerStartOptions{})
		cancel()
		if err != nil && d.StepShared {
			return "", "", startError(err, d.GPUDriver) // another task is starting it
		}
		if err != nil {
			return "", "", failHint(ExitLaunchFailed, "use a new --container-name", "%s has stopped and cannot be started again (%v)", what, err)
		}
	}
	return c.ID, "", nil
}

// createKeeper creates and starts the named or step container from
// createFrom, its process a keeper that the tasks exec into. A conflict
// (another task of the step created it first) is returned as the
// engine's, for the caller to look again.
func createKeeper(ctx context.Context, eng Engine, d *policy.Decision, req client.ContainerCreateOptions, imageID, createFrom string, opts Options, what string) (string, error) {
	// Staging rewrites the request; each attempt starts from the original.
	keep := req
	hc := *req.HostConfig
	hc.Mounts = slices.Clone(req.HostConfig.Mounts)
	keep.HostConfig = &hc
	stage, err := stageLaunch(ctx, eng, d, imageID, &keep, &opts)
	if err != nil {
		return "", err
	}
	defer stage.Release()
	cfg := *req.Config
	cfg.Image = createFrom
	cfg.Entrypoint = []string{"/bin/sh", "-c", keeper}
	cfg.Cmd = nil
	cfg.Tty, cfg.OpenStdin, cfg.StdinOnce, cfg.AttachStdin, cfg.AttachStdout, cfg.AttachStderr = false, false, false, false, false, false
	keep.Config = &cfg
	srv, err := serveTasks(d, &keep, stage, &opts)
	if err != nil {
		return "", err
	}
	served := false
	defer func() { srv.handOver(served) }()
	created, err := guardedCreate(ctx, eng, d.Limits, keep, opts.expect())
	var lerr *Error
	if errors.As(err, &lerr) || cerrdefs.IsConflict(err) {
		return "", err
	}
	if err != nil {
		return "", failf(ExitLaunchFailed, "creating %s failed: %v", what, err)
	}
	if opts.Created != nil {
		opts.Created(created.ID)
	}
	sctx, cancel := context.WithTimeout(ctx, apiTimeout)
	_, err = eng.ContainerStart(sctx, created.ID, client.ContainerStartOptions{})
	cancel()
	if err != nil && !cerrdefs.IsConflict(err) {
		// A container that never started is nobody's: the step's other
		// tasks (waiting on the step lock) or the job's next step would
		// find it without the staged files it was made with.
		rctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		eng.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true})
		cancel()
		return "", startError(err, d.GPUDriver)
	}
	served = true
	return created.ID, nil
}

// recreateNamed commits a job's named container (the files its steps
// wrote) into an image of the job's and removes the container, so that
// it is made anew from that image with this step's mounts and allocation.
// Another step still running in it makes this one wait for the name's
// lock, then refuse: its processes would be killed.
func recreateNamed(ctx context.Context, eng Engine, d *policy.Decision, id, what, why string) (string, error) {
	_, createLock := containerLocks(d.Name)
	unlock, _, err := takeLock(ctx, createLock, "another step recreating "+what, syscall.LOCK_EX, LockWait, nil)
	if err != nil {
		return "", &Error{Code: ExitLaunchFailed, Err: err}
	}
	defer unlock()
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	found, err := eng.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	cancel()
	if err != nil {
		return "", failHint(ExitLaunchFailed, "run the step again", "%s changed while this step looked at it (%v)", what, err)
	}
	for _, ex := range found.Container.ExecIDs {
		xctx, cancel := context.WithTimeout(ctx, apiTimeout)
		st, err := eng.ExecInspect(xctx, ex, client.ExecInspectOptions{})
		cancel()
		if err == nil && st.Running {
			return "", failf(ExitLaunchFailed, "%s has %s than this step, and another step still runs in it; wait for that step, or use a new --container-name", what, why)
		}
	}
	if stepTasksRunning(d.Name) {
		return "", failf(ExitLaunchFailed, "%s has %s than this step, and another step still runs in it; wait for that step, or use a new --container-name", what, why)
	}
	l := d.Labels
	changes := []string{
		"LABEL " + policy.LabelManaged + "=1",
		"LABEL " + policy.LabelCommitted + "=1",
		"LABEL " + policy.LabelUID + "=" + l[policy.LabelUID],
		"LABEL " + policy.LabelJob + "=" + l[policy.LabelJob],
		"LABEL " + policy.LabelNode + "=" + l[policy.LabelNode],
		"LABEL " + policy.LabelScheduler + "=" + l[policy.LabelScheduler],
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	committed, err := eng.ContainerCommit(cctx, id, client.ContainerCommitOptions{Changes: changes})
	cancel()
	if err != nil {
		return "", failHint(ExitLaunchFailed, "use a new --container-name", "%s has %s than this step, and its files could not be kept for it (%v)", what, why, err)
	}
	rctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if _, err := eng.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		eng.ImageRemove(rctx, committed.ID, client.ImageRemoveOptions{})
		return "", failf(ExitLaunchFailed, "%s could not be replaced for this step's %s (%v)", what, why, err)
	}
	return committed.ID, nil
}

// execProcess is the host process of one exec, held by a pidfd. The
// engine has no signal call for execs, so containerjob signals the process
// itself, as root; a raw pid could meanwhile belong to another user's
// process, a pidfd cannot: it is taken while the engine reports the exec
// running and the kernel places that pid in this container's cgroup, and
// from then on names that process or none.
type execProcess struct {
	eng         Engine
	execID, cid string
	mu          sync.Mutex // the forwarder, its SIGKILL timer and Exec itself signal
	pidfd       int        // -1 until taken
}

// fd returns the pidfd, taking it on first use; -1 when the process is
// not (or no longer) running. Called with mu held.
func (p *execProcess) fd() int {
	if p.pidfd >= 0 {
		return p.pidfd
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	st, err := p.eng.ExecInspect(ctx, p.execID, client.ExecInspectOptions{})
	if err != nil || !st.Running || st.PID <= 1 {
		return -1
	}
	fd, err := unix.PidfdOpen(st.PID, 0)
	if err != nil {
		return -1
	}
	// Between the engine's answer and pidfd_open the pid may have been
	// reused: the process the pidfd names must be in this container.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.PID))
	if err != nil || p.cid == "" || !strings.Contains(string(cg), p.cid) {
		unix.Close(fd)
		return -1
	}
	p.pidfd = fd
	return fd
}

func (p *execProcess) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fd := p.fd(); fd >= 0 {
		unix.PidfdSendSignal(fd, sig, nil, 0)
	}
}

func (p *execProcess) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// forwardToExec relays signals to the step's process in the named
// container, through its pidfd; SIGTERM is followed by SIGKILL after the
// grace period.
func forwardToExec(proc *execProcess, sigc <-chan os.Signal, done <-chan struct{}, grace time.Duration) {
	for {
		select {
		case <-done:
			return
		case s := <-sigc:
			sig, ok := s.(syscall.Signal)
			if !ok || sig == syscall.SIGWINCH {
				continue
			}
			proc.signal(sig)
			if sig == syscall.SIGTERM {
				go func() {
					select {
					case <-done:
					case <-time.After(grace):
						proc.signal(syscall.SIGKILL)
					}
				}()
			}
		}
	}
}
