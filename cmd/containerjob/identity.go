package main

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerjob/containerjob/policy"
)

// Fixed at build time (Makefile, -X): escalation never looks anything up in
// PATH, which the user controls.
var (
	sudoPath = "/usr/bin/sudo"
	selfPath = "/usr/local/bin/containerjob"
)

// invocation is how containerjob was started, which decides whose request
// this is. It is established from the kernel and sudo, never from argv.
type invocation int

const (
	asUser  invocation = iota // unprivileged: must escalate through sudo
	viaSudo                   // root, started by sudo for a user
	asRoot                    // root, started directly (scheduler hooks, admins)
)

func (i invocation) String() string {
	return [...]string{"user", "sudo", "root"}[i]
}

// sudoCaller is the uid sudo started us for, when our parent really is the
// configured sudo binary and its real uid agrees with SUDO_UID. sudo refuses
// to let users set SUDO_* variables, and the parent check stops a root
// process environment (sudo -s, cron) from being mistaken for a user's.
func sudoCaller() (uint32, bool) {
	v := os.Getenv("SUDO_UID")
	if v == "" {
		return 0, false
	}
	uid, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, false
	}
	ppid := os.Getppid()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid))
	if err != nil || exe != sudoPath {
		return 0, false
	}
	ruid, ok := procRealUID(ppid)
	if !ok || ruid != uint32(uid) {
		return 0, false
	}
	return uint32(uid), true
}

func procRealUID(pid int) (uint32, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			u, err := strconv.ParseUint(f[0], 10, 32)
			return uint32(u), err == nil
		}
	}
	return 0, false
}

func currentInvocation() (invocation, uint32) {
	if os.Geteuid() != 0 {
		return asUser, uint32(os.Getuid())
	}
	if uid, ok := sudoCaller(); ok && uid != 0 {
		return viaSudo, uid
	}
	return asRoot, 0
}

// lookupCaller builds the caller from the user database. gid, when not
// nil, is the group sudo reports; it must be one the user really has.
func lookupCaller(u *user.User, gid *uint32) (policy.Caller, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return policy.Caller{}, fmt.Errorf("user %q has a non-numeric uid", u.Username)
	}
	primary, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return policy.Caller{}, fmt.Errorf("user %q has a non-numeric gid", u.Username)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return policy.Caller{}, fmt.Errorf("groups of user %q cannot be listed: %v", u.Username, err)
	}
	c := policy.Caller{User: u.Username, UID: uint32(uid), GID: uint32(primary), Home: u.HomeDir}
	all := []uint32{uint32(primary)}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			continue
		}
		if !slices.Contains(all, uint32(n)) {
			all = append(all, uint32(n))
		}
	}
	if gid != nil {
		if !slices.Contains(all, *gid) {
			return policy.Caller{}, fmt.Errorf("group %d is not one of user %q's groups", *gid, u.Username)
		}
		c.GID = *gid
	}
	for _, g := range all {
		if g != c.GID {
			c.Groups = append(c.Groups, g)
		}
		if grp, err := user.LookupGroupId(strconv.FormatUint(uint64(g), 10)); err == nil {
			c.GroupNames = append(c.GroupNames, grp.Name)
		}
	}
	if c.UID == 0 {
		return policy.Caller{}, fmt.Errorf("containers never run as root; name an ordinary user")
	}
	return c, nil
}

// privilegedCaller decides whose request this is, once we are root.
func privilegedCaller(inv invocation, sudoUID uint32, asUserFlag string) (policy.Caller, error) {
	switch inv {
	case viaSudo:
		if asUserFlag != "" {
			return policy.Caller{}, fmt.Errorf("--as-user is for root only")
		}
		u, err := user.LookupId(strconv.FormatUint(uint64(sudoUID), 10))
		if err != nil {
			return policy.Caller{}, fmt.Errorf("uid %d is not in the user database: %v", sudoUID, err)
		}
		var gid *uint32
		if g, err := strconv.ParseUint(os.Getenv("SUDO_GID"), 10, 32); err == nil {
			v := uint32(g)
			gid = &v
		}
		return lookupCaller(u, gid)
	case asRoot:
		if asUserFlag == "" {
			return policy.Caller{}, fmt.Errorf("containers never run as root; as root, name the job's owner with --as-user")
		}
		u, err := user.Lookup(asUserFlag)
		if err != nil {
			if _, nerr := strconv.ParseUint(asUserFlag, 10, 32); nerr == nil {
				u, err = user.LookupId(asUserFlag)
			}
		}
		if err != nil {
			return policy.Caller{}, fmt.Errorf("--as-user %q is not in the user database", asUserFlag)
		}
		return lookupCaller(u, nil)
	}
	return policy.Caller{}, fmt.Errorf("not privileged")
}

// escalate replaces this process with sudo running containerjob as root,
// with argv rebuilt from what was parsed (so nothing unparsed rides along).
func escalate(args []string) error {
	argv := append([]string{sudoPath, "-n", "--", selfPath}, args...)
	env := []string{}
	for _, k := range []string{"TERM", "LANG", "LC_ALL"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	err := syscall.Exec(sudoPath, argv, env)
	return fmt.Errorf("running %s failed: %v; containerjob needs the sudoers rule in contrib/sudoers.d/containerjob", sudoPath, err)
}
