package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// The whole output contract of the CLI lives here: every message containerjob
// itself prints goes to stderr (which is the job's log) as one line starting
// "containerjob: error:", "containerjob: hint:" or "containerjob: warning:",
// and exit codes are decided in exitCode alone.

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
	errorf("%v", err)
	return launcher.ExitLaunchFailed
}

// printWithHint prints err's line and, when it is a refusal with a hint,
// the hint's line.
func printWithHint(err error) {
	errorf("%v", err)
	var ref *policy.Refusal
	if errors.As(err, &ref) && ref.Hint != "" {
		hintf("%s", ref.Hint)
	}
}
