// Package enginetest is an in-memory Docker engine for tests of every
// package that drives one (launcher, launch, the CLI): it implements
// launcher.Engine without root, a daemon or a network, and checks what a
// real engine checks where containerjob relies on it.
package enginetest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Engine is an in-memory engine for the launcher's lifecycle: it keeps
// containers and execs, streams over real socket pairs, and runs each
// container's "process" as a Go function. It checks what a real engine
// checks where the launcher relies on it (unique names, not-found and
// conflict errors, no start of a removed container).
type Engine struct {
	Mu         sync.Mutex
	Driver     string           // the cgroup driver Info reports; "" is cgroupfs
	Images     map[string]Image // by ID and by every reference
	Containers map[string]*Container
	Execs      map[string]*Exec
	seq        int
	Calls      []string
	Pulls      []string
	// PullGate, when set, holds every pull until it is closed.
	PullGate chan struct{}
	// RegistryAuth, when set, is the only credential the fake registry
	// accepts (DistributionInspect, pulls); DistChecks records each check.
	RegistryAuth string
	DistChecks   []string
	// Unchanged: the registry serves what the node has, so a pull of a
	// reference the node has leaves its image as it is.
	Unchanged bool
	// PullMessages, when set, is every pull's progress stream (the
	// engine's JSON messages, one per line) instead of a short success.
	PullMessages string
	// Program is what a started container or exec runs, by its command's
	// first word; a command without one exits 0 at once.
	Program map[string]func(p *Proc) int
	// Fault injection.
	CreateErr, StartErr, AttachErr error
	WaitErr                        error // delivered on the wait's error channel
	RemoveErr                      error // every removal fails with it
	OOMOnExit137                   bool
	// OOMLate: the engine tells an OOM kill only after this many
	// inspections of the exited container (its event came late).
	OOMLate, Inspects137 int
	// Down: the engine no longer answers new requests (it is stopping);
	// what is already under way still ends.
	Down         bool
	ExecStartErr string            // written into the exec's stdout, as the engine does
	Network      map[string]string // the isolated bridge's options, once created
	called       *sync.Cond
}

type Image struct {
	ID    string
	Files map[string]File // path -> content, for the archive API
	// Layer is what a commit kept of a container's own writes.
	Layer  map[string]string
	Labels map[string]string
}

type File struct {
	Content string
	Mode    os.FileMode
	Link    string
}

type Container struct {
	ID, Name string
	Req      client.ContainerCreateOptions
	Image    Image
	Layer    map[string]string // its own writes
	State    string            // created, running, exited
	ExitCode int
	server   net.Conn   // the engine's end of the first attach (stdin)
	attached []net.Conn // every attach's end: output goes to all
	done     chan struct{}
	waiters  []chan container.WaitResponse
	Proc     *Proc
	Signals  []string
	Removed  bool
	// Mounted is what each bind mount's source held at start, when runc
	// would have made the mount (files only; directories as "dir").
	Mounted map[string]string
}

type Exec struct {
	ID, CID string
	Opts    client.ExecCreateOptions
	PID     int
	Running bool
	Ended   bool // the engine drops an ended exec from its container's ExecIDs
	Code    int
}

// Proc is a running container's or exec's process.
type Proc struct {
	// Layer is the container's own files, as its programs wrote them
	// (a commit keeps them).
	Layer          map[string]string
	Args           []string
	Env            []string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Signals        chan string
	Killed         <-chan struct{} // closed when the container ends
}

// UntilTerm is a program that says "PREFIXup", then "PREFIXgot SIG" for
// each signal it receives, and exits 143 on SIGTERM.
func UntilTerm(prefix string) func(p *Proc) int {
	return func(p *Proc) int {
		fmt.Fprintln(p.Stdout, prefix+"up")
		for s := range p.Signals {
			fmt.Fprintln(p.Stdout, prefix+"got "+s)
			if s == "SIGTERM" {
				return 143
			}
		}
		return 0
	}
}

// New is an engine holding alpine:3.20 (a few files, /bin/sh). At the
// test's end it fails the test for every container left behind that has
// no name (a named container may outlive a launch) and none of the
// labels in kept (the launcher's mount probes, which it leaves to its
// own cleanup).
func New(t testing.TB, kept ...string) *Engine {
	e := &Engine{
		Images:     map[string]Image{},
		Containers: map[string]*Container{},
		Execs:      map[string]*Exec{},
		Program:    map[string]func(p *Proc) int{},
	}
	e.AddImage("docker.io/library/alpine:3.20", map[string]File{
		"/etc":        {Mode: os.ModeDir | 0o755},
		"/etc/passwd": {Content: "root:x:0:0:root:/root:/bin/sh\n", Mode: 0o644},
		"/etc/group":  {Content: "root:x:0:\n", Mode: 0o644},
		"/bin/sh":     {Content: "ELF", Mode: 0o755},
	})
	// Every test leaves the engine as it found it: no container behind.
	t.Cleanup(func() {
		e.Mu.Lock()
		defer e.Mu.Unlock()
		for _, c := range e.Containers {
			exempt := slices.ContainsFunc(kept, func(l string) bool { return c.Req.Config.Labels[l] != "" })
			if !c.Removed && !exempt && c.Name == "" {
				t.Errorf("container %s (%v) was not removed", c.ID, c.Req.Config.Cmd)
			}
		}
	})
	return e
}

func (e *Engine) AddImage(ref string, files map[string]File) string {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	e.seq++
	id := fmt.Sprintf("sha256:%064x", e.seq)
	img := Image{ID: id, Files: files}
	e.Images[id] = img
	e.Images[ref] = img
	return id
}

func (e *Engine) call(name string) {
	e.Mu.Lock()
	e.Calls = append(e.Calls, name)
	if e.called == nil {
		e.called = sync.NewCond(&e.Mu)
	}
	e.called.Broadcast()
	e.Mu.Unlock()
}

// Count is how often the engine was called by that name so far.
func (e *Engine) Count(name string) int {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	n := 0
	for _, c := range e.Calls {
		if c == name {
			n++
		}
	}
	return n
}

// AwaitCalls blocks until the engine was called by that name n times.
func (e *Engine) AwaitCalls(name string, n int) {
	for {
		e.Mu.Lock()
		if e.called == nil {
			e.called = sync.NewCond(&e.Mu)
		}
		got := 0
		for _, c := range e.Calls {
			if c == name {
				got++
			}
		}
		if got >= n {
			e.Mu.Unlock()
			return
		}
		e.called.Wait()
		e.Mu.Unlock()
	}
}

func (e *Engine) Live() []*Container {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	var out []*Container
	for _, c := range e.Containers {
		if !c.Removed {
			out = append(out, c)
		}
	}
	return out
}

// NotFound is the error the engine gives for what it does not have.
func NotFound(what string) error { return fmt.Errorf("%s: %w", what, cerrdefs.ErrNotFound) }

func (e *Engine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	e.call("ImageInspect")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	img, ok := e.Images[ref]
	if !ok {
		return client.ImageInspectResult{}, NotFound("No such image: " + ref)
	}
	return client.ImageInspectResult{InspectResponse: image.InspectResponse{ID: img.ID, RepoTags: []string{ref}, Config: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}}}}, nil
}

func (e *Engine) DistributionInspect(_ context.Context, ref string, opts client.DistributionInspectOptions) (client.DistributionInspectResult, error) {
	e.call("DistributionInspect")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	e.DistChecks = append(e.DistChecks, ref)
	if e.RegistryAuth != "" && opts.EncodedRegistryAuth != e.RegistryAuth {
		//lint:ignore ST1005 the engine's own words, as containerjob meets them
		return client.DistributionInspectResult{}, fmt.Errorf("Error response from daemon: unauthorized: authentication required")
	}
	return client.DistributionInspectResult{}, nil
}

func (e *Engine) PullCount() int {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	return len(e.Pulls)
}

func (e *Engine) ImagePull(_ context.Context, ref string, opts client.ImagePullOptions) (client.ImagePullResponse, error) {
	e.call("ImagePull")
	e.Mu.Lock()
	e.Pulls = append(e.Pulls, ref)
	private := e.RegistryAuth != "" && opts.RegistryAuth != e.RegistryAuth
	e.Mu.Unlock()
	if private {
		//lint:ignore ST1005 the engine's own words, as containerjob meets them
		return nil, fmt.Errorf("Error response from daemon: pull access denied for %s: unauthorized", ref)
	}
	if strings.Contains(ref, "unreachable") {
		//lint:ignore ST1005 the engine's own words, as containerjob meets them
		return nil, fmt.Errorf("Get https://registry/v2/: dial tcp: connection refused")
	}
	if e.PullGate != nil {
		<-e.PullGate
	}
	e.Mu.Lock()
	_, have := e.Images[ref]
	e.Mu.Unlock()
	if !have || !e.Unchanged {
		e.AddImage(ref, map[string]File{"/bin/sh": {Content: "ELF", Mode: 0o755}})
	}
	msgs := `{"status":"Pulling from library/x","id":"3.20"}` + "\n" + `{"status":"Download complete","id":"abc"}` + "\n"
	if e.PullMessages != "" {
		msgs = e.PullMessages
	}
	return pullResponse{io.NopCloser(strings.NewReader(msgs))}, nil
}

func (e *Engine) ContainerCreate(_ context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	e.call("ContainerCreate")
	if e.CreateErr != nil {
		return client.ContainerCreateResult{}, e.CreateErr
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	img, ok := e.Images[opts.Config.Image]
	if !ok {
		return client.ContainerCreateResult{}, NotFound("No such image: " + opts.Config.Image)
	}
	if opts.Name != "" {
		for _, c := range e.Containers {
			if !c.Removed && c.Name == opts.Name {
				return client.ContainerCreateResult{}, fmt.Errorf("the container name %q is already in use: %w", opts.Name, cerrdefs.ErrConflict)
			}
		}
	}
	e.seq++
	id := newID(e.seq)
	layer := map[string]string{}
	for k, v := range img.Layer {
		layer[k] = v
	}
	e.Containers[id] = &Container{ID: id, Name: opts.Name, Req: opts, Image: img, State: "created", Layer: layer}
	return client.ContainerCreateResult{ID: id}, nil
}

func (e *Engine) ContainerCommit(_ context.Context, id string, opts client.ContainerCommitOptions) (client.ContainerCommitResult, error) {
	e.call("ContainerCommit")
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerCommitResult{}, err
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	e.seq++
	img := Image{ID: fmt.Sprintf("sha256:%064x", e.seq), Files: c.Image.Files, Layer: map[string]string{}, Labels: map[string]string{}}
	for k, v := range c.Layer {
		img.Layer[k] = v
	}
	for _, ch := range opts.Changes {
		if kv, ok := strings.CutPrefix(ch, "LABEL "); ok {
			k, v, _ := strings.Cut(kv, "=")
			img.Labels[k] = v
		}
	}
	e.Images[img.ID] = img
	return client.ContainerCommitResult{ID: img.ID}, nil
}

func (e *Engine) ImageRemove(_ context.Context, ref string, _ client.ImageRemoveOptions) (client.ImageRemoveResult, error) {
	e.call("ImageRemove")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if _, ok := e.Images[ref]; !ok {
		return client.ImageRemoveResult{}, NotFound("No such image: " + ref)
	}
	delete(e.Images, ref)
	return client.ImageRemoveResult{}, nil
}

func (e *Engine) Find(id string) (*Container, error) {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if c, ok := e.Containers[id]; ok && !c.Removed {
		return c, nil
	}
	for _, c := range e.Containers {
		if !c.Removed && c.Name != "" && (c.Name == id || "/"+c.Name == id) {
			return c, nil
		}
	}
	return nil, NotFound("No such container: " + id)
}

// socketPair is a real, bidirectional, half-closable stream.
func socketPair() (client, server net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "fake-stream")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			panic(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

func (e *Engine) ContainerAttach(_ context.Context, id string, _ client.ContainerAttachOptions) (client.ContainerAttachResult, error) {
	e.call("ContainerAttach")
	if e.AttachErr != nil {
		return client.ContainerAttachResult{}, e.AttachErr
	}
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerAttachResult{}, err
	}
	cl, srv := socketPair()
	e.Mu.Lock()
	if c.server == nil {
		c.server = srv
	}
	c.attached = append(c.attached, srv)
	e.Mu.Unlock()
	return client.ContainerAttachResult{HijackedResponse: client.NewHijackedResponse(cl, "")}, nil
}

func (e *Engine) ContainerStart(_ context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	e.call("ContainerStart")
	if e.StartErr != nil {
		return client.ContainerStartResult{}, e.StartErr
	}
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerStartResult{}, err
	}
	e.Mu.Lock()
	if c.State == "running" {
		e.Mu.Unlock()
		return client.ContainerStartResult{}, nil
	}
	c.State = "running"
	c.Mounted = map[string]string{}
	for _, m := range c.Req.HostConfig.Mounts {
		if st, err := os.Stat(m.Source); err != nil {
			c.Mounted[m.Target] = "missing: " + err.Error()
		} else if st.IsDir() {
			c.Mounted[m.Target] = "dir"
		} else {
			b, _ := os.ReadFile(m.Source)
			c.Mounted[m.Target] = string(b)
		}
	}
	args := append(append([]string{}, c.Req.Config.Entrypoint...), c.Req.Config.Cmd...)
	c.done = make(chan struct{})
	p := &Proc{Args: args, Env: c.Req.Config.Env, Signals: make(chan string, 16), Killed: c.done, Stdin: strings.NewReader(""), Layer: c.Layer}
	if c.server != nil {
		p.Stdin = c.server
	}
	out := fanout{e, c}
	if c.Req.Config.Tty {
		p.Stdout, p.Stderr = out, out
	} else {
		p.Stdout, p.Stderr = muxWriter{out, 1}, muxWriter{out, 2}
	}
	c.Proc = p
	e.Mu.Unlock()
	go func() { e.exit(c, e.run(p)) }()
	return client.ContainerStartResult{}, nil
}

// fanout writes a container's output to every attached stream, as the
// engine does; a stream that went away is skipped. Once the container
// has ended, writes fail.
type fanout struct {
	e *Engine
	c *Container
}

func (f fanout) Write(p []byte) (int, error) {
	f.e.Mu.Lock()
	conns, ended := slices.Clone(f.c.attached), f.c.State != "running"
	f.e.Mu.Unlock()
	if ended {
		return 0, io.ErrClosedPipe
	}
	for _, c := range conns {
		c.Write(p)
	}
	return len(p), nil
}

func (e *Engine) run(p *Proc) int {
	if len(p.Args) == 0 {
		return 0
	}
	e.Mu.Lock()
	prog := e.Program[p.Args[0]]
	e.Mu.Unlock()
	if prog == nil {
		return 0
	}
	return prog(p)
}

func (e *Engine) exit(c *Container, code int) {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if c.State != "running" {
		return
	}
	c.State, c.ExitCode = "exited", code
	for _, conn := range c.attached {
		conn.Close()
	}
	c.attached = nil
	if c.done != nil {
		close(c.done)
	}
	for _, w := range c.waiters {
		w <- container.WaitResponse{StatusCode: int64(code)}
	}
	c.waiters = nil
}

func (e *Engine) ContainerWait(_ context.Context, id string, _ client.ContainerWaitOptions) client.ContainerWaitResult {
	e.call("ContainerWait")
	res := make(chan container.WaitResponse, 1)
	errc := make(chan error, 1)
	c, err := e.Find(id)
	if err != nil {
		errc <- err
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if e.WaitErr != nil {
		errc <- e.WaitErr
	} else {
		c.waiters = append(c.waiters, res)
	}
	return client.ContainerWaitResult{Result: res, Error: errc}
}

func (e *Engine) ContainerKill(_ context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error) {
	e.call("ContainerKill " + opts.Signal)
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerKillResult{}, err
	}
	e.Mu.Lock()
	c.Signals = append(c.Signals, opts.Signal)
	running, p := c.State == "running", c.Proc
	e.Mu.Unlock()
	if !running {
		return client.ContainerKillResult{}, fmt.Errorf("container %s is not running: %w", id, cerrdefs.ErrConflict)
	}
	if opts.Signal == "SIGKILL" || opts.Signal == "KILL" {
		e.exit(c, 137)
		return client.ContainerKillResult{}, nil
	}
	p.Signals <- opts.Signal
	return client.ContainerKillResult{}, nil
}

func (e *Engine) ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error) {
	e.call("ContainerStop")
	sig := opts.Signal
	if sig == "" {
		sig = "SIGTERM"
	}
	_, err := e.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: sig})
	return client.ContainerStopResult{}, err
}

func (e *Engine) ContainerRemove(_ context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	e.Mu.Lock()
	if e.Down {
		// Back up for the removal: the test checks nothing is left.
		e.Down = false
	}
	e.Mu.Unlock()
	e.call("ContainerRemove")
	if e.RemoveErr != nil {
		return client.ContainerRemoveResult{}, e.RemoveErr
	}
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerRemoveResult{}, err
	}
	e.Mu.Lock()
	running := c.State == "running"
	e.Mu.Unlock()
	if running && !opts.Force {
		return client.ContainerRemoveResult{}, fmt.Errorf("container is running: %w", cerrdefs.ErrConflict)
	}
	if running {
		e.exit(c, 137)
	}
	e.Mu.Lock()
	c.Removed = true
	e.Mu.Unlock()
	return client.ContainerRemoveResult{}, nil
}

func (e *Engine) ContainerResize(context.Context, string, client.ContainerResizeOptions) (client.ContainerResizeResult, error) {
	return client.ContainerResizeResult{}, nil
}

func (e *Engine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	e.call("ContainerInspect")
	e.Mu.Lock()
	down := e.Down
	e.Mu.Unlock()
	if down {
		//lint:ignore ST1005 the engine's own words, as containerjob meets them
		return client.ContainerInspectResult{}, fmt.Errorf("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
	}
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerInspectResult{}, err
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if c.ExitCode == 137 {
		e.Inspects137++
	}
	st := &container.State{Status: container.ContainerState(c.State), Running: c.State == "running", ExitCode: c.ExitCode,
		OOMKilled: e.OOMOnExit137 && c.ExitCode == 137 && e.Inspects137 > e.OOMLate}
	if c.State == "running" {
		st.Pid = 4242
	}
	var execs []string
	for _, x := range e.Execs {
		if x.CID == c.ID && !x.Ended {
			execs = append(execs, x.ID)
		}
	}
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.ID, Name: "/" + c.Name, Image: c.Image.ID, State: st, Config: c.Req.Config, HostConfig: c.Req.HostConfig, ExecIDs: execs,
	}}, nil
}

func (e *Engine) ContainerList(_ context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	e.call("ContainerList")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	var out client.ContainerListResult
	for _, c := range e.Containers {
		if c.Removed || (!opts.All && c.State != "running") {
			continue
		}
		match := true
		for f := range opts.Filters["label"] {
			k, v, _ := strings.Cut(f, "=")
			if c.Req.Config.Labels[k] != v {
				match = false
			}
		}
		if match {
			out.Items = append(out.Items, container.Summary{ID: c.ID, Names: []string{"/" + c.Name}, State: container.ContainerState(c.State), Labels: c.Req.Config.Labels})
		}
	}
	return out, nil
}

func (e *Engine) ExecCreate(_ context.Context, id string, opts client.ExecCreateOptions) (client.ExecCreateResult, error) {
	e.call("ExecCreate")
	c, err := e.Find(id)
	if err != nil {
		return client.ExecCreateResult{}, err
	}
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if c.State != "running" {
		return client.ExecCreateResult{}, fmt.Errorf("container %s is not running: %w", id, cerrdefs.ErrConflict)
	}
	e.seq++
	x := &Exec{ID: fmt.Sprintf("exec%d", e.seq), CID: c.ID, Opts: opts}
	e.Execs[x.ID] = x
	return client.ExecCreateResult{ID: x.ID}, nil
}

func (e *Engine) ExecAttach(_ context.Context, execID string, opts client.ExecAttachOptions) (client.ExecAttachResult, error) {
	e.call("ExecAttach")
	e.Mu.Lock()
	x, ok := e.Execs[execID]
	startErr := e.ExecStartErr
	e.Mu.Unlock()
	if !ok {
		return client.ExecAttachResult{}, NotFound("No such exec instance: " + execID)
	}
	cl, srv := socketPair()
	var stdout, stderr io.Writer = srv, srv
	if !opts.TTY {
		stdout, stderr = muxWriter{srv, 1}, muxWriter{srv, 2}
	}
	go func() {
		defer srv.Close()
		if startErr != "" {
			// The engine reports a failed start in the process's own stream.
			stdout.Write([]byte(startErr + "\r\n"))
			e.Mu.Lock()
			x.Code, x.Ended = 126, true
			e.Mu.Unlock()
			return
		}
		var layer map[string]string
		if c, err := e.Find(x.CID); err == nil {
			layer = c.Layer
		}
		p := &Proc{Args: x.Opts.Cmd, Env: x.Opts.Env, Stdin: srv, Stdout: stdout, Stderr: stderr, Signals: make(chan string, 16), Layer: layer}
		e.Mu.Lock()
		x.PID, x.Running = 4243, true
		e.Mu.Unlock()
		code := e.run(p)
		e.Mu.Lock()
		x.Running, x.Code, x.Ended = false, code, true
		e.Mu.Unlock()
	}()
	return client.ExecAttachResult{HijackedResponse: client.NewHijackedResponse(cl, "")}, nil
}

func (e *Engine) ExecInspect(_ context.Context, execID string, _ client.ExecInspectOptions) (client.ExecInspectResult, error) {
	e.call("ExecInspect")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	x, ok := e.Execs[execID]
	if !ok {
		return client.ExecInspectResult{}, NotFound("No such exec instance: " + execID)
	}
	return client.ExecInspectResult{ID: x.ID, ContainerID: x.CID, Running: x.Running, ExitCode: x.Code, PID: x.PID}, nil
}

func (e *Engine) ContainerLogs(context.Context, string, client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	return nil, fmt.Errorf("the fake engine keeps no logs")
}

func (e *Engine) ImageList(_ context.Context, opts client.ImageListOptions) (client.ImageListResult, error) {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	var out client.ImageListResult
	if labels := opts.Filters["label"]; len(labels) > 0 {
		// By label: every image (tagged or not) that has them all.
		for ref, img := range e.Images {
			match := ref == img.ID
			for kv := range labels {
				k, v, _ := strings.Cut(kv, "=")
				match = match && img.Labels[k] == v
			}
			if match {
				out.Items = append(out.Items, image.Summary{ID: img.ID, Labels: img.Labels})
			}
		}
		return out, nil
	}
	for ref, img := range e.Images {
		if ref != img.ID {
			out.Items = append(out.Items, image.Summary{ID: img.ID, RepoTags: []string{ref}})
		}
	}
	return out, nil
}

func (e *Engine) NetworkInspect(_ context.Context, id string, _ client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	e.call("NetworkInspect")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	if e.Network == nil {
		return client.NetworkInspectResult{}, NotFound("network " + id)
	}
	return client.NetworkInspectResult{Network: network.Inspect{Network: network.Network{Name: id, Driver: "bridge", Options: e.Network}}}, nil
}

func (e *Engine) NetworkCreate(_ context.Context, _ string, opts client.NetworkCreateOptions) (client.NetworkCreateResult, error) {
	e.call("NetworkCreate")
	e.Mu.Lock()
	defer e.Mu.Unlock()
	e.Network = opts.Options
	return client.NetworkCreateResult{}, nil
}

func (e *Engine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	e.Mu.Lock()
	defer e.Mu.Unlock()
	driver := e.Driver
	if driver == "" {
		driver = "cgroupfs"
	}
	return client.SystemInfoResult{Info: system.Info{CgroupDriver: driver}}, nil
}

// ServerVersion answers as Docker 28.5 would.
func (e *Engine) ServerVersion(context.Context, client.ServerVersionOptions) (client.ServerVersionResult, error) {
	e.call("ServerVersion")
	return client.ServerVersionResult{Version: "28.5.2-fake", APIVersion: "1.51"}, nil
}

func (e *Engine) ContainerStatPath(_ context.Context, id string, opts client.ContainerStatPathOptions) (client.ContainerStatPathResult, error) {
	e.call("ContainerStatPath")
	c, err := e.Find(id)
	if err != nil {
		return client.ContainerStatPathResult{}, err
	}
	f, ok := c.Image.Files[opts.Path]
	if !ok {
		return client.ContainerStatPathResult{}, NotFound("Could not find the file " + opts.Path + " in container " + id)
	}
	return client.ContainerStatPathResult{Stat: container.PathStat{Name: opts.Path, Size: int64(len(f.Content)), Mode: f.Mode, LinkTarget: f.Link}}, nil
}

func (e *Engine) CopyFromContainer(_ context.Context, id string, opts client.CopyFromContainerOptions) (client.CopyFromContainerResult, error) {
	e.call("CopyFromContainer")
	c, err := e.Find(id)
	if err != nil {
		return client.CopyFromContainerResult{}, err
	}
	f, ok := c.Image.Files[opts.SourcePath]
	if !ok {
		return client.CopyFromContainerResult{}, NotFound(opts.SourcePath)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(opts.SourcePath, "/"), Mode: int64(f.Mode.Perm()), Size: int64(len(f.Content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(f.Content))
	tw.Close()
	return client.CopyFromContainerResult{Content: io.NopCloser(&b)}, nil
}

// pullResponse is an ImagePullResponse: the engine's JSON progress stream.
type pullResponse struct{ io.ReadCloser }

func (p pullResponse) JSONMessages(ctx context.Context) iter.Seq2[jsonstream.Message, error] {
	return func(yield func(jsonstream.Message, error) bool) {
		dec := json.NewDecoder(p.ReadCloser)
		for {
			var m jsonstream.Message
			if err := dec.Decode(&m); err == io.EOF {
				return
			} else if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

func (p pullResponse) Wait(context.Context) error { return nil }

// muxWriter frames writes as the engine's multiplexed stream does: a
// header of the stream number and the payload's big-endian length.
type muxWriter struct {
	w      io.Writer
	stream byte
}

func (m muxWriter) Write(p []byte) (int, error) {
	hdr := []byte{m.stream, 0, 0, 0, byte(len(p) >> 24), byte(len(p) >> 16), byte(len(p) >> 8), byte(len(p))}
	if _, err := m.w.Write(append(hdr, p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// PullResponse is a pull's answer that streams r, as the engine streams
// its progress messages.
func PullResponse(r io.Reader) client.ImagePullResponse { return pullResponse{io.NopCloser(r)} }

// newID is a container id whose short form differs from every other's,
// as the engine's random ids do.
func newID(seq int) string {
	return fmt.Sprintf("%016x%048x", uint64(seq)*0x9E3779B97F4A7C15, seq)
}
