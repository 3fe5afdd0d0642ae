package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// The whole output contract of the CLI lives here: every message containerjob
// itself prints goes to stderr (which is the job's log) as one line starting
// "containerjob: error:", "containerjob: hint:", "containerjob: warning:",
// "containerjob: pulling" or "containerjob: usage:", and exit codes are
// decided in exitCode alone. The packages below print nothing.

var stderr io.Writer = os.Stderr

// quietRefusals: this task is not its step's first on the node
// (--quiet-refusals, set by the SPANK path), so refusals that the request
// alone decides are left to that first task to print.
var quietRefusals bool

func errorf(format string, args ...any) {
	fmt.Fprintf(stderr, "containerjob: error: %s\n", oneLine(fmt.Sprintf(format, args...)))
}

func hintf(format string, args ...any) {
	fmt.Fprintf(stderr, "containerjob: hint: %s\n", oneLine(fmt.Sprintf(format, args...)))
}

func warningf(format string, args ...any) {
	fmt.Fprintf(stderr, "containerjob: warning: %s\n", oneLine(fmt.Sprintf(format, args...)))
}

// oneLine keeps a hostile or multi-line value from forging extra log lines.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// exitStatus carries a status that is not an error: the container's own.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a malformed command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode prints err (once, in the contract's form) and returns the status
// to exit with: the container's own, 126/127 when its command could not be
// run or found, 125 for anything containerjob or the policy refused.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var st exitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	var lerr *launcher.Error
	if errors.As(err, &lerr) {
		printWithHint(lerr.Err)
		return lerr.Code
	}
	var ref *policy.Refusal
	if errors.As(err, &ref) {
		if !quietRefusals {
			printWithHint(ref)
		}
		return launcher.ExitLaunchFailed
	}
	var uerr usageError
	if errors.As(err, &uerr) {
		if !quietRefusals {
			errorf("%v", uerr.err)
			hintf("see 'containerjob run --help'")
		}
		return launcher.ExitLaunchFailed
	}
	printWithHint(err)
	return launcher.ExitLaunchFailed
}

// printNotice prints what the launcher tells while it runs.
func printNotice(n launcher.Notice) {
	switch n.Kind {
	case launcher.NoticePulling:
		fmt.Fprintf(stderr, "containerjob: pulling %s\n", oneLine(n.Text))
	case launcher.NoticePulled:
		// for the node's metrics; the pull's start was said already
	case launcher.NoticeWaitingForPull:
		fmt.Fprintf(stderr, "containerjob: waiting for another launch's pull of %s on this node\n", oneLine(n.Text))
	default:
		warningf("%s", n.Text)
	}
}

// printOutcome prints what a finished launch has to say besides its exit
// status: that the kernel killed it for its memory, and its usage when
// the policy asks for it (report_usage).
func printOutcome(out node.Outcome) {
	res := out.Result
	if res.OOMKilled {
		limit := "its memory limit"
		if res.MemoryLimit > 0 {
			limit = fmt.Sprintf("the job's memory on this node (%d MiB)", res.MemoryLimit>>20)
		}
		errorf("the container was killed for using more than %s; ask for more memory (e.g. sbatch --mem)", limit)
	}
	if res.EngineStopped {
		errorf("the container engine stopped (a restart or an upgrade on this node) while the container ran, and stopped the container with it (exit %d); this was not your program's doing: run it again, and tell your admin if it repeats", res.ExitCode)
	}
	if out.ReportUsage && res.Usage.Sampled {
		fmt.Fprintf(stderr, "containerjob: usage: cpu %.2f s, peak memory %.1f MiB, wall %.2f s, exit %d\n",
			res.Usage.CPU.Seconds(), float64(res.Usage.PeakMemory)/(1<<20), res.Ended.Sub(res.Started).Seconds(), res.ExitCode)
	}
}

// printWithHint prints err's line and, when it is a refusal with a hint
// or carries one (internal/hint), the hint's line.
func printWithHint(err error) {
	errorf("%v", err)
	var ref *policy.Refusal
	if errors.As(err, &ref) && ref.Hint != "" {
		hintf("%s", ref.Hint)
	} else if h := hint.Of(err); h != "" {
		hintf("%s", h)
	}
}
