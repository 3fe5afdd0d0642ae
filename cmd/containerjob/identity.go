package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/policy"
)

// Fixed at build time (Makefile, -X): escalation never looks anything up in
// PATH, which the user controls.
var (
	sudoPath = "/usr/bin/sudo"
	selfPath = "/usr/local/bin/containerjob"
)

// The invocation kinds, established by internal/identity from the kernel
// and from files (never from argv or a path's spelling).
type invocation = identity.Invocation

const (
	asUser  = identity.AsUser
	viaSudo = identity.ViaSudo
	asRoot  = identity.AsRoot
)

// currentInvocation establishes who started this process. An error means
// root with SUDO_* variables that no sudo hop to this binary explains:
// refused, never taken for root.
func currentInvocation() (invocation, uint32, error) {
	return identity.Establish(identity.Current(sudoPath))
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

// jobEnvFD is the descriptor that carries, from the unprivileged side to
// the privileged one, the job's environment and the values of -e. Not
// argv: /proc/PID/cmdline is readable by every user on the node, and both
// can hold secrets. sudo keeps descriptors below 4 open with -C 4, which
// the sudoers rule permits (closefrom_override).
const jobEnvFD = 3

// passedEnv is what travels on jobEnvFD, as JSON.
type passedEnv struct {
	// Environ is the caller's whole environment, sent inside a job only:
	// it becomes the container's environment and a hint to be verified.
	Environ []string `json:"environ,omitempty"`
	// Env holds the -e flags, each NAME=VALUE, resolved on the caller's
	// side (sudo resets the environment).
	Env []string `json:"env,omitempty"`
}

// inJobHint reports whether the environment claims a scheduler job; only
// then is the job's environment forwarded (and later verified).
func inJobHint() bool {
	for _, k := range []string{"SLURM_JOB_ID", "PBS_JOBID"} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}

// escalate replaces this process with sudo running containerjob as root,
// with argv rebuilt from what was parsed (so nothing unparsed rides along).
// pass, when not nil, goes on jobEnvFD.
func escalate(args []string, pass *passedEnv) error {
	sudoArgs := []string{sudoPath, "-n"}
	if pass != nil {
		if err := passEnv(*pass); err != nil {
			return err
		}
		sudoArgs = append(sudoArgs, "-C", strconv.Itoa(jobEnvFD+1))
		args = append([]string{args[0], "--job-env-fd=" + strconv.Itoa(jobEnvFD)}, args[1:]...)
	}
	argv := append(append(sudoArgs, "--", selfPath), args...)
	env := []string{}
	for _, k := range []string{"TERM", "LANG", "LC_ALL"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	err := syscall.Exec(sudoPath, argv, env)
	return fmt.Errorf("running %s failed: %v; containerjob needs the sudoers rule in contrib/sudoers.d/containerjob", sudoPath, err)
}

// passEnv writes p into a sealed memfd on jobEnvFD.
func passEnv(p passedEnv) error {
	buf, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("passing the environment: %v", err)
	}
	if len(buf) > maxJobEnv {
		return fmt.Errorf("the environment and -e values are larger than %d bytes", maxJobEnv)
	}
	fd, err := unix.MemfdCreate("containerjob-env", unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("passing the environment: %v", err)
	}
	for len(buf) > 0 {
		n, err := unix.Write(fd, buf)
		if err != nil {
			return fmt.Errorf("passing the environment: %v", err)
		}
		buf = buf[n:]
	}
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return err
	}
	if fd != jobEnvFD {
		if err := unix.Dup3(fd, jobEnvFD, 0); err != nil {
			return fmt.Errorf("passing the environment: %v", err)
		}
		unix.Close(fd)
	}
	return nil
}

// maxJobEnv bounds what the privileged side reads from jobEnvFD.
const maxJobEnv = 4 << 20

// readPassedEnv reads what was passed on fd. Its content is the user's and
// is treated as data: it only ever becomes the container's environment or
// a hint to be verified.
func readPassedEnv(fd int) (passedEnv, error) {
	var p passedEnv
	if fd != jobEnvFD {
		return p, fmt.Errorf("--job-env-fd must be %d", jobEnvFD)
	}
	f := os.NewFile(uintptr(fd), "job-env")
	if f == nil {
		return p, fmt.Errorf("job environment descriptor %d is not open", fd)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJobEnv+1))
	if err != nil {
		return p, fmt.Errorf("reading the job environment: %v", err)
	}
	if len(data) > maxJobEnv {
		return p, fmt.Errorf("the job environment is larger than %d bytes", maxJobEnv)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("the passed environment is malformed: %v", err)
	}
	keep := p.Environ[:0]
	for _, kv := range p.Environ {
		if strings.Contains(kv, "=") && !strings.Contains(kv, "\x00") {
			keep = append(keep, kv)
		}
	}
	p.Environ = keep
	return p, nil
}

// envValue returns the last value of name in env.
func envValue(env []string, name string) string { return identity.EnvValue(env, name) }
