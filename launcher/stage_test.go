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
