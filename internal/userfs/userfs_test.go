package userfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResolve: what a user-supplied path resolves to, as whoever runs the
// test (the kernel decides): symlinks followed to the real path, relative
// paths against cwd, and the refusals: empty, NUL, too long, missing, a
// device; a FIFO is returned without being opened (it would block).
func TestResolve(t *testing.T) {
	dir := t.TempDir()
	real, _ := filepath.EvalSymlinks(dir)
	os.Mkdir(filepath.Join(dir, "data"), 0o755)
	os.WriteFile(filepath.Join(dir, "data", "f"), []byte("x"), 0o644)
	os.Symlink(filepath.Join(dir, "data"), filepath.Join(dir, "link"))
	os.Symlink("data/f", filepath.Join(dir, "rel"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, cwd, want, err string
	}{
		{filepath.Join(dir, "data"), "/", filepath.Join(real, "data"), ""},
		{"link/f", dir, filepath.Join(real, "data", "f"), ""},
		{filepath.Join(dir, "rel"), "/", filepath.Join(real, "data", "f"), ""},
		{filepath.Join(dir, "fifo"), "/", filepath.Join(real, "fifo"), ""},
		{"", "/", "", "is empty, too long, or contains NUL"},
		{"a\x00b", "/", "", "contains NUL"},
		{"/" + strings.Repeat("a", maxPathLen), "/", "", "too long"},
		{filepath.Join(dir, "missing"), "/", "", "cannot be resolved as the caller: no such file or directory"},
		{"/dev/null", "/", "", "is a device file"},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.path, tt.cwd)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Resolve(%.40q) = %q, %v; want %q", tt.path, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%.40q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
	if len(truncate(strings.Repeat("a", 300))) != 259 || truncate("ab") != "ab" {
		t.Error("truncate")
	}
}

// TestAsTakesTheCallersRights: inside As the kernel answers for the given
// identity: as root, a file of root's mode 0600 cannot be opened as
// nobody; without privilege As runs fn as the process already is.
func TestAsTakesTheCallersRights(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	me := Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if err := As(me, func() error { _, err := Resolve(secret, "/"); return err }); err != nil {
		t.Errorf("the file's owner cannot open it: %v", err)
	}
	if os.Geteuid() != 0 {
		return
	}
	nobody := Identity{UID: 65534, GID: 65534, Groups: []uint32{65534}}
	err := As(nobody, func() error { _, err := Resolve(secret, "/"); return err })
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("nobody opened root's 0600 file: %v", err)
	}
	// The thread that took nobody's identity is gone: this one is root's.
	if _, err := Resolve(secret, "/"); err != nil {
		t.Errorf("root lost its rights after As: %v", err)
	}
}

// TestBecomeWithoutPrivilege: without privilege the groups cannot be set,
// and become says so rather than carry on with the process's own groups.
func TestBecomeWithoutPrivilege(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may set any groups; TestAsTakesTheCallersRights covers become")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		errc <- become(Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Groups: []uint32{0}})
	}()
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "setgroups") {
		t.Errorf("become without privilege: %v; want setgroups refused", err)
	}
}

// TestAsRunsOnAThreadOfItsOwn: the caller's work runs after the identity is
// taken, on a thread nothing else uses; a failure to take it is returned
// and the work is not done.
func TestAsRunsOnAThreadOfItsOwn(t *testing.T) {
	oldP, oldA := privileged, assume
	t.Cleanup(func() { privileged, assume = oldP, oldA })
	privileged = func() bool { return true }
	var took Identity
	assume = func(id Identity) error { took = id; return nil }
	ran := false
	if err := As(Identity{UID: 7, GID: 8}, func() error { ran = true; return nil }); err != nil || !ran || took.UID != 7 {
		t.Errorf("As: err %v, ran %v, identity %+v", err, ran, took)
	}
	assume = func(Identity) error { return os.ErrPermission }
	if err := As(Identity{UID: 7}, func() error { t.Error("ran without the identity"); return nil }); err != os.ErrPermission {
		t.Errorf("As with a failed identity: %v", err)
	}
}

// TestResolveUnreadable: a directory its owner made unreadable (0300)
// resolves, but cannot be opened: refused, for whoever the kernel refuses.
func TestResolveUnreadable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wx")
	if err := os.Mkdir(dir, 0o300); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	_, err := Resolve(dir, "/")
	if os.Geteuid() == 0 {
		if err != nil {
			t.Errorf("root could not open %s: %v", dir, err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "cannot be opened as the caller") {
		t.Errorf("Resolve of an unreadable directory: %v", err)
	}
}

// TestReadRegular: a regular file is handed over; a FIFO is refused without
// waiting for a writer, a symlink under O_NOFOLLOW is refused, and a
// missing file is the open's *os.PathError.
func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	me := Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	file := filepath.Join(dir, "f")
	os.WriteFile(file, []byte("data"), 0o644)
	var got []byte
	if err := ReadRegular(me, file, 0, time.Second, func(f *os.File) error {
		var err error
		got, err = io.ReadAll(f)
		return err
	}); err != nil || string(got) != "data" {
		t.Errorf("a regular file: %q %v", got, err)
	}
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	never := func(*os.File) error { t.Error("handed a file it should refuse"); return nil }
	if err := ReadRegular(me, fifo, 0, time.Minute, never); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(file, link)
	if err := ReadRegular(me, link, syscall.O_NOFOLLOW, time.Second, never); err == nil {
		t.Error("followed a symlink under O_NOFOLLOW")
	}
	var pe *os.PathError
	if err := ReadRegular(me, filepath.Join(dir, "none"), 0, time.Second, never); !errors.As(err, &pe) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if e := (&TimeoutError{Path: "/x", After: time.Second}).Error(); e != "/x did not answer within 1s" {
		t.Errorf("timeout message %q", e)
	}
}
