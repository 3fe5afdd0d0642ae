package launcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/nodefile"
)

// A container's own cgroup disappears the moment it exits (runc removes
// it before the engine reports the exit), so its final CPU time and peak
// memory cannot be read from it afterwards, and sampling misses the last
// interval. Each container is therefore created under a cgroup of its own
// launch, acctRoot/uid_U/<random> (the engine's cgroupfs driver creates
// it): the kernel charges that parent hierarchically, and it outlives the
// container, so the exact totals are read there after the exit, and the
// directory is removed then.
//
// The level above, acctRoot/uid_U, holds all of a user's containers on
// the node: its pids.max is pids_limit_per_user, so the kernel itself caps
// the processes of all of them together (a container's own pids_limit
// caps only that one).
const acctRoot = "/containerjob"

// cgroupRoot is where the cgroup hierarchies are mounted; a variable for
// tests.
var cgroupRoot = "/sys/fs/cgroup"

// acctParent is one launch's accounting cgroup, relative to each
// hierarchy's root; or, sliceOnly, the caller's systemd slice, which
// holds no totals of the launch's and is not the launch's to remove.
type acctParent struct {
	path      string
	sliceOnly bool
}

// newAcctParent names a fresh accounting cgroup under the caller's own,
// whose process cap it sets first, for engines that use the cgroupfs
// driver. With the systemd driver the parent is the caller's own slice
// (userSlice), which holds the cap but cannot hold one launch's totals:
// systemd removes a slice with its last unit, so usage is sampled there.
// Elsewhere there is neither (containerjob doctor says so). A cap that
// cannot be set fails the launch: it is the admin's bound.
func newAcctParent(ctx context.Context, eng Engine, socket, uid string, pidsPerUser int64) (*acctParent, error) {
	user, err := userCgroup(ctx, eng, socket, uid, pidsPerUser)
	if user == "" || err != nil {
		return nil, err
	}
	if strings.HasSuffix(user, ".slice") { // userSlice's: no totals there
		return &acctParent{path: user, sliceOnly: true}, nil
	}
	// Named by this process, which lives as long as the container runs:
	// cleanStaleAcct leaves the cgroups of live launches alone (runc makes
	// them only at start, after the launch lock is released).
	b := make([]byte, 4)
	rand.Read(b)
	return &acctParent{path: user + "/" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b)}, nil
}

// userCgroup is the caller's own cgroup with its process cap set: the
// parent of every container of the caller on this node, whichever path
// made it (a run's, below its accounting cgroup; a named or a step's
// shared container, which outlive one launch, directly). With the
// cgroupfs driver it is acctRoot/uid_U; with the systemd driver, which
// takes slices only, the slice containerjob-uid_U.slice (userSlice). ""
// for any other driver.
func userCgroup(ctx context.Context, eng Engine, socket, uid string, pidsPerUser int64) (string, error) {
	driver := cgroupDriver(ctx, eng, socket)
	if driver != "cgroupfs" && driver != "systemd" {
		return "", nil
	}
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
		return "", fmt.Errorf("accounting cgroup: uid %q", uid)
	}
	if driver == "systemd" {
		return userSlice(ctx, uid, pidsPerUser)
	}
	user := acctRoot + "/uid_" + uid
	if pidsPerUser > 0 {
		if err := capUserPids(user, pidsPerUser); err != nil {
			return "", fmt.Errorf("the per-user process cap (pids_limit_per_user %d) cannot be set: %w", pidsPerUser, err)
		}
	}
	return user, nil
}

// stepParentHolds: confine = "cgroup-parent" names the step's cgroup as
// the parent, which Docker's systemd driver refuses (it takes slices
// only) with an error that names neither the setting nor the way out.
func stepParentHolds(ctx context.Context, eng Engine, socket string) error {
	if cgroupDriver(ctx, eng, socket) == "systemd" {
		return hint.Errorf(`the admin sets confine = "limits" in the policy, or runs dockerd with --exec-opt native.cgroupdriver=cgroupfs (containerjob doctor)`,
			`confine = "cgroup-parent" cannot place the container under the step's cgroup: this node's Docker uses the systemd cgroup driver, which takes slices only`)
	}
	return nil
}

// The systemd driver places a container in a scope under the slice its
// cgroup parent names; systemd makes the slice (and containerjob.slice
// above it: a dash in a slice's name is a level) with the scope and
// removes it with its last unit. The cap is the slice's TasksMax, set at
// runtime: systemd keeps it in a drop-in under systemdControlDir, which
// outlives the slice and applies each time systemd makes it again, until
// the node reboots.
var (
	systemctl         = "systemctl"
	systemdControlDir = "/run/systemd/system.control"
)

const userSlicePrefix = "containerjob-uid_"

// userSlice sets the slice's TasksMax unless systemd's drop-in already
// holds that value (one systemctl call per user and cap, not per launch).
func userSlice(ctx context.Context, uid string, pidsPerUser int64) (string, error) {
	slice := userSlicePrefix + uid + ".slice"
	if pidsPerUser <= 0 {
		return slice, nil
	}
	want := "TasksMax=" + strconv.FormatInt(pidsPerUser, 10)
	if b, err := os.ReadFile(filepath.Join(systemdControlDir, slice+".d", "50-TasksMax.conf")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) == want {
				return slice, nil
			}
		}
	}
	sctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	out, err := exec.CommandContext(sctx, systemctl, "set-property", "--runtime", slice, want).CombinedOutput()
	if err != nil {
		if sctx.Err() != nil {
			err = fmt.Errorf("systemd did not answer within %s", apiTimeout)
		}
		return "", fmt.Errorf("the per-user process cap (pids_limit_per_user %d) cannot be set on %s: %v %s", pidsPerUser, slice, err, strings.TrimSpace(string(out)))
	}
	return slice, nil
}

// capUserPids creates the user's cgroup in the pids hierarchy (v1) or the
// unified one (v2) and writes its pids.max.
func capUserPids(rel string, max int64) error {
	dir := filepath.Join(cgroupRoot, "pids", rel)
	if _, err := os.Stat(filepath.Join(cgroupRoot, "pids")); err != nil {
		// cgroup v2: the pids controller must be enabled for the levels
		// below the root (runc enables it further down).
		dir = filepath.Join(cgroupRoot, rel)
		top := filepath.Join(cgroupRoot, strings.TrimPrefix(acctRoot, "/"))
		if err := os.MkdirAll(top, 0o755); err != nil {
			return err
		}
		os.WriteFile(filepath.Join(top, "cgroup.subtree_control"), []byte("+pids"), 0o644)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.FormatInt(max, 10)), 0o644)
}

// read returns the totals the kernel charged to the parent: CPU time and
// the memory high-water mark (cgroup v1 cpuacct and memory, or v2).
func (a *acctParent) read() (Usage, bool) {
	var u Usage
	if a == nil || a.sliceOnly {
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

// usage is how the container's usage is taken: with an accounting
// cgroup of the launch's own the exact totals are read at the end (read);
// without one (a slice, another driver, the step's cgroup) it is sampled.
func (a *acctParent) usage(ctx context.Context, eng Engine, id string) *usageSampler {
	if a == nil || a.sliceOnly {
		return startUsage(ctx, eng, id)
	}
	return idleUsage()
}

// remove removes the accounting cgroup from every hierarchy where the
// engine made it; a cgroup still in use is left (rmdir refuses).
func (a *acctParent) remove() {
	if a == nil || a.sliceOnly {
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

// cleanStaleAcct removes the accounting cgroups of launches that ended
// without their cleanup (killed): those whose launching process is gone.
// A live launch's is never touched, nor is a user's own cgroup, which
// holds the user's process cap (pids.max) and stays until the node
// reboots: removing it between a launch's cap and runc's making of the
// container's cgroups below it would drop the cap, or fail the start.
func cleanStaleAcct() {
	root := strings.TrimPrefix(acctRoot, "/")
	launches, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", root, "uid_*", "*-*"))
	v2, _ := filepath.Glob(filepath.Join(cgroupRoot, root, "uid_*", "*-*"))
	seen := map[string]bool{}
	for _, d := range append(launches, v2...) {
		name := filepath.Base(d)
		pidText, _, _ := strings.Cut(name, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || unix.Kill(pid, 0) == nil {
			continue // not a launch's, or its launch still runs
		}
		rel := acctRoot + "/" + filepath.Base(filepath.Dir(d)) + "/" + name
		if !seen[rel] {
			seen[rel] = true
			removeCgroupDir(rel)
		}
	}
}

func cpuStatUsec(path string) (time.Duration, bool) {
	us, ok := readKey(path, "usage_usec")
	return time.Duration(us) * time.Microsecond, ok
}

// cgroupDriver is the engine's cgroup driver, asked once per engine start:
// the answer is kept under /run/containerjob, named by the inode of the
// engine's socket (which a restarted engine makes anew).
func cgroupDriver(ctx context.Context, eng Engine, socket string) string {
	var st unix.Stat_t
	if socket == "" || unix.Stat(socket, &st) != nil {
		return ""
	}
	cache := filepath.Join(NodeCacheDir, "engine-cgroup-driver."+strconv.FormatUint(st.Dev, 10)+"."+strconv.FormatUint(st.Ino, 10))
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
	writeNodeCache(cache, []byte(driver+"\n"))
	return driver
}

// writeNodeCache replaces a root-only cache file of this node whole: the
// launch that finds it reads either the old content or the new, never half.
// Each writer has its own temporary name, so concurrent launches do not
// interleave. A cache that cannot be written is only asked for again.
func writeNodeCache(path string, data []byte) {
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	nodefile.Write(path, data, 0o600)
}
