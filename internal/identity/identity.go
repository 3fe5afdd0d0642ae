// Package identity establishes who started containerjob: an ordinary user
// (who must escalate), sudo on a user's behalf, or root itself. It decides
// from the kernel and from files, never from text a user could spell
// differently: a sudo hop is proven by the identity (device and inode) of
// the binaries involved, not by comparing path strings.
package identity

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
)

// Invocation is how containerjob was started, which decides whose request
// it serves.
type Invocation int

const (
	AsUser  Invocation = iota // unprivileged: must escalate through sudo
	ViaSudo                   // root, started by sudo for a user
	AsRoot                    // root, started directly (scheduler hooks, admins)
)

func (i Invocation) String() string {
	return [...]string{"user", "sudo", "root"}[i]
}

// Probe is everything Establish looks at; Current fills it from the
// running process, tests from files they made.
type Probe struct {
	EUID     int
	Env      []string // the process's environment
	Cwd      string   // where a relative SUDO_COMMAND is resolved (sudo keeps the caller's)
	SelfExe  string   // this binary: "/proc/self/exe"
	SudoPath string   // the configured sudo, fixed at build time
	Proc     string   // procfs root: "/proc"
	PPID     int
}

// Current probes the running process.
func Current(sudoPath string) Probe {
	cwd, _ := os.Getwd()
	return Probe{
		EUID: os.Geteuid(), Env: os.Environ(), Cwd: cwd,
		SelfExe: "/proc/self/exe", SudoPath: sudoPath, Proc: "/proc", PPID: os.Getppid(),
	}
}

// Establish decides the invocation and, via sudo, the caller's uid.
//
// Fail closed: a root process with any SUDO_* variable is never taken for
// a root invocation. Either the hop is proven (then it serves SUDO_UID) or
// the request is refused. A root shell opened with sudo -s inherits
// SUDO_UID; it must clear the variables to act as root, which it can, and
// no user can reach that state, since sudo removes SUDO_* from what a user
// passes.
func Establish(p Probe) (Invocation, uint32, error) {
	if p.EUID != 0 {
		return AsUser, 0, nil
	}
	sudoVars := false
	for _, kv := range p.Env {
		if strings.HasPrefix(kv, "SUDO_") {
			sudoVars = true
			break
		}
	}
	if !sudoVars {
		return AsRoot, 0, nil
	}
	v := EnvValue(p.Env, "SUDO_UID")
	uid, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return AsRoot, 0, hint.Errorf("run containerjob through sudo, or clear the SUDO_* variables to act as root", "started as root with SUDO_* variables but SUDO_UID %q is not a uid", v)
	}
	if !p.startedBySudo(uint32(uid)) {
		return AsRoot, 0, hint.Errorf("run containerjob through sudo, or clear the SUDO_* variables to act as root", "started as root with SUDO_* variables, but not by sudo for this binary (SUDO_COMMAND names another program)")
	}
	if uid == 0 {
		return AsRoot, 0, nil // root itself ran sudo containerjob
	}
	return ViaSudo, uint32(uid), nil
}

// startedBySudo is the proof that sudo started this very binary for uid:
// either SUDO_COMMAND's program, resolved as sudo resolved it, is this
// binary's file; or the parent process is the configured sudo binary
// running for uid (sudo stays as the parent when it keeps a pty or a PAM
// session, and execs the command in its own place otherwise).
func (p Probe) startedBySudo(uid uint32) bool {
	prog, _, _ := strings.Cut(EnvValue(p.Env, "SUDO_COMMAND"), " ")
	if prog != "" {
		if !filepath.IsAbs(prog) {
			prog = filepath.Join(p.Cwd, prog)
		}
		if SameFile(prog, p.SelfExe) {
			return true
		}
	}
	parent := filepath.Join(p.Proc, strconv.Itoa(p.PPID))
	if p.PPID <= 1 || !SameFile(filepath.Join(parent, "exe"), p.SudoPath) {
		return false
	}
	ruid, ok := RealUID(parent)
	return ok && ruid == uid
}

// SameFile reports whether two paths name one file (device and inode,
// links followed), never comparing the path strings.
func SameFile(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// RealUID reads the real uid from procDir/status (procDir: /proc/PID).
func RealUID(procDir string) (uint32, bool) {
	data, err := os.ReadFile(filepath.Join(procDir, "status"))
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

// EnvValue is the last value of name in env ("" when unset), as a
// process would read it.
func EnvValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}
