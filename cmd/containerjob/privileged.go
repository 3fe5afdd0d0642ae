package main

import (
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownResources makes the privileged process independent of the limits and
// signals its caller chose. Under sudo (with !pam_session, as our sudoers
// rule has it) the process keeps the rlimits of the user's shell: with
// `ulimit -t 1` the kernel would kill it by SIGXCPU mid-run, with
// `ulimit -f 1` an audit record could not be written, and the container
// would run on unwatched. A closed stdout (`| head -1`) would kill it by
// SIGPIPE the same way. So, as root: the limits the user could have
// lowered are raised back, and those signals are ignored, turning them
// into errors (EPIPE, EFBIG) that the launcher handles: it stops the
// container and says why.
func ownResources() {
	for _, r := range []struct {
		res int
		min uint64
	}{
		{unix.RLIMIT_CPU, unix.RLIM_INFINITY},
		{unix.RLIMIT_FSIZE, unix.RLIM_INFINITY},
		{unix.RLIMIT_DATA, unix.RLIM_INFINITY},
		{unix.RLIMIT_AS, unix.RLIM_INFINITY},
		{unix.RLIMIT_NOFILE, 65536},
		{unix.RLIMIT_NPROC, unix.RLIM_INFINITY},
		{unix.RLIMIT_SIGPENDING, 4096},
	} {
		var cur unix.Rlimit
		if unix.Getrlimit(r.res, &cur) != nil {
			continue
		}
		if cur.Cur >= r.min && cur.Max >= r.min {
			continue
		}
		want := unix.Rlimit{Cur: r.min, Max: max(cur.Max, r.min)}
		unix.Setrlimit(r.res, &want)
	}
	signal.Ignore(syscall.SIGPIPE, syscall.SIGXCPU, syscall.SIGXFSZ)
}
