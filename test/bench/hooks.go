package main

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"time"
)

// hooks measures what the Slurm Prolog and Epilog cost a job that runs no
// container on the node: the installed hook scripts (which start
// containerjob only for a job marked on this host) against what they ran
// before, containerjob itself for every job.
func (b *bencher) hooks() error {
	const runs = 50
	job := "987654321"
	os.RemoveAll("/run/containerjob/jobs/slurm-" + job)
	env := append(os.Environ(), "SLURM_JOB_ID="+job, "SLURMD_NODENAME=benchnode")
	measure := func(argv ...string) (time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < runs; i++ {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = env
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("%v: %v %s", argv, err, out)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], nil
	}
	fmt.Fprintf(&b.report, "## 9. Slurm Prolog and Epilog of a job without containers\n\n"+
		"What the node's hooks cost a job that runs no container: the installed scripts, which start containerjob only for a job marked on this host (containerjob marks it before its first container or pin) or with an image to prefetch, against starting containerjob for every job as they did before. Median of %d runs each, job %s unmarked.\n\n| hook | the installed script | containerjob itself |\n| --- | --- | --- |\n", runs, job)
	for _, h := range []string{"prolog", "epilog"} {
		script, err := measure("/usr/libexec/containerjob/slurm-" + h)
		if err != nil {
			return err
		}
		direct, err := measure(*bin, h, "--scheduler", "slurm")
		if err != nil {
			return err
		}
		fmt.Fprintf(&b.report, "| %s | %s | %s |\n", h, ms(script), ms(direct))
		fmt.Fprintf(b.raww, "hooks %s script %v direct %v\n", h, script, direct)
	}
	b.report.WriteString("\n")
	return nil
}
