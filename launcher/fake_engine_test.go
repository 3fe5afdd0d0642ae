package launcher

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

// fakeEngine is an in-memory engine for the launcher's lifecycle: it keeps
// containers and execs, streams over real socket pairs, and runs each
// container's "process" as a Go function. It checks what a real engine
// checks where the launcher relies on it (unique names, not-found and
// conflict errors, no start of a removed container).
type fakeEngine struct {
	mu         sync.Mutex
	driver     string               // the cgroup driver Info reports; "" is cgroupfs
	images     map[string]fakeImage // by ID and by every reference
	containers map[string]*fakeContainer
	execs      map[string]*fakeExec
	seq        int
	calls      []string
	pulls      []string
	// pullGate, when set, holds every pull until it is closed.
	pullGate chan struct{}
	// registryAuth, when set, is the only credential the fake registry
	// accepts (DistributionInspect, pulls); distChecks records each check.
	registryAuth string
	distChecks   []string
	// unchanged: the registry serves what the node has, so a pull of a
	// reference the node has leaves its image as it is.
	unchanged bool
	// program is what a started container or exec runs, by its command's
	// first word; a command without one exits 0 at once.
	program map[string]func(p *fakeProc) int
	// Fault injection.
	createErr, startErr, attachErr error
	waitErr                        error // delivered on the wait's error channel
	oomOnExit137                   bool
	// oomLate: the engine tells an OOM kill only after this many
	// inspections of the exited container (its event came late).
	oomLate, inspects137 int
	// down: the engine no longer answers new requests (it is stopping);
	// what is already under way still ends.
	down         bool
	execStartErr string            // written into the exec's stdout, as the engine does
	network      map[string]string // the isolated bridge's options, once created
	called       *sync.Cond
}

type fakeImage struct {
	id    string
	files map[string]fakeFile // path -> content, for the archive API
	// layer is what a commit kept of a container's own writes.
	layer  map[string]string
	labels map[string]string
}

type fakeFile struct {
	content string
	mode    os.FileMode
	link    string
}

type fakeContainer struct {
	id, name string
	req      client.ContainerCreateOptions
	image    fakeImage
	layer    map[string]string // its own writes
	state    string            // created, running, exited
	exitCode int
	server   net.Conn   // the engine's end of the first attach (stdin)
	attached []net.Conn // every attach's end: output goes to all
	done     chan struct{}
	waiters  []chan container.WaitResponse
	proc     *fakeProc
	signals  []string
	removed  bool
	// mounted is what each bind mount's source held at start, when runc
	// would have made the mount (files only; directories as "dir").
	mounted map[string]string
}

type fakeExec struct {
	id, cid string
	opts    client.ExecCreateOptions
	pid     int
	running bool
	ended   bool // the engine drops an ended exec from its container's ExecIDs
	code    int
}

// fakeProc is a running container's or exec's process.
type fakeProc struct {
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

// untilTerm is a program that says "PREFIXup", then "PREFIXgot SIG" for
// each signal it receives, and exits 143 on SIGTERM.
func untilTerm(prefix string) func(p *fakeProc) int {
	return func(p *fakeProc) int {
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

func newFakeEngine(t *testing.T) *fakeEngine {
	e := &fakeEngine{
		images:     map[string]fakeImage{},
		containers: map[string]*fakeContainer{},
		execs:      map[string]*fakeExec{},
		program:    map[string]func(p *fakeProc) int{},
	}
	e.addImage("docker.io/library/alpine:3.20", map[string]fakeFile{
		"/etc":        {mode: os.ModeDir | 0o755},
		"/etc/passwd": {content: "root:x:0:0:root:/root:/bin/sh\n", mode: 0o644},
		"/etc/group":  {content: "root:x:0:\n", mode: 0o644},
		"/bin/sh":     {content: "ELF", mode: 0o755},
	})
	// Every test leaves the engine as it found it: no container behind.
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, c := range e.containers {
			if !c.removed && c.req.Config.Labels[LabelProbe] == "" && c.name == "" {
				t.Errorf("container %s (%v) was not removed", c.id, c.req.Config.Cmd)
			}
		}
	})
	return e
}

func (e *fakeEngine) addImage(ref string, files map[string]fakeFile) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	id := fmt.Sprintf("sha256:%064x", e.seq)
	img := fakeImage{id: id, files: files}
	e.images[id] = img
	e.images[ref] = img
	return id
}

func (e *fakeEngine) call(name string) {
	e.mu.Lock()
	e.calls = append(e.calls, name)
	if e.called == nil {
		e.called = sync.NewCond(&e.mu)
	}
	e.called.Broadcast()
	e.mu.Unlock()
}

// count is how often the engine was called by that name so far.
func (e *fakeEngine) count(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.calls {
		if c == name {
			n++
		}
	}
	return n
}

// awaitCalls blocks until the engine was called by that name n times.
func (e *fakeEngine) awaitCalls(name string, n int) {
	for {
		e.mu.Lock()
		if e.called == nil {
			e.called = sync.NewCond(&e.mu)
		}
		got := 0
		for _, c := range e.calls {
			if c == name {
				got++
			}
		}
		if got >= n {
			e.mu.Unlock()
			return
		}
		e.called.Wait()
		e.mu.Unlock()
	}
}

func (e *fakeEngine) live() []*fakeContainer {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*fakeContainer
	for _, c := range e.containers {
		if !c.removed {
			out = append(out, c)
		}
	}
	return out
}

func notFound(what string) error { return fmt.Errorf("%s: %w", what, cerrdefs.ErrNotFound) }

func (e *fakeEngine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	e.call("ImageInspect")
	e.mu.Lock()
	defer e.mu.Unlock()
	img, ok := e.images[ref]
	if !ok {
		return client.ImageInspectResult{}, notFound("No such image: " + ref)
	}
	return client.ImageInspectResult{InspectResponse: image.InspectResponse{ID: img.id, RepoTags: []string{ref}, Config: &dockerspec.DockerOCIImageConfig{ImageConfig: ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}}}}, nil
}

func (e *fakeEngine) DistributionInspect(_ context.Context, ref string, opts client.DistributionInspectOptions) (client.DistributionInspectResult, error) {
	e.call("DistributionInspect")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.distChecks = append(e.distChecks, ref)
	if e.registryAuth != "" && opts.EncodedRegistryAuth != e.registryAuth {
		return client.DistributionInspectResult{}, fmt.Errorf("Error response from daemon: unauthorized: authentication required")
	}
	return client.DistributionInspectResult{}, nil
}

func (e *fakeEngine) pullCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pulls)
}

func (e *fakeEngine) ImagePull(_ context.Context, ref string, opts client.ImagePullOptions) (client.ImagePullResponse, error) {
	e.call("ImagePull")
	e.mu.Lock()
	e.pulls = append(e.pulls, ref)
	private := e.registryAuth != "" && opts.RegistryAuth != e.registryAuth
	e.mu.Unlock()
	if private {
		return nil, fmt.Errorf("Error response from daemon: pull access denied for %s: unauthorized", ref)
	}
	if strings.Contains(ref, "unreachable") {
		return nil, fmt.Errorf("Get https://registry/v2/: dial tcp: connection refused")
	}
	if e.pullGate != nil {
		<-e.pullGate
	}
	e.mu.Lock()
	_, have := e.images[ref]
	e.mu.Unlock()
	if !have || !e.unchanged {
		e.addImage(ref, map[string]fakeFile{"/bin/sh": {content: "ELF", mode: 0o755}})
	}
	msgs := `{"status":"Pulling from library/x","id":"3.20"}` + "\n" + `{"status":"Download complete","id":"abc"}` + "\n"
	return fakePull{io.NopCloser(strings.NewReader(msgs))}, nil
}

func (e *fakeEngine) ContainerCreate(_ context.Context, opts client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	e.call("ContainerCreate")
	if e.createErr != nil {
		return client.ContainerCreateResult{}, e.createErr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	img, ok := e.images[opts.Config.Image]
	if !ok {
		return client.ContainerCreateResult{}, notFound("No such image: " + opts.Config.Image)
	}
	if opts.Name != "" {
		for _, c := range e.containers {
			if !c.removed && c.name == opts.Name {
				return client.ContainerCreateResult{}, fmt.Errorf("the container name %q is already in use: %w", opts.Name, cerrdefs.ErrConflict)
			}
		}
	}
	e.seq++
	id := fmt.Sprintf("%064x", e.seq)
	layer := map[string]string{}
	for k, v := range img.layer {
		layer[k] = v
	}
	e.containers[id] = &fakeContainer{id: id, name: opts.Name, req: opts, image: img, state: "created", layer: layer}
	return client.ContainerCreateResult{ID: id}, nil
}

func (e *fakeEngine) ContainerCommit(_ context.Context, id string, opts client.ContainerCommitOptions) (client.ContainerCommitResult, error) {
	e.call("ContainerCommit")
	c, err := e.find(id)
	if err != nil {
		return client.ContainerCommitResult{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	img := fakeImage{id: fmt.Sprintf("sha256:%064x", e.seq), files: c.image.files, layer: map[string]string{}, labels: map[string]string{}}
	for k, v := range c.layer {
		img.layer[k] = v
	}
	for _, ch := range opts.Changes {
		if kv, ok := strings.CutPrefix(ch, "LABEL "); ok {
			k, v, _ := strings.Cut(kv, "=")
			img.labels[k] = v
		}
	}
	e.images[img.id] = img
	return client.ContainerCommitResult{ID: img.id}, nil
}

func (e *fakeEngine) ImageRemove(_ context.Context, ref string, _ client.ImageRemoveOptions) (client.ImageRemoveResult, error) {
	e.call("ImageRemove")
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.images[ref]; !ok {
		return client.ImageRemoveResult{}, notFound("No such image: " + ref)
	}
	delete(e.images, ref)
	return client.ImageRemoveResult{}, nil
}

func (e *fakeEngine) find(id string) (*fakeContainer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.containers[id]; ok && !c.removed {
		return c, nil
	}
	for _, c := range e.containers {
		if !c.removed && c.name != "" && (c.name == id || "/"+c.name == id) {
			return c, nil
		}
	}
	return nil, notFound("No such container: " + id)
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

func (e *fakeEngine) ContainerAttach(_ context.Context, id string, _ client.ContainerAttachOptions) (client.ContainerAttachResult, error) {
	e.call("ContainerAttach")
	if e.attachErr != nil {
		return client.ContainerAttachResult{}, e.attachErr
	}
	c, err := e.find(id)
	if err != nil {
		return client.ContainerAttachResult{}, err
	}
	cl, srv := socketPair()
	e.mu.Lock()
	if c.server == nil {
		c.server = srv
	}
	c.attached = append(c.attached, srv)
	e.mu.Unlock()
	return client.ContainerAttachResult{HijackedResponse: client.NewHijackedResponse(cl, "")}, nil
}

func (e *fakeEngine) ContainerStart(_ context.Context, id string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	e.call("ContainerStart")
	if e.startErr != nil {
		return client.ContainerStartResult{}, e.startErr
	}
	c, err := e.find(id)
	if err != nil {
		return client.ContainerStartResult{}, err
	}
	e.mu.Lock()
	if c.state == "running" {
		e.mu.Unlock()
		return client.ContainerStartResult{}, nil
	}
	c.state = "running"
	c.mounted = map[string]string{}
	for _, m := range c.req.HostConfig.Mounts {
		if st, err := os.Stat(m.Source); err != nil {
			c.mounted[m.Target] = "missing: " + err.Error()
		} else if st.IsDir() {
			c.mounted[m.Target] = "dir"
		} else {
			b, _ := os.ReadFile(m.Source)
			c.mounted[m.Target] = string(b)
		}
	}
	args := append(append([]string{}, c.req.Config.Entrypoint...), c.req.Config.Cmd...)
	c.done = make(chan struct{})
	p := &fakeProc{Args: args, Env: c.req.Config.Env, Signals: make(chan string, 16), Killed: c.done, Stdin: strings.NewReader(""), Layer: c.layer}
	if c.server != nil {
		p.Stdin = c.server
	}
	out := fanout{e, c}
	if c.req.Config.Tty {
		p.Stdout, p.Stderr = out, out
	} else {
		p.Stdout, p.Stderr = muxWriter{out, 1}, muxWriter{out, 2}
	}
	c.proc = p
	e.mu.Unlock()
	go func() { e.exit(c, e.run(p)) }()
	return client.ContainerStartResult{}, nil
}

// fanout writes a container's output to every attached stream, as the
// engine does; a stream that went away is skipped. Once the container
// has ended, writes fail.
type fanout struct {
	e *fakeEngine
	c *fakeContainer
}

func (f fanout) Write(p []byte) (int, error) {
	f.e.mu.Lock()
	conns, ended := slices.Clone(f.c.attached), f.c.state != "running"
	f.e.mu.Unlock()
	if ended {
		return 0, io.ErrClosedPipe
	}
	for _, c := range conns {
		c.Write(p)
	}
	return len(p), nil
}

func (e *fakeEngine) run(p *fakeProc) int {
	if len(p.Args) == 0 {
		return 0
	}
	e.mu.Lock()
	prog := e.program[p.Args[0]]
	e.mu.Unlock()
	if prog == nil {
		return 0
	}
	return prog(p)
}

func (e *fakeEngine) exit(c *fakeContainer, code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.state != "running" {
		return
	}
	c.state, c.exitCode = "exited", code
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

func (e *fakeEngine) ContainerWait(_ context.Context, id string, _ client.ContainerWaitOptions) client.ContainerWaitResult {
	e.call("ContainerWait")
	res := make(chan container.WaitResponse, 1)
	errc := make(chan error, 1)
	c, err := e.find(id)
	if err != nil {
		errc <- err
		return client.ContainerWaitResult{Result: res, Error: errc}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waitErr != nil {
		errc <- e.waitErr
	} else {
		c.waiters = append(c.waiters, res)
	}
	return client.ContainerWaitResult{Result: res, Error: errc}
}

func (e *fakeEngine) ContainerKill(_ context.Context, id string, opts client.ContainerKillOptions) (client.ContainerKillResult, error) {
	e.call("ContainerKill " + opts.Signal)
	c, err := e.find(id)
	if err != nil {
		return client.ContainerKillResult{}, err
	}
	e.mu.Lock()
	c.signals = append(c.signals, opts.Signal)
	running, p := c.state == "running", c.proc
	e.mu.Unlock()
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

func (e *fakeEngine) ContainerStop(ctx context.Context, id string, opts client.ContainerStopOptions) (client.ContainerStopResult, error) {
	e.call("ContainerStop")
	sig := opts.Signal
	if sig == "" {
		sig = "SIGTERM"
	}
	_, err := e.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: sig})
	return client.ContainerStopResult{}, err
}

func (e *fakeEngine) ContainerRemove(_ context.Context, id string, opts client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	e.mu.Lock()
	if e.down {
		// Back up for the removal: the test checks nothing is left.
		e.down = false
	}
	e.mu.Unlock()
	e.call("ContainerRemove")
	c, err := e.find(id)
	if err != nil {
		return client.ContainerRemoveResult{}, err
	}
	e.mu.Lock()
	running := c.state == "running"
	e.mu.Unlock()
	if running && !opts.Force {
		return client.ContainerRemoveResult{}, fmt.Errorf("container is running: %w", cerrdefs.ErrConflict)
	}
	if running {
		e.exit(c, 137)
	}
	e.mu.Lock()
	c.removed = true
	e.mu.Unlock()
	return client.ContainerRemoveResult{}, nil
}

func (e *fakeEngine) ContainerResize(context.Context, string, client.ContainerResizeOptions) (client.ContainerResizeResult, error) {
	return client.ContainerResizeResult{}, nil
}

func (e *fakeEngine) ContainerInspect(_ context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	e.call("ContainerInspect")
	e.mu.Lock()
	down := e.down
	e.mu.Unlock()
	if down {
		return client.ContainerInspectResult{}, fmt.Errorf("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
	}
	c, err := e.find(id)
	if err != nil {
		return client.ContainerInspectResult{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.exitCode == 137 {
		e.inspects137++
	}
	st := &container.State{Status: container.ContainerState(c.state), Running: c.state == "running", ExitCode: c.exitCode,
		OOMKilled: e.oomOnExit137 && c.exitCode == 137 && e.inspects137 > e.oomLate}
	if c.state == "running" {
		st.Pid = 4242
	}
	var execs []string
	for _, x := range e.execs {
		if x.cid == c.id && !x.ended {
			execs = append(execs, x.id)
		}
	}
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID: c.id, Name: "/" + c.name, Image: c.image.id, State: st, Config: c.req.Config, HostConfig: c.req.HostConfig, ExecIDs: execs,
	}}, nil
}

func (e *fakeEngine) ContainerList(_ context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error) {
	e.call("ContainerList")
	e.mu.Lock()
	defer e.mu.Unlock()
	var out client.ContainerListResult
	for _, c := range e.containers {
		if c.removed || (!opts.All && c.state != "running") {
			continue
		}
		match := true
		for f := range opts.Filters["label"] {
			k, v, _ := strings.Cut(f, "=")
			if c.req.Config.Labels[k] != v {
				match = false
			}
		}
		if match {
			out.Items = append(out.Items, container.Summary{ID: c.id, Names: []string{"/" + c.name}, State: container.ContainerState(c.state), Labels: c.req.Config.Labels})
		}
	}
	return out, nil
}

func (e *fakeEngine) ExecCreate(_ context.Context, id string, opts client.ExecCreateOptions) (client.ExecCreateResult, error) {
	e.call("ExecCreate")
	c, err := e.find(id)
	if err != nil {
		return client.ExecCreateResult{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.state != "running" {
		return client.ExecCreateResult{}, fmt.Errorf("container %s is not running: %w", id, cerrdefs.ErrConflict)
	}
	e.seq++
	x := &fakeExec{id: fmt.Sprintf("exec%d", e.seq), cid: c.id, opts: opts}
	e.execs[x.id] = x
	return client.ExecCreateResult{ID: x.id}, nil
}

func (e *fakeEngine) ExecAttach(_ context.Context, execID string, opts client.ExecAttachOptions) (client.ExecAttachResult, error) {
	e.call("ExecAttach")
	e.mu.Lock()
	x, ok := e.execs[execID]
	startErr := e.execStartErr
	e.mu.Unlock()
	if !ok {
		return client.ExecAttachResult{}, notFound("No such exec instance: " + execID)
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
			e.mu.Lock()
			x.code, x.ended = 126, true
			e.mu.Unlock()
			return
		}
		var layer map[string]string
		if c, err := e.find(x.cid); err == nil {
			layer = c.layer
		}
		p := &fakeProc{Args: x.opts.Cmd, Env: x.opts.Env, Stdin: srv, Stdout: stdout, Stderr: stderr, Signals: make(chan string, 16), Layer: layer}
		e.mu.Lock()
		x.pid, x.running = 4243, true
		e.mu.Unlock()
		code := e.run(p)
		e.mu.Lock()
		x.running, x.code, x.ended = false, code, true
		e.mu.Unlock()
	}()
	return client.ExecAttachResult{HijackedResponse: client.NewHijackedResponse(cl, "")}, nil
}

func (e *fakeEngine) ExecInspect(_ context.Context, execID string, _ client.ExecInspectOptions) (client.ExecInspectResult, error) {
	e.call("ExecInspect")
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.execs[execID]
	if !ok {
		return client.ExecInspectResult{}, notFound("No such exec instance: " + execID)
	}
	return client.ExecInspectResult{ID: x.id, ContainerID: x.cid, Running: x.running, ExitCode: x.code, PID: x.pid}, nil
}

func (e *fakeEngine) ContainerLogs(context.Context, string, client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	return nil, fmt.Errorf("the fake engine keeps no logs")
}

func (e *fakeEngine) ImageList(_ context.Context, opts client.ImageListOptions) (client.ImageListResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out client.ImageListResult
	if labels := opts.Filters["label"]; len(labels) > 0 {
		// By label: every image (tagged or not) that has them all.
		for ref, img := range e.images {
			match := ref == img.id
			for kv := range labels {
				k, v, _ := strings.Cut(kv, "=")
				match = match && img.labels[k] == v
			}
			if match {
				out.Items = append(out.Items, image.Summary{ID: img.id, Labels: img.labels})
			}
		}
		return out, nil
	}
	for ref, img := range e.images {
		if ref != img.id {
			out.Items = append(out.Items, image.Summary{ID: img.id, RepoTags: []string{ref}})
		}
	}
	return out, nil
}

func (e *fakeEngine) NetworkInspect(_ context.Context, id string, _ client.NetworkInspectOptions) (client.NetworkInspectResult, error) {
	e.call("NetworkInspect")
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.network == nil {
		return client.NetworkInspectResult{}, notFound("network " + id)
	}
	return client.NetworkInspectResult{Network: network.Inspect{Network: network.Network{Name: id, Driver: "bridge", Options: e.network}}}, nil
}

func (e *fakeEngine) NetworkCreate(_ context.Context, _ string, opts client.NetworkCreateOptions) (client.NetworkCreateResult, error) {
	e.call("NetworkCreate")
	e.mu.Lock()
	defer e.mu.Unlock()
	e.network = opts.Options
	return client.NetworkCreateResult{}, nil
}

func (e *fakeEngine) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	driver := e.driver
	if driver == "" {
		driver = "cgroupfs"
	}
	return client.SystemInfoResult{Info: system.Info{CgroupDriver: driver}}, nil
}

func (e *fakeEngine) ContainerStatPath(_ context.Context, id string, opts client.ContainerStatPathOptions) (client.ContainerStatPathResult, error) {
	e.call("ContainerStatPath")
	c, err := e.find(id)
	if err != nil {
		return client.ContainerStatPathResult{}, err
	}
	f, ok := c.image.files[opts.Path]
	if !ok {
		return client.ContainerStatPathResult{}, notFound("Could not find the file " + opts.Path + " in container " + id)
	}
	return client.ContainerStatPathResult{Stat: container.PathStat{Name: opts.Path, Size: int64(len(f.content)), Mode: f.mode, LinkTarget: f.link}}, nil
}

func (e *fakeEngine) CopyFromContainer(_ context.Context, id string, opts client.CopyFromContainerOptions) (client.CopyFromContainerResult, error) {
	e.call("CopyFromContainer")
	c, err := e.find(id)
	if err != nil {
		return client.CopyFromContainerResult{}, err
	}
	f, ok := c.image.files[opts.SourcePath]
	if !ok {
		return client.CopyFromContainerResult{}, notFound(opts.SourcePath)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(opts.SourcePath, "/"), Mode: int64(f.mode.Perm()), Size: int64(len(f.content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(f.content))
	tw.Close()
	return client.CopyFromContainerResult{Content: io.NopCloser(&b)}, nil
}

// fakePull is an ImagePullResponse: the engine's JSON progress stream.
type fakePull struct{ io.ReadCloser }

func (p fakePull) JSONMessages(ctx context.Context) iter.Seq2[jsonstream.Message, error] {
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

func (p fakePull) Wait(context.Context) error { return nil }

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
