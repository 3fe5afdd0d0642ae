package launcher

import (
	"testing"

	"github.com/containerjob/containerjob/launcher/enginetest"
)

// The launcher's tests use the shared fake engine under their old names.
type (
	fakeEngine    = enginetest.Engine
	fakeProc      = enginetest.Proc
	fakeFile      = enginetest.File
	fakeImage     = enginetest.Image
	fakeContainer = enginetest.Container
)

// newFakeEngine is the fake engine; the mount probes the launcher leaves
// to its own cleanup are not leftovers.
func newFakeEngine(t *testing.T) *fakeEngine { return enginetest.New(t, LabelProbe) }

var untilTerm = enginetest.UntilTerm

var notFound = enginetest.NotFound
