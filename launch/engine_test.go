package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/policy"
)

// onFakeEngine is runInput's launch against the shared fake engine, with
// the node's locks, caches and staging under the test's own directory and
// no containerjob-init (the engine's output path).
func onFakeEngine(t *testing.T, extra string) (Input, string, *enginetest.Engine) {
	t.Helper()
	in, audit := runInput(t, "outside_jobs = true\nmount_job_dir = false\n"+extra)
	dir := t.TempDir()
	saved := []*string{&launcher.JobMarkDir, &launcher.LaunchLockDir, &launcher.StepLockDir, &launcher.AccountsCache,
		&launcher.NodeCacheDir, &launcher.StageRoot, &launcher.PullLockDir, &launcher.PulledDir, &launcher.InitPath, &launcher.TaskSocketDir}
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
	if cfg.User != "65534:65534" {
		t.Errorf("container user %q, want nobody's uid:gid", cfg.User)
	}
	if host.Privileged || len(host.CapAdd) != 0 || host.NetworkMode != "none" || !strings.Contains(strings.Join(host.SecurityOpt, ","), "no-new-privileges") {
		t.Errorf("confinement: privileged %v, caps %v, network %q, security %v", host.Privileged, host.CapAdd, host.NetworkMode, host.SecurityOpt)
	}
	if c.Req.Config.Labels[policy.LabelUID] != "65534" {
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
