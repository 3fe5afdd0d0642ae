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
	if live, _ := liveDir("slurm", "12", "batch"); live != JobMarkDir+"/slurm-12/@live/batch" {
		t.Fatalf("launch marks in %s: the plugin's step_live looks in JOB_MARK_DIR/slurm-JOB/@live/STEP", live)
	}
	for _, c := range []struct{ file, want string }{
		{"../spank/containerjob.c", `#define JOB_MARK_DIR "` + JobMarkDir + `"`},
		// The launches' marks, where the plugin looks before a step's cleanup.
		{"../spank/containerjob.c", `JOB_MARK_DIR "/slurm-%u/@live/%s"`},
		{"../contrib/slurm/slurm-epilog", JobMarkDir + "/slurm-$SLURM_JOB_ID"},
		{"../contrib/slurm/slurm-prolog", JobMarkDir + "/slurm-$SLURM_JOB_ID"},
	} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), c.want) {
			t.Errorf("%s does not look for job marks in %s (want %q)", c.file, JobMarkDir, c.want)
		}
	}
}
