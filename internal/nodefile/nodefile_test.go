package nodefile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestWriteReplacesWhole: the file holds the new content, with the mode
// given, no temporary file is left, and a symlink at the temporary name
// is not written through.
func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("content %q", b)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
	// A symlink planted at the writer's temporary name is replaced, not
	// followed: the file it names is untouched.
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("mine"), 0o644)
	os.Symlink(victim, path+"."+strconv.Itoa(os.Getpid())+".tmp")
	if err := Write(path, []byte("newer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "mine" {
		t.Errorf("wrote through a symlink: %q", b)
	}
}

// TestLockIsBounded: a second holder waits at most the bound, then gets
// EWOULDBLOCK; once the first lets go it gets the lock.
func TestLockIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(path, 20*time.Millisecond); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Errorf("a held lock: %v, want EWOULDBLOCK", err)
	}
	unlock()
	again, err := Lock(path, time.Second)
	if err != nil {
		t.Fatalf("a free lock: %v", err)
	}
	again()
	os.Remove(path)
	os.Symlink("/etc/hostname", path)
	if _, err := Lock(path, time.Second); err == nil {
		t.Error("a symlink was followed to a lock")
	}
}
