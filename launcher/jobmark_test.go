package launcher

import (
	"os"
	"strings"
	"testing"
)

// TestJobMarkDirIsTheHooksAndThePlugins: the Slurm hook scripts and the
// SPANK plugin's step end look for the job's mark where containerjob
// writes it; a job they miss would keep its containers past the step.
func TestJobMarkDirIsTheHooksAndThePlugins(t *testing.T) {
	for file, want := range map[string]string{
		"../spank/containerjob.c":       `#define JOB_MARK_DIR "` + JobMarkDir + `"`,
		"../contrib/slurm/slurm-epilog": JobMarkDir + "/slurm-$SLURM_JOB_ID",
		"../contrib/slurm/slurm-prolog": JobMarkDir + "/slurm-$SLURM_JOB_ID",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not look for job marks in %s (want %q)", file, JobMarkDir, want)
		}
	}
}
