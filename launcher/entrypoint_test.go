package launcher

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/policy"
)

// TestPyxisEntrypointSteps runs the steps around an entrypoint with the
// shells images have (dash, busybox), as the container would: the
// entrypoint's output is kept aside and shown only when it never reached
// the command; the command's streams and exit code are its own.
func TestPyxisEntrypointSteps(t *testing.T) {
	shells := []string{"/bin/sh"}
	if _, err := os.Stat("/bin/busybox"); err == nil {
		shells = append(shells, "/bin/busybox sh")
	}
	banner := []string{"/bin/sh", "-c", `echo banner; echo warning >&2; export FROM_EP=1; exec "$@"`, "ep"}
	command := []string{"/bin/sh", "-c", `echo out $FROM_EP $1; echo err >&2; exit 3`, "cmd", "arg"}
	mark := entrypointMark + "\n"
	tests := []struct {
		name           string
		mode           string
		entrypoint     []string
		stdout, stderr string
		code           int    // -1: any but 0
		log            string // what the log holds at the end; "+": the mark and more
	}{
		{"quiet: the entrypoint's output is kept aside, the command's is its own", policy.EntrypointQuiet, banner,
			"out 1 arg\n", "err\n", 3, ""},
		{"quiet: an entrypoint that fails leaves its output for the report", policy.EntrypointQuiet,
			[]string{"/bin/sh", "-c", `echo banner; echo broken >&2; exit 4`, "ep"}, "", "", 4, mark + "banner\nbroken\n"},
		{"quiet: an entrypoint that never runs the command leaves the mark", policy.EntrypointQuiet,
			[]string{"/bin/echo", "ep:"}, "", "", 0, "+"},
		{"quiet: an entrypoint that closes the saved streams fails with a reason", policy.EntrypointQuiet,
			[]string{"/bin/sh", "-c", `exec 8>&- 9>&-; exec "$@"`, "ep"}, "", "", -1, "+"},
		{"log: everything is shown", policy.EntrypointLog, banner,
			"banner\nout 1 arg\n", "warning\nerr\n", 3, ""},
		{"log: an entrypoint that never runs the command leaves the mark alone", policy.EntrypointLog,
			[]string{"/bin/sh", "-c", `echo ep: "$@"`, "ep"}, "ep: ", "", 0, mark},
	}
	for _, sh := range shells {
		for _, tt := range tests {
			t.Run(sh+"/"+tt.name, func(t *testing.T) {
				d := &policy.Decision{PyxisEntrypoint: tt.mode}
				argv, log, ok := pyxisEntrypoint(d, tt.entrypoint, command)
				if !ok {
					t.Fatal("not wrapped")
				}
				var withShell []string
				for _, a := range argv {
					if a == "/bin/sh" {
						withShell = append(withShell, splitShell(sh)...)
					} else {
						withShell = append(withShell, a)
					}
				}
				var out, errb bytes.Buffer
				c := exec.Command(withShell[0], withShell[1:]...)
				c.Stdout, c.Stderr = &out, &errb
				err := c.Run()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if log == "" {
					t.Fatal("no log")
				}
				t.Cleanup(func() { os.Remove(log) })
				if tt.code >= 0 && code != tt.code || tt.code < 0 && code == 0 {
					t.Errorf("exit %d, want %d", code, tt.code)
				}
				if !strings.HasPrefix(out.String(), tt.stdout) || tt.stdout == "" && out.Len() > 0 || errb.String() != tt.stderr {
					t.Errorf("stdout %q stderr %q, want %q %q", out.String(), errb.String(), tt.stdout, tt.stderr)
				}
				b, err := os.ReadFile(log)
				if err != nil {
					t.Fatal(err)
				}
				if tt.log == "+" && (!strings.HasPrefix(string(b), mark) || len(b) == len(mark)) || tt.log != "+" && string(b) != tt.log {
					t.Errorf("log %q, want %q", b, tt.log)
				}
			})
		}
	}
}

func splitShell(s string) []string {
	if s == "/bin/busybox sh" {
		return []string{"/bin/busybox", "sh"}
	}
	return []string{s}
}

// TestPyxisEntrypointOnlyWhereAsked: the Docker way (the command as the
// entrypoint's arguments) unless the decision asks for pyxis', and never a
// step around an entrypoint that is not there.
func TestPyxisEntrypointOnlyWhereAsked(t *testing.T) {
	if _, _, ok := pyxisEntrypoint(&policy.Decision{}, []string{"/ep"}, []string{"x"}); ok {
		t.Error("wrapped without being asked")
	}
	if _, _, ok := pyxisEntrypoint(&policy.Decision{PyxisEntrypoint: policy.EntrypointQuiet}, nil, []string{"x"}); ok {
		t.Error("wrapped without an entrypoint")
	}
	img := client.ImageInspectResult{InspectResponse: image.InspectResponse{Config: &dockerspec.DockerOCIImageConfig{}}}
	img.Config.Entrypoint, img.Config.Cmd = []string{"/ep"}, []string{"default"}
	ep, cmd := effectiveEntrypoint(&policy.Decision{Cmd: []string{"mine"}}, img)
	if !slices.Equal(ep, []string{"/ep"}) || !slices.Equal(cmd, []string{"mine"}) {
		t.Errorf("image entrypoint, own command: %q %q", ep, cmd)
	}
	ep, cmd = effectiveEntrypoint(&policy.Decision{Entrypoint: []string{}}, img)
	if len(ep) != 0 || !slices.Equal(cmd, []string{"default"}) {
		t.Errorf("entrypoint cleared, image command: %q %q", ep, cmd)
	}
}

// TestEntrypointEnded: what the step says and ends with, from the log the
// steps left in the container.
func TestEntrypointEnded(t *testing.T) {
	mark := entrypointMark + "\n"
	tests := []struct {
		name, log string // "": no log in the container
		quiet     bool
		code      int
		wantCode  int
		wantOut   []string // "" entries: nothing written at all
	}{
		{"the command ran", "", true, 3, 3, nil},
		{"emptied: the command ran", "\x00", true, 0, 0, nil},
		{"failed entrypoint, quiet: its output is shown", mark + "banner\nbroken", true, 4, 4,
			[]string{"entrypoint ended (exit 4) before your command started", "its output follows", "banner\nbroken\n"}},
		{"ended with 0 without the command: the step fails", mark, true, 0, ExitLaunchFailed,
			[]string{"entrypoint ended (exit 0)", `exec "$@"`}},
		{"log mode: the output was shown already", mark, false, 0, ExitLaunchFailed, []string{"its output is above"}},
		{"someone else's bytes are not a mark", "banner\n", true, 1, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEngine(t)
			const path = "/tmp/.containerjob-entrypoint.0"
			files := map[string]fakeFile{}
			switch tt.log {
			case "":
			case "\x00":
				files[path] = fakeFile{Mode: 0o644}
			default:
				files[path] = fakeFile{Content: tt.log, Mode: 0o644}
			}
			e.Containers["c1"] = &fakeContainer{ID: "c1", Name: "named", Req: client.ContainerCreateOptions{Config: &container.Config{}}, Image: fakeImage{Files: files}}
			var w bytes.Buffer
			mode := policy.EntrypointLog
			if tt.quiet {
				mode = policy.EntrypointQuiet
			}
			code := entrypointEnded(context.Background(), e, "c1", path, &policy.Decision{PyxisEntrypoint: mode}, userfs.Identity{}, tt.code, &w)
			if code != tt.wantCode {
				t.Errorf("code %d, want %d", code, tt.wantCode)
			}
			if tt.wantOut == nil && w.Len() > 0 {
				t.Errorf("wrote %q", w.String())
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(w.String(), want) {
					t.Errorf("output %q lacks %q", w.String(), want)
				}
			}
			if tt.quiet || tt.wantOut == nil {
				return
			}
			if strings.Count(w.String(), "\n") != 1 {
				t.Errorf("log mode printed the output again: %q", w.String())
			}
		})
	}
	if code := entrypointEnded(context.Background(), newFakeEngine(t), "c1", "", &policy.Decision{PyxisEntrypoint: policy.EntrypointQuiet}, userfs.Identity{}, 7, nil); code != 7 {
		t.Errorf("no entrypoint steps: code %d", code)
	}
}

// TestEntrypointLogOnAMount: a log under a bind mount (the job's own /tmp)
// is read on the host, as the caller, and removed; a FIFO or a symlink
// there is not followed or waited on.
func TestEntrypointLogOnAMount(t *testing.T) {
	host := t.TempDir()
	d := &policy.Decision{PyxisEntrypoint: policy.EntrypointQuiet}
	d.Spec.Mounts = []specs.Mount{{Type: "bind", Source: "/elsewhere", Destination: "/"}, {Type: "bind", Source: host, Destination: "/tmp"}}
	log := "/tmp/.containerjob-entrypoint.1"
	if src, ok := hostPathOf(d, log); !ok || src != filepath.Join(host, ".containerjob-entrypoint.1") {
		t.Fatalf("host path %q %v", src, ok)
	}
	if _, ok := hostPathOf(d, "/tmpx/y"); !ok {
		t.Error("/tmpx/y is under / only")
	}
	src, _ := hostPathOf(d, log)
	os.WriteFile(src, []byte(entrypointMark+"\nbroken\n"), 0o600)
	var w bytes.Buffer
	me := userfs.Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if code := entrypointEnded(context.Background(), newFakeEngine(t), "none", log, d, me, 0, &w); code != ExitLaunchFailed || !strings.Contains(w.String(), "broken\n") {
		t.Errorf("code %d output %q", code, w.String())
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("the log is left: %v", err)
	}
	if err := unix.Mkfifo(src, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := callerTail(me, src, 10); err == nil {
		t.Error("read a FIFO")
	}
	os.Remove(src)
	os.Symlink("/etc/hostname", src)
	if _, err := callerTail(me, src, 10); err == nil {
		t.Error("followed a symlink")
	}
}
