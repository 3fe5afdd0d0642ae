package launcher

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestAcctParentRead(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	write := func(rel, data string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v1 := &acctParent{path: "/containerjob/aa"}
	write("cpuacct/containerjob/aa/cpuacct.usage", "450000000\n")
	write("memory/containerjob/aa/memory.max_usage_in_bytes", "67108864\n")
	if u, ok := v1.read(); !ok || u.CPU != 450*time.Millisecond || u.PeakMemory != 64<<20 {
		t.Errorf("v1 read = %+v, %v", u, ok)
	}
	v2 := &acctParent{path: "/containerjob/bb"}
	write("containerjob/bb/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n")
	write("containerjob/bb/memory.peak", "1048576\n")
	if u, ok := v2.read(); !ok || u.CPU != 1500*time.Millisecond || u.PeakMemory != 1<<20 {
		t.Errorf("v2 read = %+v, %v", u, ok)
	}
	if _, ok := (&acctParent{path: "/containerjob/none"}).read(); ok {
		t.Error("a missing accounting cgroup was read")
	}
	var none *acctParent
	if _, ok := none.read(); ok {
		t.Error("no accounting cgroup was read")
	}
	// Empty directories are removed; one with content (a cgroup in use,
	// here a plain file) is left.
	os.MkdirAll(filepath.Join(root, "pids/containerjob/cc"), 0o755)
	(&acctParent{path: "/containerjob/cc"}).remove()
	if _, err := os.Stat(filepath.Join(root, "pids/containerjob/cc")); !os.IsNotExist(err) {
		t.Errorf("the empty accounting cgroup was not removed: %v", err)
	}
	v1.remove()
	if _, err := os.Stat(filepath.Join(root, "cpuacct/containerjob/aa")); err != nil {
		t.Errorf("a non-empty accounting cgroup was removed: %v", err)
	}
}

// TestCleanStaleAcct: only the accounting cgroups of launches whose
// process is gone are removed; a live launch's and the user's own stay.
func TestCleanStaleAcct(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	live := filepath.Join(root, "memory/containerjob/uid_5", strconv.Itoa(os.Getpid())+"-aa")
	dead := filepath.Join(root, "memory/containerjob/uid_5", "2147483646-bb") // no such pid
	for _, d := range []string{live, dead} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cleanStaleAcct()
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live launch's cgroup was removed: %v", err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead launch's cgroup was left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "memory/containerjob/uid_5")); err != nil {
		t.Errorf("the user's cgroup was removed: %v", err)
	}
}
