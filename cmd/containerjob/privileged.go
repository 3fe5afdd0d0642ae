package main

import (
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/policy"
)

// resourceErr is set when the privileged process is left with a limit of
// its caller's that could kill it mid-run; launches via sudo are refused
// then (see ownResources).
var resourceErr error

// ownResources makes the privileged process independent of the limits and
// signals its caller chose. Under sudo (with !pam_session, as our sudoers
// rule has it) the process keeps the rlimits of the user's shell: with
// `ulimit -t 1` the kernel would kill it mid-run, with `ulimit -f 1` an
// audit record could not be written, and the container would run on
// unwatched. A closed stdout (`| head -1`) would kill it by SIGPIPE the
// same way. So, as root: the limits the user could have lowered are
// raised back, and those signals are ignored, turning them into errors
// (EPIPE, EFBIG) that the launcher handles: it stops the container and
// says why. A hard limit can be raised only with CAP_SYS_RESOURCE; where
// root lacks it (some containers and sandboxes) and the caller lowered a
// hard limit that can kill (cpu) or starve (as, data, fsize) the process,
// resourceErr says which, and a launch is refused rather than orphaned.
func ownResources() {
	callerLimits = readCallerLimits()
	var short []string
	for _, r := range []struct {
		res  int
		name string
		min  uint64
		must bool
	}{
		{unix.RLIMIT_CPU, "cpu time (ulimit -t)", unix.RLIM_INFINITY, true},
		{unix.RLIMIT_FSIZE, "file size (ulimit -f)", unix.RLIM_INFINITY, true},
		{unix.RLIMIT_DATA, "data size (ulimit -d)", unix.RLIM_INFINITY, true},
		{unix.RLIMIT_AS, "address space (ulimit -v)", unix.RLIM_INFINITY, true},
		{unix.RLIMIT_NOFILE, "open files (ulimit -n)", 65536, false},
		{unix.RLIMIT_NPROC, "processes (ulimit -u)", unix.RLIM_INFINITY, false},
		{unix.RLIMIT_SIGPENDING, "pending signals (ulimit -i)", 4096, false},
	} {
		var cur unix.Rlimit
		if unix.Getrlimit(r.res, &cur) != nil {
			continue
		}
		if cur.Cur >= r.min && cur.Max >= r.min {
			continue
		}
		want := unix.Rlimit{Cur: r.min, Max: max(cur.Max, r.min)}
		if unix.Setrlimit(r.res, &want) == nil {
			continue
		}
		// Without CAP_SYS_RESOURCE: the soft limit up to the hard one.
		want = unix.Rlimit{Cur: min(cur.Max, r.min), Max: cur.Max}
		unix.Setrlimit(r.res, &want)
		if r.must && cur.Max < r.min {
			short = append(short, fmt.Sprintf("%s hard limit %d", r.name, cur.Max))
		}
	}
	if len(short) > 0 {
		resourceErr = hint.Errorf("raise it first (ulimit -H), or run outside that shell", "the caller's %s would stop containerjob mid-run, and it cannot raise it here (no CAP_SYS_RESOURCE)", strings.Join(short, ", "))
	}
	// Job-control stops: ^Z on the caller's terminal (or SIGTTIN/SIGTTOU
	// for a background read or write) would stop this root process with
	// whatever it holds: a user's launch lock, a step's lock, the pull of
	// an image other users wait for. The caller cannot send SIGSTOP to a
	// root process; these three are what the terminal sends without
	// asking whose process it is. Ignored, a background terminal read
	// fails (EIO) and a write goes through.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
}

// callerLimits are the resource limits the caller gave this process
// (through sudo, or Slurm's task), read before ownResources raises any:
// the container gets them, bounded by the policy's ulimits, as a task
// under pyxis would.
var callerLimits []policy.Ulimit

// readCallerLimits reads the limits a container inherits from its caller.
// Go raises its own soft open-files limit to the hard one at start, so the
// caller's soft value is not known here: the hard limit is what the
// caller could have raised it to, and is what the container gets.
func readCallerLimits() []policy.Ulimit {
	var out []policy.Ulimit
	for _, r := range []struct {
		res  int
		name string
	}{
		{unix.RLIMIT_NPROC, "nproc"}, {unix.RLIMIT_NOFILE, "nofile"}, {unix.RLIMIT_STACK, "stack"},
		{unix.RLIMIT_CORE, "core"}, {unix.RLIMIT_MEMLOCK, "memlock"},
	} {
		var cur unix.Rlimit
		if unix.Getrlimit(r.res, &cur) != nil {
			continue
		}
		if r.res == unix.RLIMIT_NOFILE {
			cur.Cur = cur.Max
		}
		out = append(out, policy.Ulimit{Name: r.name, Soft: rlimitValue(cur.Cur), Hard: rlimitValue(cur.Max)})
	}
	return out
}

// rlimitValue is a limit in the policy's terms: -1 for unlimited.
func rlimitValue(v uint64) int64 {
	if v == unix.RLIM_INFINITY || v > 1<<62 {
		return -1
	}
	return int64(v)
}
