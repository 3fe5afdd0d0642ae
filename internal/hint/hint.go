// Package hint carries, with an error, what the user can do about it. The
// CLI prints the error on its error line and the hint on the hint line
// after it ("containerjob: hint: ..."), so that the error's own words stay
// one fact, whatever wraps them, and a reader (or a script) finds the
// advice in one place.
package hint

import (
	"errors"
	"fmt"
)

// Error is an error with a hint.
type Error struct {
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf is fmt.Errorf's error, with hint.
func Errorf(hint, format string, args ...any) error {
	return &Error{Err: fmt.Errorf(format, args...), Hint: hint}
}

// Of is the hint of the first error with one in err's chain, "" if none.
func Of(err error) string {
	var h *Error
	if errors.As(err, &h) {
		return h.Hint
	}
	return ""
}
