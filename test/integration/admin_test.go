//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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
	// Debian 12's runc (1.1.5+ds1) is older than every fix of CVE-2025-31133
	// and CVE-2026-41579: a warning naming the version to install.
	if !strings.Contains(string(out), "WARN runc advisories") || !strings.Contains(string(out), "CVE-2026-41579") || !strings.Contains(string(out), "fix: install runc 1.3.6 or later") {
		t.Errorf("doctor does not name runc's advisories:\n%s", out)
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

// TestPolicyExplain: the decision comes first; a user explains for
// themselves; root must name the user (exit 2); an unknown user is an
// error, not nobody.
func TestPolicyExplain(t *testing.T) {
	r := cj(t, alice, alice.Home, "policy", "explain", "--", "alpine:denied", "true")
	if r.Code != 1 || !strings.HasPrefix(r.Stdout, "decision for "+alice.Name+": alpine:denied true\n  REFUSED: ") || !strings.Contains(r.Stdout, "images_deny") {
		t.Errorf("explain as alice: code %d stdout %.400q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "policy "+policyPath+" for user "+alice.Name) {
		t.Errorf("explain as alice does not show alice's effective policy: %.400q", r.Stdout)
	}
	out, err := exec.Command(bin, "policy", "explain").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--user is required") {
		t.Errorf("explain as root without --user: %v %q; want exit 2 and --user is required", err, out)
	}
	out, err = exec.Command(bin, "policy", "explain", "--user", "cj-no-such-user").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `user "cj-no-such-user" is not in the user database`) || strings.Contains(string(out), "65534") {
		t.Errorf("explain for an unknown user: %v %q", err, out)
	}
}

// TestPolicyInstall: a candidate with an error changes nothing; a valid
// one replaces the target whole, root-owned 0644.
func TestPolicyInstall(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(target, []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte(testPolicy+"\n[defaults\n"), 0o600)
	out, err := exec.Command(bin, "policy", "check", "--install", bad, target).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not installed") {
		t.Errorf("installing a broken candidate: %v %q", err, out)
	}
	if data, _ := os.ReadFile(target); string(data) != testPolicy {
		t.Errorf("a broken candidate changed the policy")
	}
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(testPolicy+"# edited\n"), 0o600)
	out, err = exec.Command(bin, "policy", "check", "--install", good, target).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "installed as "+target) {
		t.Errorf("installing a valid candidate: %v %q", err, out)
	}
	fi, err := os.Stat(target)
	if data, _ := os.ReadFile(target); err != nil || string(data) != testPolicy+"# edited\n" || fi.Mode().Perm() != 0o644 {
		t.Errorf("installed policy: %v, mode %v", err, fi.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".policy-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestSlurmHooksSkipJobsWithoutContainers: the Slurm Prolog and Epilog
// start containerjob only for a job marked on this host (containerjob
// marks it before its first container or pin) or with an image to
// prefetch; for every other job they exit at once. A marked job's
// epilogue runs and drops the mark.
func TestSlurmHooksSkipJobsWithoutContainers(t *testing.T) {
	const job = "424242"
	hook := func(name string, env ...string) testutil.Result {
		cmd := exec.Command("sh", "-x", "/usr/libexec/containerjob/"+name)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "SLURM_JOB_ID=" + job, "SLURMD_NODENAME=" + "cjtestnode"}, env...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return testutil.Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
	}
	mark := "/run/containerjob/jobs/slurm-" + job
	os.RemoveAll(mark)
	for _, name := range []string{"slurm-prolog", "slurm-epilog"} {
		r := hook(name)
		if r.Code != 0 || strings.Contains(r.Stderr, "containerjob prolog") || strings.Contains(r.Stderr, "containerjob epilog") {
			t.Errorf("%s for a job without containers: code %d, trace %q; want an exit before containerjob", name, r.Code, r.Stderr)
		}
	}
	if r := hook("slurm-prolog", "SPANK_CONTAINERJOB_IMAGE=alpine:3.20"); !strings.Contains(r.Stderr, "containerjob prolog") {
		t.Errorf("prolog with an image to prefetch: trace %q; want containerjob started", r.Stderr)
	}
	if err := os.MkdirAll(mark, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(mark+"/cjtestnode", nil, 0o600)
	defer os.RemoveAll(mark)
	if r := hook("slurm-epilog"); r.Code != 0 || !strings.Contains(r.Stderr, "containerjob epilog") {
		t.Errorf("epilog of a marked job: code %d trace %q; want containerjob started", r.Code, r.Stderr)
	}
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Errorf("the epilogue left the job's mark: %v", err)
	}
}
