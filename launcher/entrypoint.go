package launcher

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/policy"
)

// pyxis runs the image's entrypoint before a task's command, not around
// it: the entrypoint is handed a starter ("sh -c 'kill -STOP $$'"), its
// output goes to enroot's log, and that log is shown only when the
// entrypoint ends before the starter runs ("container exited too soon",
// the step fails), or always with --container-entrypoint-log. Here the
// same shape is two small shell steps around the image's entrypoint, in
// the container itself:
//
//	sh -c BEGIN LOG  ENTRYPOINT...  sh -c START LOG  COMMAND...
//
// BEGIN keeps the container's stdout and stderr on descriptors 8 and 9,
// writes a first line to LOG, a file of the caller's in the container's
// /tmp, and (quiet) sends the entrypoint's output after it; START, which
// the entrypoint execs as it would exec the command (exec "$@"), puts the
// streams back, empties LOG and execs the command. A LOG that still begins
// with its first line when the process ends is an entrypoint that never
// reached the command: its output is shown, and a step that would
// otherwise end with 0 fails, as under pyxis. Where /tmp cannot be written
// (a read-only root), nothing is kept aside and nothing is known. The
// steps run as the caller, with the caller's rights; they need the image's
// /bin/sh, as named and step containers already do.
const (
	entrypointMark  = "containerjob: entrypoint log"
	entrypointQuiet = `exec 8>&1 9>&2; if echo "` + entrypointMark + `" 2>/dev/null >"$0"; then exec >>"$0" 2>&1; fi; exec "$@"`
	entrypointShown = `exec 8>&1 9>&2; echo "` + entrypointMark + `" 2>/dev/null >"$0"; exec "$@"`
	entrypointStart = `exec 1>&8 2>&9 8>&- 9>&-; true 2>/dev/null >"$0"; exec "$@"`
	// maxEntrypointLog is how much of a failed entrypoint's output is
	// shown: its end, where the error is.
	maxEntrypointLog = 64 << 10
)

// pyxisEntrypoint returns the process's argv for decision d, whose image
// has entrypoint and cmd, with the entrypoint run pyxis' way, and the log
// file that tells whether it reached the command. ok is false where d does
// not ask for it or there is no entrypoint to run.
func pyxisEntrypoint(d *policy.Decision, entrypoint, cmd []string) (argv []string, log string, ok bool) {
	if d.PyxisEntrypoint == "" || len(entrypoint) == 0 {
		return nil, "", false
	}
	begin := entrypointShown
	if d.PyxisEntrypoint == policy.EntrypointQuiet {
		begin = entrypointQuiet
	}
	var b [8]byte
	rand.Read(b[:])
	log = "/tmp/.containerjob-entrypoint." + hex.EncodeToString(b[:])
	argv = append([]string{"/bin/sh", "-c", begin, log}, entrypoint...)
	argv = append(argv, "/bin/sh", "-c", entrypointStart, log)
	return append(argv, cmd...), log, true
}

// effectiveEntrypoint is the entrypoint and command the engine would run
// for d: the decision's where it sets them, else the image's.
func effectiveEntrypoint(d *policy.Decision, img client.ImageInspectResult) (entrypoint, cmd []string) {
	entrypoint = d.Entrypoint
	if entrypoint == nil && img.Config != nil {
		entrypoint = img.Config.Entrypoint
	}
	cmd = d.Cmd
	if len(cmd) == 0 && img.Config != nil {
		cmd = img.Config.Cmd
	}
	return entrypoint, cmd
}

// entrypointEnded tells, after the process of container id ended with
// code, whether the entrypoint ended before the command started; if so it
// writes what it printed (kept aside in quiet mode) to w, after one line
// that says what happened, and returns the code the step ends with: the
// entrypoint's, or ExitLaunchFailed where it ended with 0, since the
// command never ran. The log is the caller's own bytes, bounded.
func entrypointEnded(ctx context.Context, eng Engine, id, log string, d *policy.Decision, caller userfs.Identity, code int, w io.Writer) int {
	if log == "" {
		return code
	}
	quiet := d.PyxisEntrypoint == policy.EntrypointQuiet
	var out []byte
	var err error
	if src, ok := hostPathOf(d, log); ok {
		// /tmp is a mount (the job's own /tmp, say): the engine's copy
		// would read the staged source, which is gone by now; the file is
		// on the host, the caller's, and read and removed as the caller.
		out, err = callerTail(caller, src, maxEntrypointLog)
	} else {
		out, err = containerTail(ctx, eng, id, log, maxEntrypointLog)
	}
	if err != nil {
		return code // no log: /tmp was not writable, or the container is gone
	}
	rest, ok := bytes.CutPrefix(out, []byte(entrypointMark+"\n"))
	if !ok {
		return code // emptied by START: the command ran
	}
	if w != nil {
		how := "its output is above (--container-entrypoint-log)"
		if quiet {
			how = "its output follows (--container-entrypoint-log shows it always)"
		}
		fmt.Fprintf(w, "containerjob: the image's entrypoint ended (exit %d) before your command started: an entrypoint must end with exec \"$@\"; %s; --no-container-entrypoint skips it\n", code, how)
		if quiet && len(rest) > 0 {
			w.Write(rest)
			if rest[len(rest)-1] != '\n' {
				io.WriteString(w, "\n")
			}
		}
	}
	if code == 0 {
		return ExitLaunchFailed
	}
	return code
}

// hostPathOf is where path in the container lies on the host when a bind
// mount of d holds it.
func hostPathOf(d *policy.Decision, path string) (string, bool) {
	best := -1
	for i, m := range d.Spec.Mounts {
		if m.Type != "bind" || !policy.Within(path, m.Destination) {
			continue
		}
		if best < 0 || len(m.Destination) > len(d.Spec.Mounts[best].Destination) {
			best = i
		}
	}
	if best < 0 {
		return "", false
	}
	m := d.Spec.Mounts[best]
	return filepath.Join(m.Source, strings.TrimPrefix(path, m.Destination)), true
}

// callerTail returns the last max bytes of the caller's regular file path,
// read as the caller without following a symlink or waiting on a FIFO,
// within callerFileWait, and removes it.
func callerTail(caller userfs.Identity, path string, max int64) ([]byte, error) {
	var b []byte
	err := userfs.ReadRegular(caller, path, unix.O_NOFOLLOW, callerFileWait, func(f *os.File) error {
		var err error
		if b, err = tailOf(f, path, max); err != nil {
			return err
		}
		return os.Remove(path)
	})
	return b, err
}

// containerTail returns the last max bytes of path in container id, read
// where the container keeps it: beneath its own writable layer (overlay2's
// upper directory, which the engine names), else, while it runs (a named
// or step container after an exec), beneath its process's root, else
// through the engine's copy, which mounts every mount's source again (Run
// keeps them until then): the engine's copy alone cannot be used once the
// staged sources are released. The file is the caller's; it is opened
// without following any symlink or crossing a mount, never waited on.
func containerTail(ctx context.Context, eng Engine, id, path string, max int64) ([]byte, error) {
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	c, err := eng.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	cancel()
	if err != nil {
		return nil, err
	}
	if gd := c.Container.GraphDriver; gd != nil && gd.Name == "overlay2" && gd.Data["UpperDir"] != "" {
		return tailBeneath(gd.Data["UpperDir"], path, max)
	}
	if st := c.Container.State; st != nil && st.Running && st.Pid > 0 {
		if out, err := tailBeneath(fmt.Sprintf("/proc/%d/root", st.Pid), path, max); err == nil {
			return out, nil
		}
	}
	return tailFile(ctx, eng, id, path, max)
}

// tailBeneath opens path beneath the directory root without following a
// symlink or crossing a mount, never waiting on it, and reads its end.
func tailBeneath(root, path string, max int64) ([]byte, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return tailOf(f, path, max)
}

// tailOf reads the last max bytes of the regular file f.
func tailOf(f *os.File, path string, max int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if skip := st.Size() - max; skip > 0 {
		if _, err := f.Seek(skip, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// callerFileWait bounds reading a file of the caller's on the host.
const callerFileWait = 10 * time.Second

// tailFile returns the last max bytes of the regular file path in
// container id.
func tailFile(ctx context.Context, eng Engine, id, path string, max int64) ([]byte, error) {
	var b []byte
	err := readFromContainer(ctx, eng, id, path, func(h *tar.Header, r io.Reader) error {
		if skip := h.Size - max; skip > 0 {
			if _, err := io.CopyN(io.Discard, r, skip); err != nil {
				return err
			}
		}
		var err error
		b, err = io.ReadAll(io.LimitReader(r, max))
		return err
	})
	return b, err
}
