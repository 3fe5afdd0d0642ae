package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/identity"
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

// establishInvocation establishes who started this process. An error means
// root with SUDO_* variables that no sudo hop to this binary explains:
// refused, never taken for root.
func establishInvocation() (invocation, uint32, error) {
	return identity.Establish(identity.Current(sudoPath))
}

// privilegedCaller decides whose request this is, once we are root, from
// the node's user database (internal/identity).
func privilegedCaller(inv invocation, sudoUID uint32, asUserFlag string) (identity.Caller, error) {
	return identity.Privileged(identity.System, inv, sudoUID, os.Getenv("SUDO_GID"), asUserFlag)
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
	return hint.Errorf("containerjob needs the sudoers rule in contrib/sudoers.d/containerjob", "running %s failed: %w", sudoPath, err)
}

// passEnv writes p into a sealed memfd on jobEnvFD.
func passEnv(p passedEnv) error {
	buf, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("passing the environment: %w", err)
	}
	if len(buf) > maxJobEnv {
		return fmt.Errorf("the environment and -e values are larger than %d bytes", maxJobEnv)
	}
	fd, err := unix.MemfdCreate("containerjob-env", unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("passing the environment: %w", err)
	}
	for len(buf) > 0 {
		n, err := unix.Write(fd, buf)
		if err != nil {
			return fmt.Errorf("passing the environment: %w", err)
		}
		buf = buf[n:]
	}
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return err
	}
	if fd != jobEnvFD {
		if err := unix.Dup3(fd, jobEnvFD, 0); err != nil {
			return fmt.Errorf("passing the environment: %w", err)
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
		return p, fmt.Errorf("reading the job environment: %w", err)
	}
	if len(data) > maxJobEnv {
		return p, fmt.Errorf("the job environment is larger than %d bytes", maxJobEnv)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("the passed environment is malformed: %w", err)
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
