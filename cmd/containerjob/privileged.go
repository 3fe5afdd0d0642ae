package main

import (
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
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
		resourceErr = fmt.Errorf("the caller's %s would stop containerjob mid-run, and it cannot raise it here (no CAP_SYS_RESOURCE); raise it first (ulimit -H), or run outside that shell", strings.Join(short, ", "))
	}
	signal.Ignore(syscall.SIGPIPE, syscall.SIGXCPU, syscall.SIGXFSZ)
}
