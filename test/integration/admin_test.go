//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestDryRun: the user sees the exact, guarded create request and nothing
// is created.
func TestDryRun(t *testing.T) {
	since := time.Now()
	r := cj(t, alice, alice.Home, "--dry-run", "-e", "A=1", "alpine:3.20", "id")
	if r.Code != 0 {
		t.Fatalf("code %d stderr %q", r.Code, r.Stderr)
	}
	var out struct {
		Config struct {
			User  string
			Image string
			Env   []string
		} `json:"config"`
		HostConfig struct {
			CapDrop     []string
			SecurityOpt []string
		} `json:"host_config"`
		Rules []struct{ Item, Action, Rule string } `json:"rules"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("dry run output is not JSON: %v\n%s", err, r.Stdout)
	}
	if out.Config.User != strconv.Itoa(int(alice.UID))+":"+strconv.Itoa(int(alice.GID)) || !strings.HasPrefix(out.Config.Image, "sha256:") ||
		strings.Join(out.HostConfig.CapDrop, ",") != "ALL" || len(out.Rules) == 0 {
		t.Errorf("dry run: %+v", out)
	}
	if ev := testutil.ContainerEvents(t, docker, alice.UID, since, "create"); len(ev) > 0 {
		t.Errorf("--dry-run created %d container(s)", len(ev))
	}
	// A refused request is refused the same way in a dry run.
	since = time.Now()
	refused(t, alice, since, cj(t, alice, alice.Home, "--dry-run", "-v", "/etc:/x", "alpine:3.20", "true"), "can never be mounted")
}

// TestDoctor: on this machine (engine, policy, sudoers, binary installed)
// the installation checks pass; a broken sudoers drop-in fails them.
func TestDoctor(t *testing.T) {
	out, err := exec.Command(bin, "doctor").CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	for _, want := range []string{"ok   policy", "ok   engine ", "ok   sudoers drop-in", "ok   binary " + bin} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	os.Chmod("/etc/sudoers.d/containerjob", 0o644)
	defer os.Chmod("/etc/sudoers.d/containerjob", 0o440)
	out, err = exec.Command(bin, "doctor").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL sudoers drop-in") || !strings.Contains(string(out), "fix: ") {
		t.Errorf("doctor with a 0644 sudoers file: %v\n%s", err, out)
	}
	r := cj(t, alice, alice.Home, "doctor")
	if r.Code != 125 || !strings.Contains(r.Stderr, "not by users") {
		t.Errorf("doctor as a user: %d %q", r.Code, r.Stderr)
	}
}
