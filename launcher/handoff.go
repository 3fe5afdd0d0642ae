package launcher

// The output handoff: where the job's output is a file or a pipe (a batch
// step's slurm-N.out, a task's pipe to slurmstepd), the container's
// command writes to it itself, as a bare task or a pyxis one does. The
// engine's path (the runtime's FIFOs, the shim, dockerd's copy, the
// attach stream and this process) cost a batch step writing 1 GiB about
// three times the bare job's time (issue 29).
//
// containerjob-init (cmd/containerjob-init), bound read-only into the
// container, runs first, as the job's owner and with the container's
// confinement. It connects to a socket of this launch's own, bound next
// to it, receives the caller's descriptors, puts them on 0-2 and execs the
// command the engine would have run. Its end of the socket is closed on
// exec: an end with no message is a started command, a message is why it
// did not start (not found: 127, not runnable: 126, as the runtime's
// start error).
//
// Everything else stays as it was: the exit code, signals, the OOM and
// engine-loss lines, usage. The engine keeps no copy of the output, so the
// handoff is only used where the policy asks it to keep none
// (container_logs = "none"), never with a terminal (-t keeps the attach
// stream and its resizes), and only for descriptors whose kind the
// command could be given by a bare task too: regular files, pipes,
// sockets, /dev/null. Anything else (a terminal without -t, a directory)
// takes the engine's path. The descriptors are the caller's own, and the
// command runs as the caller: it gets nothing the caller did not have.
// With a reader that went away, the command meets EPIPE itself and dies
// of SIGPIPE (141) as a bare task would, with no line of containerjob's.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/policy"
)

// InitPath is where the package installs containerjob-init (set at build
// time from LIBEXECDIR). Where it is missing, launches take the engine's
// path and doctor says so.
var InitPath = "/usr/libexec/containerjob/containerjob-init"

// The container's side: fixed, and known to containerjob-init.
const (
	handoffDir    = "/.containerjob"
	initTarget    = handoffDir + "/init"
	handoffTarget = handoffDir + "/handoff.sock"
)

// handoffSettle bounds the wait, once the container has ended, for what
// containerjob-init said: its socket ends with its process.
var handoffSettle = 2 * time.Second

// handoff is one launch's side of the socket: the listener, the
// descriptors it hands over, and what became of them.
type handoff struct {
	ln      *net.UnixListener
	fds     []int // this process's own copies, closed once sent
	kind    byte  // 'o': stdout and stderr; 'i': stdin too
	uid     uint32
	serving bool
	// watched are copies of the caller's output pipes and sockets, gone
	// closed when a reader went away, wake ends the watch.
	watched []int
	gone    chan struct{}
	wake    int
	// result is nil for a command that started, an *Error for one that
	// did not, another error where containerjob-init never took the
	// descriptors; sent once.
	result chan error
}

// handoffFds returns copies of the descriptors the handoff would give
// the container (stdin first where the launch forwards it, then stdout
// and stderr), or why the engine's path is kept instead.
func handoffFds(d *policy.Decision, stdio IO) (fds []int, kind byte, why string) {
	if d.Tty {
		return nil, 0, "a terminal (-t)"
	}
	if d.LogDriver != "" && d.LogDriver != "none" {
		return nil, 0, "the engine keeps the output (container_logs)"
	}
	type stream struct {
		name string
		v    any
		read bool
	}
	streams := []stream{{"stdout", stdio.Stdout, false}, {"stderr", stdio.Stderr, false}}
	kind = 'o'
	if d.Interactive {
		streams = append([]stream{{"stdin", stdio.Stdin, true}}, streams...)
		kind = 'i'
	}
	for _, s := range streams {
		f, ok := s.v.(*os.File)
		if !ok || f == nil {
			closeAll(fds)
			return nil, 0, s.name + " is not a file"
		}
		fd, err := dupFile(f)
		if err != nil {
			closeAll(fds)
			return nil, 0, fmt.Sprintf("%s: %v", s.name, err)
		}
		fds = append(fds, fd)
		if why := handoffKind(fd, s.read); why != "" {
			closeAll(fds)
			return nil, 0, s.name + " is " + why
		}
	}
	return fds, kind, ""
}

// dupFile copies f's descriptor without touching its flags (File.Fd
// would make it blocking, a change the caller's other holders would see).
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(raw uintptr) {
		fd, err = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 3)
	})
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// handoffKind says why descriptor fd may not be handed over ("" where
// it may): only the kinds a bare task gets, open for the direction used.
func handoffKind(fd int, read bool) string {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err.Error()
	}
	if flags&unix.O_PATH != 0 {
		return "a path descriptor"
	}
	acc := flags & unix.O_ACCMODE
	if read && acc == unix.O_WRONLY || !read && acc == unix.O_RDONLY {
		return "not open for " + map[bool]string{true: "reading", false: "writing"}[read]
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err.Error()
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK:
		return ""
	case unix.S_IFCHR:
		if unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3 {
			return "" // /dev/null
		}
		return "a device or terminal"
	}
	return "neither a file, a pipe nor a socket"
}

// engineArgv is the command the engine would run for cfg: its entrypoint
// and command, or the image's where the request leaves them out (the
// engine's own merge: an entrypoint of the request's drops the image's
// command).
func engineArgv(entrypoint, cmd []string, img client.ImageInspectResult) []string {
	var imgEntrypoint, imgCmd []string
	if img.Config != nil {
		imgEntrypoint, imgCmd = img.Config.Entrypoint, img.Config.Cmd
	}
	if len(entrypoint) == 1 && entrypoint[0] == "" {
		return slices.Clone(cmd) // cleared: the command alone
	}
	if len(entrypoint) == 0 {
		if len(cmd) == 0 {
			cmd = imgCmd
		}
		if entrypoint == nil {
			entrypoint = imgEntrypoint
		}
	}
	return append(slices.Clone(entrypoint), cmd...)
}

// The output paths a Result names.
const (
	OutputDirect = "direct"
	OutputEngine = "engine"
)

// useHandoff points the request at containerjob-init where the launch can
// hand the caller's descriptors over, and returns the handoff (nil where
// the engine's path is kept, and why). Its socket lives in the launch's
// stage.
func useHandoff(d *policy.Decision, img client.ImageInspectResult, req *client.ContainerCreateOptions, stdio IO, stage *Stage, opts *Options) (*handoff, string, error) {
	why := handoffRefused(req, img)
	var fds []int
	var kind byte
	if why == "" {
		fds, kind, why = handoffFds(d, stdio)
	}
	if why != "" {
		return nil, OutputEngine + ": " + why, nil
	}
	argv := engineArgv(req.Config.Entrypoint, req.Config.Cmd, img)
	ln, sock, err := stage.AddSocket("handoff.sock", handoffTarget)
	if err != nil {
		closeAll(fds)
		return nil, "", &Error{Code: ExitLaunchFailed, Err: err}
	}
	req.Config.Entrypoint = append([]string{initTarget, "--"}, argv...)
	req.Config.Cmd = nil
	if req.Config.Labels == nil {
		req.Config.Labels = map[string]string{}
	}
	req.Config.Labels[policy.LabelOutput] = OutputDirect
	return bindInit(d, req, ln, sock, fds, kind, opts), OutputDirect, nil
}

// bindInit binds containerjob-init and the handoff socket sock (in the
// launch's stage) into the request, tells the guard of the init's bind,
// and returns the handoff that passes fds, of kind, through ln to the
// container's user.
func bindInit(d *policy.Decision, req *client.ContainerCreateOptions, ln *net.UnixListener, sock string, fds []int, kind byte, opts *Options) *handoff {
	req.HostConfig.Mounts = append(req.HostConfig.Mounts,
		mount.Mount{Type: mount.TypeBind, Source: InitPath, Target: initTarget, ReadOnly: true},
		mount.Mount{Type: mount.TypeBind, Source: sock, Target: handoffTarget, ReadOnly: true})
	opts.added.bindOwn(InitPath, initTarget)
	uid := uint32(0)
	if p := d.Spec.Process; p != nil {
		uid = p.User.UID
	}
	return &handoff{ln: ln, fds: fds, kind: kind, uid: uid, result: make(chan error, 1)}
}

// handoffRefused says why the request keeps the engine's path whatever
// its descriptors are ("" where it need not).
func handoffRefused(req *client.ContainerCreateOptions, img client.ImageInspectResult) string {
	if !initInstalled() {
		return InitPath + " is not installed"
	}
	if argv := engineArgv(req.Config.Entrypoint, req.Config.Cmd, img); len(argv) == 0 || argv[0] == "" {
		return "no command" // the engine's own refusal says it best
	}
	if req.Config.Labels[policy.LabelName] != "" {
		return "a named container (containerjob attach follows its output)"
	}
	if len(req.HostConfig.CapAdd) > 0 {
		// A capability of the container's would act on the caller's
		// descriptors too; keep the engine between them.
		return "the container has capabilities"
	}
	for _, m := range req.HostConfig.Mounts {
		if m.Target == handoffDir || strings.HasPrefix(m.Target, handoffDir+"/") {
			return "a mount at " + handoffDir
		}
	}
	return ""
}

// initInstalled: containerjob-init is a regular file of root's that
// only root can change (it runs in every such container).
func initInstalled() bool {
	var st unix.Stat_t
	if err := unix.Stat(InitPath, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Uid == 0 && st.Mode&0o022 == 0 && st.Mode&0o111 != 0
}

// start serves the handoff from now on: the descriptors go to the first
// connection from the container's user, and the socket's end says what
// became of the command.
func (h *handoff) start() {
	if h == nil {
		return
	}
	h.serving = true
	go func() { h.result <- h.handOver() }()
}

func (h *handoff) handOver() error {
	defer h.release()
	for {
		conn, err := h.ln.AcceptUnix()
		if err != nil {
			return fmt.Errorf("containerjob-init never asked for the job's output (%v)", err)
		}
		if err := h.send(conn); err != nil {
			conn.Close()
			if errors.Is(err, errNotTheContainer) {
				continue
			}
			return err
		}
		defer conn.Close()
		// A message before the end is why the command did not start.
		msg := make([]byte, 4096)
		var got []byte
		for {
			n, err := conn.Read(msg)
			got = append(got, msg[:n]...)
			if err != nil || len(got) >= len(msg) {
				break
			}
		}
		if len(got) == 0 {
			return nil
		}
		return startError(errors.New(string(got)), "")
	}
}

var errNotTheContainer = errors.New("a connection from another user")

// send checks that the peer runs as the container's user (only the
// container reaches the socket: its directory is root's) and sends it
// the descriptors.
func (h *handoff) send(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	if cerr := raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	if cred.Uid != h.uid {
		return errNotTheContainer
	}
	_, _, err = conn.WriteMsgUnix([]byte{h.kind}, unix.UnixRights(h.fds...), nil)
	if err != nil {
		return fmt.Errorf("handing the job's output to the container: %v", err)
	}
	closeAll(h.fds)
	h.fds = nil
	return nil
}

// release closes what the handoff still holds; the socket's file goes
// with the stage.
func (h *handoff) release() {
	closeAll(h.fds)
	h.fds = nil
	h.ln.Close()
}

// close stops a handoff that has not happened (the container ended, or
// the launch failed before it started).
func (h *handoff) close() {
	if h == nil {
		return
	}
	h.ln.Close()
	if !h.serving {
		closeAll(h.fds)
		h.fds = nil
	}
}

// outcome is what became of the handoff once the container has ended:
// nil where the command started.
func (h *handoff) outcome() error {
	select {
	case err := <-h.result:
		return err
	case <-time.After(handoffSettle):
	}
	// Still waiting for a connection: nobody will make one now.
	h.ln.Close()
	select {
	case err := <-h.result:
		return err
	case <-time.After(handoffSettle):
		return fmt.Errorf("containerjob-init said nothing within %s of the container's end", handoffSettle)
	}
}

// watchReaders watches the caller's output streams that are pipes or
// sockets for their reader going away (POLLERR or POLLHUP on the write
// side), as the engine's path noticed on its next write: the container is
// then stopped with the broken-pipe line, not left running with nobody
// taking its output. The command itself runs as its container's PID 1,
// which the kernel spares a SIGPIPE, so it may well not die of it.
func (h *handoff) watchReaders(stdio IO) {
	if h == nil {
		return
	}
	h.gone = make(chan struct{})
	var fds []int
	for _, w := range []any{stdio.Stdout, stdio.Stderr} {
		f, ok := w.(*os.File)
		if !ok {
			continue
		}
		fd, err := dupFile(f)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO && st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			continue
		}
		fds = append(fds, fd)
	}
	if len(fds) == 0 {
		return
	}
	var wake [2]int
	if err := unix.Pipe2(wake[:], unix.O_CLOEXEC); err != nil {
		closeAll(fds)
		return
	}
	h.watched, h.wake = fds, wake[1]
	go func() {
		defer unix.Close(wake[0])
		p := []unix.PollFd{{Fd: int32(wake[0]), Events: unix.POLLIN}}
		for _, fd := range fds {
			p = append(p, unix.PollFd{Fd: int32(fd)})
		}
		for {
			_, err := unix.Poll(p, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil || p[0].Revents != 0 {
				return
			}
			for _, q := range p[1:] {
				if q.Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
					close(h.gone)
					return
				}
			}
		}
	}()
}

// readerGone is closed when a watched stream's reader has gone (nil, a
// channel never ready, where nothing is watched).
func (h *handoff) readerGone() <-chan struct{} {
	if h == nil || h.watched == nil {
		return nil
	}
	return h.gone
}

// readerLost says whether a watched stream's reader is gone now.
func (h *handoff) readerLost() bool {
	if h == nil {
		return false
	}
	for _, fd := range h.watched {
		p := []unix.PollFd{{Fd: int32(fd)}}
		if n, err := unix.Poll(p, 0); err == nil && n == 1 && p[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			return true
		}
	}
	return false
}

// stopWatching ends the watch and closes its copies.
func (h *handoff) stopWatching() {
	if h == nil || h.watched == nil {
		return
	}
	unix.Write(h.wake, []byte{0})
	unix.Close(h.wake)
	closeAll(h.watched)
	h.watched = nil
}

// errBrokenPipe is the launch's error where the caller's output has no
// reader any more: the line and the exit (141, a shell pipeline's writer
// killed by SIGPIPE) of the engine's path.
func errBrokenPipe() error {
	return failf(ExitBrokenPipe, "the container's output has no reader any more (broken pipe); the container was stopped")
}

// killedFirst: containerjob-init never took the descriptors because the
// container was killed first (a signal forwarded, an OOM kill, the
// engine's stop: a status above 128); its exit is then reported as it
// would have been, not as a failed handoff.
func killedFirst(err error, status int64, forwarded bool) bool {
	var lerr *Error
	if errors.As(err, &lerr) {
		return false // the command's own start error
	}
	return forwarded || status > 128
}

// handoffFailed is the launch's error for a handoff that did not start
// the command: the command's own start error as it is, else one line.
func handoffFailed(err error) error {
	var lerr *Error
	if errors.As(err, &lerr) {
		return err
	}
	return failHint(ExitLaunchFailed, "the admin checks "+InitPath+" (containerjob doctor)", "the container's command did not start: %w", err)
}
