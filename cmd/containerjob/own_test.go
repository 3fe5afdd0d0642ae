package main

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// ownNode points the own-container commands at a fake engine holding a
// running container named web for nobody (uid 65534) and one of the same
// name for uid 1000, and returns their ids.
func ownNode(t *testing.T) (eng *enginetest.Engine, mine, theirs string) {
	t.Helper()
	actAsRoot(t)
	eng = enginetest.New(t)
	useEngine(t, eng, "[settings]\nstop_grace_seconds = 1\n")
	eng.Program["serve"] = enginetest.UntilTerm("")
	run := func(uid, user string) string {
		c, err := eng.ContainerCreate(context.Background(), client.ContainerCreateOptions{
			Config: &container.Config{Image: "docker.io/library/alpine:3.20", Cmd: []string{"serve"}, Labels: map[string]string{
				policy.LabelManaged: "1", policy.LabelUID: uid, policy.LabelUser: user, policy.LabelName: "web", policy.LabelImage: "alpine:3.20"}},
			HostConfig: &container.HostConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.ContainerStart(context.Background(), c.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	mine, theirs = run("65534", "nobody"), run("1000", "alice")
	t.Cleanup(func() {
		for _, id := range []string{mine, theirs} {
			eng.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
		}
	})
	return eng, mine, theirs
}

// useEngine points the privileged commands' node at eng for the test,
// and, when text is not empty, makes it the policy every command reads.
func useEngine(t *testing.T, eng *enginetest.Engine, text string) {
	t.Helper()
	oldLoad, oldFor := loadPolicy, nodeFor
	t.Cleanup(func() { loadPolicy, nodeFor = oldLoad, oldFor })
	nodeFor = func(pol *policy.Policy) (*node.Service, error) { return &node.Service{Policy: pol, Engine: eng}, nil }
	if text == "" {
		return
	}
	pol, err := policy.Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	loadPolicy = func(string) (*policy.Policy, error) { return pol, nil }
}

// TestOwnCommandsSeeOnlyTheCallersContainers: ps, stop and rm through the
// node's engine act on the caller's containers only; another user's, even
// of the same name and named by its id, is "not found" and left alone.
func TestOwnCommandsSeeOnlyTheCallersContainers(t *testing.T) {
	eng, mine, theirs := ownNode(t)
	out, errout, code := cli(t, "ps", "--as-user", "nobody")
	if code != 0 || !strings.Contains(out, mine[:12]) || strings.Contains(out, theirs[:12]) {
		t.Fatalf("ps = %d %q %q; want nobody's container alone", code, out, errout)
	}
	_, errout, code = cli(t, "stop", "--as-user", "nobody", theirs[:8])
	want := "containerjob: error: no container of yours matches \"" + theirs[:8] + "\"\ncontainerjob: hint: see containerjob ps\n"
	if code == 0 || errout != want {
		t.Errorf("stop of another user's container = %d %q, want not found, the hint on its own line: %q", code, errout, want)
	}
	if sigs := eng.Containers[theirs].Signals; len(sigs) != 0 {
		t.Errorf("another user's container got %v", sigs)
	}
	out, errout, code = cli(t, "stop", "--as-user", "nobody", "web")
	if code != 0 || strings.TrimSpace(out) != mine[:12] {
		t.Fatalf("stop web = %d %q %q", code, out, errout)
	}
	if sigs := eng.Containers[mine].Signals; !slices.Contains(sigs, "SIGTERM") {
		t.Errorf("the caller's container got %v, want SIGTERM", sigs)
	}
	out, errout, code = cli(t, "rm", "--as-user", "nobody", "web")
	if code != 0 || strings.TrimSpace(out) != mine[:12] {
		t.Fatalf("rm web = %d %q %q", code, out, errout)
	}
	if !eng.Containers[mine].Removed || eng.Containers[theirs].Removed {
		t.Errorf("removed: caller's %v, other's %v; want the caller's alone", eng.Containers[mine].Removed, eng.Containers[theirs].Removed)
	}
	out, _, _ = cli(t, "ps", "--all", "--as-user", "nobody")
	if strings.Contains(out, mine[:12]) {
		t.Errorf("ps --all after rm still lists it: %q", out)
	}
}

// TestStepEpilogRemovesTheStepsOwnContainers: the SPANK plugin's cleanup
// at a step's end (epilog --step) removes that step's containers on this
// node and nothing else: not another step's, not the job's named one,
// not another node's on the same engine, not another job's; each removal
// is in the audit trail.
func TestStepEpilogRemovesTheStepsOwnContainers(t *testing.T) {
	actAsRoot(t)
	dir := t.TempDir()
	audit := dir + "/audit.log"
	path := trustedPolicy(t, "[settings]\naudit_log = \""+audit+"\"\n")
	eng := enginetest.New(t)
	useEngine(t, eng, "")
	newContainer := func(job, step, node, name string) string {
		c, err := eng.ContainerCreate(context.Background(), client.ContainerCreateOptions{
			Config: &container.Config{Image: "docker.io/library/alpine:3.20", Labels: map[string]string{
				policy.LabelManaged: "1", policy.LabelScheduler: "slurm", policy.LabelJob: job, policy.LabelStep: step,
				policy.LabelNode: node, policy.LabelName: name, policy.LabelUID: "65534", policy.LabelUser: "nobody"}},
			HostConfig: &container.HostConfig{}, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	gone := newContainer("7", "0", "n1", "")
	kept := []string{newContainer("7", "1", "n1", ""), newContainer("7", "0", "n1", "keeper"), newContainer("7", "0", "n2", ""), newContainer("8", "0", "n1", "")}
	t.Cleanup(func() {
		for _, id := range kept {
			eng.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
		}
	})
	_, errout, code := cli(t, "epilog", "--scheduler", "slurm", "--job", "7", "--step", "0", "--node", "n1", "--policy", path, "--quiet")
	if code != 0 {
		t.Fatalf("epilog --step = %d %q", code, errout)
	}
	if !eng.Containers[gone].Removed {
		t.Error("the step's own container was left")
	}
	for _, id := range kept {
		if eng.Containers[id].Removed {
			t.Errorf("container %v of job %s step %s node %s was removed", eng.Containers[id].Name, eng.Containers[id].Req.Config.Labels[policy.LabelJob],
				eng.Containers[id].Req.Config.Labels[policy.LabelStep], eng.Containers[id].Req.Config.Labels[policy.LabelNode])
		}
	}
	log, _ := os.ReadFile(audit)
	if n := strings.Count(string(log), `"msg":"epilog-removed"`); n != 1 || !strings.Contains(string(log), gone) {
		t.Errorf("audit trail %q: want one epilog-removed record, for %s", log, gone)
	}
}
