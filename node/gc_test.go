package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// fakeScontrol answers for job 1 (RUNNING on vm), says job 2 is unknown
// to Slurm, and cannot reach the controller for any other job.
func fakeScontrol(t *testing.T) string {
	t.Helper()
	running, err := filepath.Abs("../scheduler/testdata/scontrol-json-26.05-job-sluid.json") // job 1, RUNNING on vm
	if err != nil {
		t.Fatal(err)
	}
	scontrol := filepath.Join(t.TempDir(), "scontrol")
	os.WriteFile(scontrol, []byte(`#!/bin/sh
case "$*" in
*" 1") cat `+running+` ;;
*--json*" 2") echo '{"jobs": []}' ;;
*" 2") echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;
*) echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1 ;;
esac
`), 0o755)
	return scontrol
}

// TestJobVerdict: gc and the epilogue remove a job's containers only when
// Slurm says the job is over on this node; a Slurm that cannot be asked is
// "unknown", never "over" (a restarting slurmctld must not cost running
// jobs their containers).
func TestJobVerdict(t *testing.T) {
	scontrol := fakeScontrol(t)
	for _, tt := range []struct {
		name, node, job  string
		running, unknown bool
	}{
		{"running here", "vm", "1", true, false},
		{"running on another node", "other", "1", false, false},
		{"Slurm has no such job", "vm", "2", false, false},
		{"Slurm does not answer", "vm", "3", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := JobVerdict(context.Background(), scheduler.Slurm{Scontrol: scontrol, Node: tt.node}, scheduler.PBS{}, "slurm", tt.job)
			if v.Running != tt.running || (v.Unknown != nil) != tt.unknown {
				t.Errorf("verdict running %v unknown %v, want running %v unknown %v", v.Running, v.Unknown, tt.running, tt.unknown)
			}
		})
	}
}

// TestCollect: gc removes the containers of a job Slurm says is over and
// exited containers outside any job; it keeps a running job's, a job's it
// cannot ask about (and says so), a running container outside any job
// and another node's. A dry run removes nothing.
func TestCollect(t *testing.T) {
	n, eng, _ := cleanupNode(t)
	n.Policy.Settings.Scontrol = fakeScontrol(t)
	ctx := context.Background()
	eng.Program["serve"] = enginetest.UntilTerm("")
	outside := func(cmd string) string {
		id := jobContainer(t, eng, "", "vm", "")
		c := eng.Containers[id]
		c.Req.Config.Labels[policy.LabelScheduler] = ""
		c.Req.Config.Cmd = []string{cmd}
		w := eng.ContainerWait(ctx, id, client.ContainerWaitOptions{})
		if _, err := eng.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		if cmd == "true" {
			<-w.Result
		}
		return id
	}
	over, exited := jobContainer(t, eng, "2", "vm", ""), outside("true")
	kept := []string{jobContainer(t, eng, "1", "vm", ""), jobContainer(t, eng, "3", "vm", ""), jobContainer(t, eng, "2", "n2", ""), outside("serve")}
	t.Cleanup(func() {
		for _, id := range kept {
			eng.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
		}
	})
	dry, err := n.Collect(ctx, "vm", 0, true)
	if err != nil || len(dry.Doomed) != 2 || eng.Containers[over].Removed {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	res, err := n.Collect(ctx, "vm", time.Nanosecond, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Doomed) != 2 || len(res.Failed) != 0 || !eng.Containers[over].Removed || !eng.Containers[exited].Removed {
		t.Errorf("collection %+v: want job 2's and the exited one removed", res)
	}
	for _, id := range kept {
		if eng.Containers[id].Removed {
			t.Errorf("container of job %q on %q (state %s) was removed", eng.Containers[id].Req.Config.Labels[policy.LabelJob],
				eng.Containers[id].Req.Config.Labels[policy.LabelNode], eng.Containers[id].State)
		}
	}
	if _, ok := res.Kept["slurm/3"]; !ok || len(res.Kept) != 1 {
		t.Errorf("kept %v, want job 3's (Slurm did not answer)", res.Kept)
	}
}
