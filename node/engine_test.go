package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// onFakeEngine is runInput's launch against the shared fake engine, with
// the node's locks, caches and staging under the test's own directory and
// no containerjob-init (the engine's output path).
func onFakeEngine(t *testing.T, extra string) (Input, string, *enginetest.Engine) {
	t.Helper()
	in, audit := runInput(t, "outside_jobs = true\nmount_job_dir = false\n"+extra)
	dir := t.TempDir()
	saved := []*string{&launcher.JobMarkDir, &launcher.LaunchLockDir, &launcher.StepLockDir, &launcher.AccountsCache,
		&launcher.NodeCacheDir, &launcher.StageRoot, &launcher.PullLockDir, &launcher.PulledDir, &launcher.InitPath, &launcher.TaskSocketDir, &PinRoot}
	old := make([]string, len(saved))
	for i, p := range saved {
		old[i] = *p
		*p = filepath.Join(dir, "node", strings.Repeat("x", i+1))
	}
	launcher.NodeCacheDir = filepath.Join(dir, "node")
	launcher.InitPath = filepath.Join(dir, "no-containerjob-init")
	t.Cleanup(func() {
		for i, p := range saved {
			*p = old[i]
		}
	})
	eng := enginetest.New(t, launcher.LabelProbe)
	in.Engine = eng
	return in, audit, eng
}

// records are the audit trail's records, by kind.
func records(t *testing.T, audit string) map[string][]map[string]any {
	t.Helper()
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]map[string]any{}
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		kind, _ := r["msg"].(string)
		out[kind] = append(out[kind], r)
	}
	return out
}

// TestRunThroughTheEngine: one launch the whole way, from the policy to
// the removed container, against the fake engine: the container runs the
// command as the caller, with the decision's confinement, its exit code
// comes back, nothing is left, and the trail has the decision and the
// container's end.
func TestRunThroughTheEngine(t *testing.T) {
	in, audit, eng := onFakeEngine(t, "")
	var stdout, stderr bytes.Buffer
	in.Stdio = launcher.IO{Stdout: &stdout, Stderr: &stderr}
	in.Request.Cmd = []string{"greet", "hello"}
	eng.Program["greet"] = func(p *enginetest.Proc) int {
		p.Stdout.Write([]byte(strings.Join(p.Args[1:], " ") + "\n"))
		return 3
	}
	out, err := Run(context.Background(), in)
	if err != nil {
		t.Fatalf("Run = %v (stderr %q)", err, stderr.String())
	}
	if out.Result.ExitCode != 3 || stdout.String() != "hello\n" {
		t.Errorf("exit %d, stdout %q; want 3 and the command's line", out.Result.ExitCode, stdout.String())
	}
	if n := len(eng.Live()); n != 0 {
		t.Errorf("%d containers left", n)
	}
	// The image's accounts are read from a container that never starts
	// (accounts.go); the command's is the one started.
	if eng.Count("ContainerStart") != 1 || eng.Count("ContainerRemove") != eng.Count("ContainerCreate") {
		t.Errorf("engine calls %v, want one start and a removal per create", eng.Calls)
	}
	var c *enginetest.Container
	for _, x := range eng.Containers {
		if x.State != "created" {
			c = x
		}
	}
	if c == nil {
		t.Fatalf("no container ran: %v", eng.Calls)
	}
	cfg, host := c.Req.Config, c.Req.HostConfig
	if want := fmt.Sprintf("%d:%d", in.Caller.UID, in.Caller.GID); cfg.User != want {
		t.Errorf("container user %q, want the caller's uid:gid %s", cfg.User, want)
	}
	if host.Privileged || len(host.CapAdd) != 0 || host.NetworkMode != "none" || !strings.Contains(strings.Join(host.SecurityOpt, ","), "no-new-privileges") {
		t.Errorf("confinement: privileged %v, caps %v, network %q, security %v", host.Privileged, host.CapAdd, host.NetworkMode, host.SecurityOpt)
	}
	if c.Req.Config.Labels[policy.LabelUID] != strconv.FormatUint(uint64(in.Caller.UID), 10) {
		t.Errorf("labels %v lack the caller's uid", c.Req.Config.Labels)
	}
	rec := records(t, audit)
	if len(rec["decision"]) != 1 || rec["decision"][0]["decision"] != "allowed" {
		t.Errorf("decision records %v", rec["decision"])
	}
	if len(rec["container-end"]) != 1 {
		t.Fatalf("records %v: want one container-end", rec)
	}
	if code, _ := rec["container-end"][0]["exit_code"].(float64); code != 3 {
		t.Errorf("container-end %v, want exit_code 3", rec["container-end"][0])
	}
}

// TestRunThroughTheEngineRefusesBeforeTheEngine: a refused launch asks
// the engine nothing that creates, and the trail has the refusal.
func TestRunThroughTheEngineRefusesBeforeTheEngine(t *testing.T) {
	in, audit, eng := onFakeEngine(t, "")
	in.Request.Image = "ubuntu:24.04"
	_, err := Run(context.Background(), in)
	if err == nil || !strings.Contains(err.Error(), "images_allow") {
		t.Fatalf("Run = %v, want the images_allow refusal", err)
	}
	if eng.Count("ContainerCreate") != 0 {
		t.Errorf("engine calls %v after a refusal", eng.Calls)
	}
	rec := records(t, audit)
	if len(rec["decision"]) != 1 || rec["decision"][0]["decision"] != "refused" || len(rec) != 1 {
		t.Errorf("records %v, want the refusal alone", rec)
	}
}

// TestRunThroughTheEngineCreateFails: an engine that cannot create gives
// the docker-run code for a launch that failed, leaves nothing, and the
// trail says the container failed.
func TestRunThroughTheEngineCreateFails(t *testing.T) {
	in, audit, eng := onFakeEngine(t, "")
	eng.CreateErr = os.ErrPermission
	in.Stdio = launcher.IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}
	_, err := Run(context.Background(), in)
	var le *launcher.Error
	if err == nil || !errors.As(err, &le) || le.Code != launcher.ExitLaunchFailed {
		t.Fatalf("Run = %v, want a launch failure with code %d", err, launcher.ExitLaunchFailed)
	}
	if n := len(eng.Live()); n != 0 {
		t.Errorf("%d containers left", n)
	}
	if rec := records(t, audit); len(rec["container-failed"]) != 1 || len(rec["container-end"]) != 0 {
		t.Errorf("records %v, want the container's failure", rec)
	}
}

// nodeOf is the Service a privileged command would open for in: its policy
// (loaded as the CLI would, or as handed in) and the fake engine.
func nodeOf(t *testing.T, in Input, eng *enginetest.Engine) *Service {
	t.Helper()
	pol := in.Policy
	if pol == nil {
		var err error
		if pol, err = policy.Load(in.PolicyPath); err != nil {
			t.Fatal(err)
		}
	}
	return &Service{Policy: pol, Engine: eng}
}

// TestPrefetchPinsTheJobsImage: the Prolog's prefetch takes an image the
// node has without pulling it and pins it for the job; a second prefetch
// of the same job finds the pin; an image the owner may not run is
// refused before the engine is asked for it, and a missing one is pulled.
func TestPrefetchPinsTheJobsImage(t *testing.T) {
	in, _, eng := onFakeEngine(t, "pull = [\"missing\"]\n")
	n := nodeOf(t, in, eng)
	caller := PolicyCaller(in.Caller)
	job := scheduler.Job{Scheduler: "slurm", ID: "42", Node: "n1"}
	ctx := context.Background()
	first, err := Prefetch(ctx, n, caller, job, "alpine:3.20")
	if err != nil || !strings.Contains(first, "docker.io/library/alpine:3.20") {
		t.Fatalf("Prefetch = %q, %v", first, err)
	}
	if eng.PullCount() != 0 {
		t.Errorf("an image the node has was pulled: %v", eng.Pulls)
	}
	again, err := Prefetch(ctx, n, caller, job, "alpine:3.20")
	if err != nil || again == "" {
		t.Errorf("second prefetch = %q, %v", again, err)
	}
	if _, err := Prefetch(ctx, n, caller, job, "ubuntu:24.04"); err == nil || !strings.Contains(err.Error(), "images_allow") {
		t.Errorf("prefetch of an image not allowed = %v", err)
	}
	if eng.PullCount() != 0 {
		t.Errorf("a refused image reached the engine: %v", eng.Pulls)
	}
	if _, err := Prefetch(ctx, n, caller, scheduler.Job{Scheduler: "slurm", ID: "43", Node: "n1"}, "alpine:3.19"); err != nil || eng.PullCount() != 1 {
		t.Errorf("prefetch of a missing image = %v, pulls %v", err, eng.Pulls)
	}
}

// TestExistingNamedImage: a step naming the job's container alone runs
// the image that container was created from, and only the caller's, of
// this job, on this node; anything else is refused, never run elsewhere.
func TestExistingNamedImage(t *testing.T) {
	in, _, eng := onFakeEngine(t, "")
	caller := PolicyCaller(in.Caller)
	uid := strconv.FormatUint(uint64(caller.UID), 10)
	add := func(name, owner, job, node, image string) {
		c, err := eng.ContainerCreate(context.Background(), client.ContainerCreateOptions{Name: "cj-" + name + "-" + owner + "-" + node,
			Config: &container.Config{Image: "docker.io/library/alpine:3.20", Labels: map[string]string{
				policy.LabelManaged: "1", policy.LabelScheduler: "slurm", policy.LabelJob: job, policy.LabelNode: node,
				policy.LabelName: name, policy.LabelUID: owner, policy.LabelImage: image}},
			HostConfig: &container.HostConfig{}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true}) })
	}
	add("web", uid, "7", "n1", "alpine:3.20")
	add("shared", "4242", "7", "n1", "alpine:3.19") // another user's
	add("remote", uid, "7", "n2", "alpine:3.18")    // the caller's, on another node
	job := scheduler.Job{Scheduler: "slurm", ID: "7", Node: "n1"}
	ctx := context.Background()
	if img, err := existingNamedImage(ctx, eng, caller, job, "web"); err != nil || img != "alpine:3.20" {
		t.Errorf("the caller's own container = %q, %v", img, err)
	}
	for _, tt := range []struct {
		name string
		job  scheduler.Job
		says string
	}{
		{"shared", job, "no container of that name"},
		{"remote", job, "no container of that name"},
		{"web", scheduler.Job{Scheduler: "slurm", ID: "8", Node: "n1"}, "no container of that name"},
		{"web", scheduler.Job{}, "outside a job"},
	} {
		_, err := existingNamedImage(ctx, eng, caller, tt.job, tt.name)
		var ref *policy.Refusal
		if !errors.As(err, &ref) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s in job %q = %v, want a refusal saying %q", tt.name, tt.job.ID, err, tt.says)
		}
	}
}

// TestNodePull: containerjob pull through the node's Service. An image the node has
// is not fetched again where the policy pulls missing images only; a
// missing one is pulled with its progress on the writer given; one the
// caller may not run is refused before the engine is asked; the trail
// has each decision and the pull's end, in one trail for the Service.
func TestNodePull(t *testing.T) {
	in, audit, eng := onFakeEngine(t, "pull = [\"missing\"]\n")
	n := nodeOf(t, in, eng)
	defer n.Close()
	caller := PolicyCaller(in.Caller)
	ctx := context.Background()
	var progress bytes.Buffer
	warn := func(w string) { t.Errorf("warning %q", w) }
	p, err := n.Pull(ctx, caller, "alpine:3.20", &progress, false, warn)
	if err != nil || !p.Present || p.Ref != "docker.io/library/alpine:3.20" || eng.PullCount() != 0 {
		t.Errorf("pull of an image the node has = %+v, %v; pulls %v", p, err, eng.Pulls)
	}
	p, err = n.Pull(ctx, caller, "alpine:3.19", &progress, false, warn)
	if err != nil || p.Present || p.ID == "" || eng.PullCount() != 1 || progress.Len() == 0 {
		t.Errorf("pull of a missing image = %+v, %v; pulls %v, progress %q", p, err, eng.Pulls, progress.String())
	}
	if _, err := n.Pull(ctx, caller, "ubuntu:24.04", &progress, false, warn); err == nil || eng.PullCount() != 1 {
		t.Errorf("pull of an image not allowed = %v; pulls %v", err, eng.Pulls)
	}
	n.Close()
	rec := records(t, audit)
	var decisions []string
	for _, r := range rec["decision"] {
		decisions = append(decisions, r["decision"].(string))
	}
	if strings.Join(decisions, ",") != "allowed,allowed,refused" || len(rec["pull-end"]) != 1 {
		t.Errorf("records %v", rec)
	}
}
