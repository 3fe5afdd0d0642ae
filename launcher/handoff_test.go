package launcher

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/policy"
)

func openFile(t *testing.T, path string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Only the kinds of descriptor a bare task could be given are handed to
// the command, each open for the way it is used; the rest take the
// engine's path.
func TestHandoffKinds(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "out")
	os.WriteFile(file, nil, 0o600)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock := os.NewFile(uintptr(pair[0]), "sock")
	defer sock.Close()
	defer unix.Close(pair[1])
	opath, err := unix.Open(file, unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	pathFile := os.NewFile(uintptr(opath), "opath")
	defer pathFile.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		read bool
		why  string
	}{
		{"a file written", openFile(t, file, os.O_WRONLY|os.O_APPEND), false, ""},
		{"a file read and written", openFile(t, file, os.O_RDWR), false, ""},
		{"a file read", openFile(t, file, os.O_RDONLY), true, ""},
		{"a pipe's write end", w, false, ""},
		{"a pipe's read end", r, true, ""},
		{"a socket", sock, false, ""},
		{"/dev/null", openFile(t, "/dev/null", os.O_WRONLY), false, ""},
		{"a file only read, as output", openFile(t, file, os.O_RDONLY), false, "not open for writing"},
		{"a file only written, as input", openFile(t, file, os.O_WRONLY), true, "not open for reading"},
		{"a pipe's read end, as output", r, false, "not open for writing"},
		{"a directory", openFile(t, dir, os.O_RDONLY), true, "neither a file, a pipe nor a socket"},
		{"another device", openFile(t, "/dev/zero", os.O_RDONLY), true, "a device or terminal"},
		{"a path descriptor", pathFile, true, "a path descriptor"},
	} {
		fd, err := dupFile(tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := handoffKind(fd, tc.read); got != tc.why {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.why)
		}
		unix.Close(fd)
	}
}

// The descriptors are the caller's stdout and stderr, and stdin first
// where the launch forwards it; a terminal, an engine that keeps the
// output, or a stream that is not a file keeps the engine's path.
func TestHandoffFds(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	files := IO{Stdin: r, Stdout: w, Stderr: w}
	for _, tc := range []struct {
		name string
		d    policy.Decision
		io   IO
		n    int
		kind byte
		why  string
	}{
		{"output", policy.Decision{LogDriver: "none"}, files, 2, 'o', ""},
		{"no log driver named", policy.Decision{}, files, 2, 'o', ""},
		{"with stdin", policy.Decision{Interactive: true}, files, 3, 'i', ""},
		{"a terminal", policy.Decision{Tty: true}, files, 0, 0, "a terminal (-t)"},
		{"engine logs", policy.Decision{LogDriver: "json-file"}, files, 0, 0, "the engine keeps the output (container_logs)"},
		{"a buffer", policy.Decision{}, IO{Stdout: &bytes.Buffer{}, Stderr: w}, 0, 0, "stdout is not a file"},
		{"stdin a buffer", policy.Decision{Interactive: true}, IO{Stdin: strings.NewReader(""), Stdout: w, Stderr: w}, 0, 0, "stdin is not a file"},
		{"stdin the write end", policy.Decision{Interactive: true}, IO{Stdin: w, Stdout: w, Stderr: w}, 0, 0, "stdin is not open for reading"},
	} {
		fds, kind, why := handoffFds(&tc.d, tc.io)
		if len(fds) != tc.n || kind != tc.kind || why != tc.why {
			t.Errorf("%s: %d descriptors, kind %q, why %q; want %d, %q, %q", tc.name, len(fds), kind, why, tc.n, tc.kind, tc.why)
		}
		closeAll(fds)
	}
}

// The command handed to containerjob-init is the one the engine would
// have run: the request's entrypoint and command, else the image's.
func TestEngineArgv(t *testing.T) {
	img := client.ImageInspectResult{}
	img.Config = &dockerspec.DockerOCIImageConfig{}
	img.Config.Entrypoint, img.Config.Cmd = []string{"/ep", "-x"}, []string{"default"}
	bare := client.ImageInspectResult{}
	for _, tc := range []struct {
		name            string
		entrypoint, cmd []string
		img             client.ImageInspectResult
		want            []string
	}{
		{"the image's", nil, nil, img, []string{"/ep", "-x", "default"}},
		{"a command", nil, []string{"echo", "hi"}, img, []string{"/ep", "-x", "echo", "hi"}},
		{"an entrypoint drops the image's command", []string{"/other"}, nil, img, []string{"/other"}},
		{"an entrypoint and a command", []string{"/other"}, []string{"a"}, img, []string{"/other", "a"}},
		{"a cleared entrypoint", []string{""}, []string{"echo"}, img, []string{"echo"}},
		{"an image without config", nil, []string{"true"}, bare, []string{"true"}},
		{"nothing at all", nil, nil, bare, nil},
	} {
		if got := engineArgv(tc.entrypoint, tc.cmd, tc.img); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// testHandoff is a handoff over a socket of a stage of the test's own,
// for the current user, of the write end of a pipe as stdout and stderr.
func testHandoff(t *testing.T) (h *handoff, sock string, out *os.File) {
	t.Helper()
	old := StageRoot
	StageRoot = filepath.Join(t.TempDir(), "stage")
	t.Cleanup(func() { StageRoot = old })
	stage := &Stage{Sources: map[string]string{}, Generated: map[string]string{}}
	t.Cleanup(stage.Release)
	ln, sock, err := stage.AddSocket("handoff.sock", handoffTarget)
	if err != nil {
		t.Fatal(err)
	}
	if stage.Generated[sock] != handoffTarget {
		t.Fatalf("the socket is not the stage's generated file for %s: %v", handoffTarget, stage.Generated)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fds, kind, why := handoffFds(&policy.Decision{}, IO{Stdout: w, Stderr: w})
	w.Close() // the handoff's copies are the only write ends left
	if why != "" {
		t.Fatal(why)
	}
	return &handoff{ln: ln, fds: fds, kind: kind, uid: uint32(os.Getuid()), result: make(chan error, 1)}, sock, r
}

// initSide plays containerjob-init: connects, takes the descriptors,
// writes to the first and, where msg is set, says why the command did
// not start.
func initSide(t *testing.T, sock, msg string) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	defer conn.Close()
	b, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4*3))
	n, oobn, _, _, err := conn.ReadMsgUnix(b, oob)
	if err != nil || n != 1 || b[0] != 'o' {
		return errors.New("no message of kind o")
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		return errors.New("no descriptors")
	}
	fds, _ := unix.ParseUnixRights(&msgs[0])
	defer closeAll(fds)
	if len(fds) != 2 {
		return errors.New("not two descriptors")
	}
	unix.Write(fds[0], []byte("from the container\n"))
	if msg != "" {
		conn.Write([]byte(msg))
	}
	return nil
}

// The descriptors reach the container's side, which writes to the
// caller's pipe itself; a socket that ends with no message is a command
// that started.
func TestHandoffGivesTheCallersOutput(t *testing.T) {
	h, sock, out := testHandoff(t)
	h.start()
	if err := initSide(t, sock, ""); err != nil {
		t.Fatal(err)
	}
	if err := h.outcome(); err != nil {
		t.Fatalf("outcome %v, want a started command", err)
	}
	h.close()
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if string(buf[:n]) != "from the container\n" {
		t.Fatalf("the caller's pipe has %q", buf[:n])
	}
	if h.fds != nil {
		t.Fatalf("descriptors %v still held after the handoff", h.fds)
	}
}

// A command that did not start is the runtime's start error: 127 for
// one not found, 126 for one that cannot run.
func TestHandoffReportsTheStartError(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		code int
	}{
		{`exec: "nosuch": executable file not found in $PATH`, ExitCommandMissing},
		{`exec: "/etc": permission denied`, ExitCannotInvoke},
	} {
		h, sock, _ := testHandoff(t)
		h.start()
		if err := initSide(t, sock, tc.msg); err != nil {
			t.Fatal(err)
		}
		err := handoffFailed(h.outcome())
		var lerr *Error
		if !errors.As(err, &lerr) || lerr.Code != tc.code || !strings.Contains(err.Error(), strings.TrimPrefix(tc.msg, "exec: ")) {
			t.Errorf("%q: %v, want code %d", tc.msg, err, tc.code)
		}
		h.close()
	}
}

// containerjob-init that never connects (the container ended first) is
// one line, exit 125, within the settle bound; the descriptors are let
// go.
func TestHandoffNeverTaken(t *testing.T) {
	old := handoffSettle
	handoffSettle = 20 * time.Millisecond
	defer func() { handoffSettle = old }()
	h, _, out := testHandoff(t)
	h.start()
	err := handoffFailed(h.outcome())
	var lerr *Error
	if !errors.As(err, &lerr) || lerr.Code != ExitLaunchFailed || !strings.Contains(err.Error(), "never asked for the job's output") {
		t.Fatalf("%v", err)
	}
	// The handoff's copies of the pipe's write end are closed: the
	// reader sees its end.
	h.close()
	out.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := out.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want the pipe's end", n, err)
	}
}

// A launch that fails before the container starts closes the copies it
// made.
func TestHandoffClosedUnstarted(t *testing.T) {
	h, _, _ := testHandoff(t)
	fds := append([]int(nil), h.fds...)
	h.close()
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Errorf("descriptor %d is still open", fd)
		}
	}
	var nilHandoff *handoff
	nilHandoff.close()
	nilHandoff.start()
}

// A connection from another user gets nothing; the container's own
// still does.
func TestHandoffOnlyForTheContainersUser(t *testing.T) {
	old := handoffSettle
	handoffSettle = 20 * time.Millisecond
	defer func() { handoffSettle = old }()
	h, sock, _ := testHandoff(t)
	h.uid++
	h.start()
	if err := initSide(t, sock, ""); err == nil {
		t.Fatal("another user's connection got the descriptors")
	}
	if err := h.outcome(); err == nil {
		t.Fatal("a handoff nobody took reads as a started command")
	}
	h.close()
}

// The request runs containerjob-init with the engine's command, and binds
// it and the socket read-only at their places; the guard lets exactly
// those binds through.
func TestUseHandoffRewritesTheRequest(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "containerjob-init")
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)
	oldInit, oldRoot := InitPath, StageRoot
	InitPath, StageRoot = bin, filepath.Join(t.TempDir(), "stage")
	defer func() { InitPath, StageRoot = oldInit, oldRoot }()
	if os.Getuid() != 0 {
		t.Skip("containerjob-init must be root's: run as root")
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	d := &policy.Decision{Spec: specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000}}}}
	req := client.ContainerCreateOptions{Config: &container.Config{Cmd: []string{"echo", "hi"}}, HostConfig: &container.HostConfig{}}
	img := client.ImageInspectResult{}
	img.Config = &dockerspec.DockerOCIImageConfig{}
	img.Config.Entrypoint = []string{"/ep"}
	stage := &Stage{Sources: map[string]string{}, Generated: map[string]string{}}
	defer stage.Release()
	opts := &Options{}
	h, path, err := useHandoff(d, img, &req, IO{Stdout: w, Stderr: w}, stage, opts)
	if err != nil || h == nil || path != OutputDirect {
		t.Fatalf("handoff %v, path %q, err %v", h, path, err)
	}
	defer h.close()
	if want := []string{initTarget, "--", "/ep", "echo", "hi"}; !reflect.DeepEqual([]string(req.Config.Entrypoint), want) || req.Config.Cmd != nil {
		t.Fatalf("entrypoint %q, cmd %q", req.Config.Entrypoint, req.Config.Cmd)
	}
	wantMounts := []mount.Mount{
		{Type: mount.TypeBind, Source: bin, Target: initTarget, ReadOnly: true},
		{Type: mount.TypeBind, Source: filepath.Join(stage.dir, "gen-handoff.sock"), Target: handoffTarget, ReadOnly: true},
	}
	if !reflect.DeepEqual(req.HostConfig.Mounts, wantMounts) {
		t.Fatalf("mounts %+v, want %+v", req.HostConfig.Mounts, wantMounts)
	}
	if opts.expect().Own[bin] != initTarget || stage.Generated[wantMounts[1].Source] != handoffTarget {
		t.Fatalf("the guard is not told of the binds: own %v, generated %v", opts.expect().Own, stage.Generated)
	}
}

// What keeps the engine's path whatever the descriptors: no init, no
// command, capabilities, a mount where the handoff's files go.
func TestHandoffRefused(t *testing.T) {
	old := InitPath
	defer func() { InitPath = old }()
	InitPath = "/nonexistent/containerjob-init"
	req := client.ContainerCreateOptions{Config: &container.Config{Cmd: []string{"true"}}, HostConfig: &container.HostConfig{}}
	if why := handoffRefused(&req, client.ImageInspectResult{}); !strings.Contains(why, "is not installed") {
		t.Errorf("without the init: %q", why)
	}
	if os.Getuid() != 0 {
		return // the rest needs an init of root's
	}
	InitPath = "/bin/true"
	for _, tc := range []struct {
		name string
		req  client.ContainerCreateOptions
		why  string
	}{
		{"a command", req, ""},
		{"no command", client.ContainerCreateOptions{Config: &container.Config{}, HostConfig: &container.HostConfig{}}, "no command"},
		{"capabilities", client.ContainerCreateOptions{Config: req.Config, HostConfig: &container.HostConfig{CapAdd: []string{"CAP_NET_RAW"}}}, "the container has capabilities"},
		{"a mount there", client.ContainerCreateOptions{Config: req.Config, HostConfig: &container.HostConfig{Mounts: []mount.Mount{{Target: "/.containerjob"}}}}, "a mount at /.containerjob"},
	} {
		if why := handoffRefused(&tc.req, client.ImageInspectResult{}); why != tc.why {
			t.Errorf("%s: %q, want %q", tc.name, why, tc.why)
		}
	}
}

// A pipe the caller stops reading is noticed while the command runs and
// at its end; a file is not watched, and the watch ends cleanly.
func TestHandoffWatchesTheReader(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h := &handoff{}
	h.watchReaders(IO{Stdout: w, Stderr: w})
	defer h.stopWatching()
	select {
	case <-h.readerGone():
		t.Fatal("the reader is taken for gone while it is there")
	case <-time.After(50 * time.Millisecond):
	}
	if h.readerLost() {
		t.Fatal("readerLost while the reader is there")
	}
	r.Close()
	select {
	case <-h.readerGone():
	case <-time.After(10 * time.Second):
		t.Fatal("the reader's end was not noticed")
	}
	if !h.readerLost() {
		t.Fatal("readerLost is false after the reader went")
	}

	file := openFile(t, filepath.Join(t.TempDir(), "out"), os.O_CREATE|os.O_WRONLY)
	f := &handoff{}
	f.watchReaders(IO{Stdout: file, Stderr: file})
	if f.readerGone() != nil || f.readerLost() {
		t.Fatal("a file is watched for a reader")
	}
	f.stopWatching()
	var none *handoff
	if none.readerGone() != nil || none.readerLost() {
		t.Fatal("no handoff, yet a reader watched")
	}
	none.stopWatching()
}

// A container killed before containerjob-init took the descriptors ends
// with its signal's status, not a failed handoff; a start error stays one.
func TestKilledFirst(t *testing.T) {
	never := errors.New("containerjob-init never asked for the job's output")
	start := &Error{Code: ExitCommandMissing, Err: errors.New("not found")}
	for _, tc := range []struct {
		err       error
		status    int64
		forwarded bool
		want      bool
	}{
		{never, 137, false, true},
		{never, 143, true, true},
		{never, 0, true, true},
		{never, 125, false, false},
		{start, 137, true, false},
	} {
		if got := killedFirst(tc.err, tc.status, tc.forwarded); got != tc.want {
			t.Errorf("%v, status %d, forwarded %v: %v, want %v", tc.err, tc.status, tc.forwarded, got, tc.want)
		}
	}
}
