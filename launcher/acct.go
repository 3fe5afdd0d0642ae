package launcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"
)

// A container's own cgroup disappears the moment it exits (runc removes
// it before the engine reports the exit), so its final CPU time and peak
// memory cannot be read from it afterwards, and sampling misses the last
// interval. Each container is therefore created under a cgroup of its own
// launch, acctRoot/<random> (the engine's cgroupfs driver creates it):
// the kernel charges that parent hierarchically, and it outlives the
// container, so the exact totals are read there after the exit, and the
// directory is removed then.
const acctRoot = "/containerjob"

// cgroupRoot is where the cgroup hierarchies are mounted; a variable for
// tests.
var cgroupRoot = "/sys/fs/cgroup"

// acctParent is one launch's accounting cgroup, relative to each
// hierarchy's root.
type acctParent struct{ path string }

// newAcctParent names a fresh accounting cgroup, for engines that use the
// cgroupfs driver (the systemd driver takes only slices, which systemd
// removes with their last unit): elsewhere usage is sampled.
func newAcctParent(ctx context.Context, eng Engine, socket string) *acctParent {
	if cgroupDriver(ctx, eng, socket) != "cgroupfs" {
		return nil
	}
	b := make([]byte, 8)
	rand.Read(b)
	return &acctParent{path: acctRoot + "/" + hex.EncodeToString(b)}
}

// read returns the totals the kernel charged to the parent: CPU time and
// the memory high-water mark (cgroup v1 cpuacct and memory, or v2).
func (a *acctParent) read() (Usage, bool) {
	var u Usage
	if a == nil {
		return u, false
	}
	if ns, ok := readInt(filepath.Join(cgroupRoot, "cpuacct", a.path, "cpuacct.usage")); ok {
		u.CPU, u.Sampled = time.Duration(ns), true
		if m, ok := readInt(filepath.Join(cgroupRoot, "memory", a.path, "memory.max_usage_in_bytes")); ok {
			u.PeakMemory = m
		}
		return u, true
	}
	if us, ok := cpuStatUsec(filepath.Join(cgroupRoot, a.path, "cpu.stat")); ok {
		u.CPU, u.Sampled = us, true
		if m, ok := readInt(filepath.Join(cgroupRoot, a.path, "memory.peak")); ok {
			u.PeakMemory = m
		}
		return u, true
	}
	return u, false
}

// remove removes the accounting cgroup from every hierarchy where the
// engine made it; a cgroup still in use is left (rmdir refuses).
func (a *acctParent) remove() {
	if a == nil {
		return
	}
	removeCgroupDir(a.path)
}

func removeCgroupDir(rel string) {
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*"))
	dirs = append(dirs, cgroupRoot)
	for _, d := range dirs {
		unix.Rmdir(filepath.Join(d, rel))
	}
}

// cleanStaleAcct removes accounting cgroups that launches killed before
// their cleanup left behind: only empty ones can be removed, so one in use
// is never touched.
func cleanStaleAcct() {
	seen := map[string]bool{}
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", strings.TrimPrefix(acctRoot, "/"), "*"))
	v2, _ := filepath.Glob(filepath.Join(cgroupRoot, strings.TrimPrefix(acctRoot, "/"), "*"))
	for _, d := range append(dirs, v2...) {
		if name := filepath.Base(d); !seen[name] {
			seen[name] = true
			removeCgroupDir(acctRoot + "/" + name)
		}
	}
}

func cpuStatUsec(path string) (time.Duration, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			if us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Duration(us) * time.Microsecond, true
			}
		}
	}
	return 0, false
}

// cgroupDriver is the engine's cgroup driver, asked once per engine start:
// the answer is kept under /run/containerjob, named by the inode of the
// engine's socket (which a restarted engine makes anew).
func cgroupDriver(ctx context.Context, eng Engine, socket string) string {
	var st unix.Stat_t
	if socket == "" || unix.Stat(socket, &st) != nil {
		return ""
	}
	cache := filepath.Join(filepath.Dir(LaunchLock), "engine-cgroup-driver."+strconv.FormatUint(st.Dev, 10)+"."+strconv.FormatUint(st.Ino, 10))
	if b, err := os.ReadFile(cache); err == nil {
		return strings.TrimSpace(string(b))
	}
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	info, err := eng.Info(ictx, client.InfoOptions{})
	if err != nil {
		return ""
	}
	driver := info.Info.CgroupDriver
	if os.MkdirAll(filepath.Dir(cache), 0o700) == nil {
		tmp := cache + ".tmp"
		if os.WriteFile(tmp, []byte(driver+"\n"), 0o600) == nil {
			os.Rename(tmp, cache)
		}
	}
	return driver
}
