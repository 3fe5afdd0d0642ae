package hint

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestTheHintStaysOffTheErrorsLine(t *testing.T) {
	err := Errorf("see containerjob ps", "no container of yours matches %q", "web")
	if err.Error() != `no container of yours matches "web"` || Of(err) != "see containerjob ps" {
		t.Errorf("%q, hint %q", err, Of(err))
	}
	wrapped := fmt.Errorf("stop: %w", err)
	if Of(wrapped) != "see containerjob ps" {
		t.Errorf("a wrapped error lost its hint: %q", Of(wrapped))
	}
	if Of(fmt.Errorf("stop: %v", err)) != "" || Of(nil) != "" || Of(errors.New("x")) != "" {
		t.Error("a hint where none was given")
	}
	cause := &Error{Err: fmt.Errorf("reading: %w", fs.ErrNotExist), Hint: "h"}
	if !errors.Is(cause, fs.ErrNotExist) {
		t.Error("the hinted error hides its cause")
	}
}
