package launcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o600)
	tests := []struct {
		name  string
		paths []string
		want  string // "" for success, else a substring of the error
	}{
		{"directory and file", []string{dir, file}, ""},
		{"missing source named", []string{dir, filepath.Join(dir, "gone")}, `mount source "` + filepath.Join(dir, "gone") + `" cannot be opened`},
		{"nothing to probe", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Probe(tt.paths, time.Second)
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Probe(%v) = %v, want %q", tt.paths, err, tt.want)
			}
		})
	}
}

func TestProbeTimeoutNamesTheStuckPath(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	paths := []string{"/fast", "/nfs/hung", "/never"}
	err := withTimeout(50*time.Millisecond, paths, func(done func(int)) error {
		done(0)
		<-block // a lookup stuck in the kernel
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), `mount source "/nfs/hung" did not answer within 50ms`) {
		t.Fatalf("err = %v", err)
	}
}

// TestStagingDirectoriesArePrivate: the staging root and each launch's
// directory under it are 0700, and a root left 0711 by an earlier version
// is tightened: a user who sees a staged mount in mountinfo cannot walk
// into another user's job directory through it.
func TestStagingDirectoriesArePrivate(t *testing.T) {
	old := StageRoot
	StageRoot = filepath.Join(t.TempDir(), "run", "stage")
	defer func() { StageRoot = old }()
	if err := os.MkdirAll(StageRoot, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(StageRoot, 0o711)
	s := &Stage{Sources: map[string]string{}, Generated: map[string]string{}}
	if err := s.makeDir(); err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	for _, d := range []string{StageRoot, s.dir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v, want 0700", d, fi.Mode().Perm())
		}
	}
}
