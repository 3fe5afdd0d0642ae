package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// cleanupNode is a node on the fake engine with the node's own files
// (marks, pins, staging, step records) under the test's directory.
func cleanupNode(t *testing.T) (*Service, *enginetest.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	vars := []*string{&launcher.JobMarkDir, &launcher.StageRoot, &launcher.TaskSocketDir, &PinRoot, &scheduler.StepRecordDir}
	old := make([]string, len(vars))
	for i, v := range vars {
		old[i] = *v
		*v = filepath.Join(dir, "node", string(rune('a'+i)))
	}
	scheduler.StepRecordDir = ""
	t.Cleanup(func() {
		for i, v := range vars {
			*v = old[i]
		}
	})
	pol, err := policy.Parse("test.toml", []byte(""))
	if err != nil {
		t.Fatal(err)
	}
	eng := enginetest.New(t)
	return &Service{Policy: pol, Engine: eng}, eng, filepath.Join(dir, "audit.log")
}

// epilog is the Epilog's cleanup of job on node n1, audited to auditPath.
func epilog(t *testing.T, n *Service, auditPath, job string) JobCleanup {
	t.Helper()
	trail, err := audit.Open(auditPath, false)
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	return n.CleanJob(context.Background(), trail, "epilog", "slurm", job, "", "n1")
}

func jobContainer(t *testing.T, eng *enginetest.Engine, job, node, name string) string {
	t.Helper()
	c, err := eng.ContainerCreate(context.Background(), client.ContainerCreateOptions{Name: name,
		Config: &container.Config{Image: "docker.io/library/alpine:3.20", Labels: map[string]string{
			policy.LabelManaged: "1", policy.LabelScheduler: "slurm", policy.LabelJob: job, policy.LabelStep: "0",
			policy.LabelNode: node, policy.LabelName: name, policy.LabelUID: "65534", policy.LabelUser: "nobody"}},
		HostConfig: &container.HostConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// TestCleanJobRemovesTheJobOnThisNode: the Epilog's cleanup removes every
// container of the job on this node, named ones too, and nothing of
// another node's or another job's; it records each removal and drops the
// job's mark, so the next Epilog starts nothing for it.
func TestCleanJobRemovesTheJobOnThisNode(t *testing.T) {
	n, eng, auditPath := cleanupNode(t)
	gone := []string{jobContainer(t, eng, "7", "n1", ""), jobContainer(t, eng, "7", "n1", "keeper")}
	kept := []string{jobContainer(t, eng, "7", "n2", ""), jobContainer(t, eng, "8", "n1", "")}
	t.Cleanup(func() {
		for _, id := range kept {
			eng.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
		}
	})
	if err := launcher.MarkJob("slurm", "7", "n1"); err != nil {
		t.Fatal(err)
	}
	res := epilog(t, n, auditPath, "7")
	if res.EngineDown != nil || len(res.Failed) != 0 || len(res.Warnings) != 0 || len(res.Containers) != 2 {
		t.Fatalf("cleanup = %+v", res)
	}
	for _, id := range gone {
		if !eng.Containers[id].Removed {
			t.Errorf("container %s of the job on this node was left", eng.Containers[id].Name)
		}
	}
	for _, id := range kept {
		if eng.Containers[id].Removed {
			t.Errorf("container of job %s on node %s was removed", eng.Containers[id].Req.Config.Labels[policy.LabelJob], eng.Containers[id].Req.Config.Labels[policy.LabelNode])
		}
	}
	if launcher.JobMarked("slurm", "7") {
		t.Error("the job's mark outlived its cleanup")
	}
	log, _ := os.ReadFile(auditPath)
	if strings.Count(string(log), `"msg":"epilog-removed"`) != 2 {
		t.Errorf("audit trail %q: want two epilog-removed records", log)
	}
}

// unreachable is an engine that answers no list.
type unreachable struct{ *enginetest.Engine }

func (unreachable) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{}, errors.New("Cannot connect to the Docker daemon")
}

// TestCleanJobWithoutTheEngine: an engine that cannot be reached is said,
// recorded, and leaves the job's mark for the next try.
func TestCleanJobWithoutTheEngine(t *testing.T) {
	n, eng, auditPath := cleanupNode(t)
	n.Engine = unreachable{eng}
	if err := launcher.MarkJob("slurm", "9", "n1"); err != nil {
		t.Fatal(err)
	}
	res := epilog(t, n, auditPath, "9")
	if res.EngineDown == nil || len(res.Containers) != 0 {
		t.Fatalf("cleanup = %+v, want the engine down and nothing checked", res)
	}
	if !launcher.JobMarked("slurm", "9") {
		t.Error("the mark went although nothing was checked")
	}
	if log, _ := os.ReadFile(auditPath); !strings.Contains(string(log), "Cannot connect") {
		t.Errorf("audit trail %q lacks the engine's error", log)
	}
}
