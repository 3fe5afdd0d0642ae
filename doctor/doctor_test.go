package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/enginetest"
	"github.com/containerjob/containerjob/policy"
)

// TestFabricCheck: doctor reports the node's RDMA devices against what
// fabric_devices passes (fake device nodes, as the test cluster's GPUs).
func TestFabricCheck(t *testing.T) {
	dir := t.TempDir()
	if c := fabricCheck(nil, dir); !c.Skip {
		t.Errorf("no devices, none listed: %+v", c)
	}
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "mknod needs root")
	}
	dev := filepath.Join(dir, "uverbs0")
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(231, 192))); err != nil {
		t.Fatal(err)
	}
	if c := fabricCheck([]string{dev}, dir); !c.OK || !strings.Contains(c.Info, dev) {
		t.Errorf("the device listed: %+v", c)
	}
	if c := fabricCheck(nil, dir); !c.Skip || !strings.Contains(c.Info, "passes none") {
		t.Errorf("a device not listed: %+v", c)
	}
	if c := fabricCheck([]string{dev, filepath.Join(dir, "rdma_cm")}, dir); c.OK || c.Skip || c.Fix == "" {
		t.Errorf("a listed device the node lacks: %+v", c)
	}
}

// doctor's ownership check: root's file, and none of the forbidden mode
// bits.
func TestFileOwnedBy(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "policy.toml")
	os.WriteFile(f, nil, 0o644)
	root := os.Geteuid() == 0
	if c := FileOwnedBy("policy", f, 0o022, "chmod"); c.OK != root {
		t.Errorf("a 0644 file of uid %d: %+v", os.Geteuid(), c)
	}
	os.Chmod(f, 0o666)
	if c := FileOwnedBy("policy", f, 0o022, "chmod 0644"); c.OK || c.Fix != "chmod 0644" {
		t.Errorf("a file others can write: %+v", c)
	}
	if c := FileOwnedBy("policy", filepath.Join(dir, "missing"), 0o022, "install it"); c.OK || c.Fix != "install it" {
		t.Errorf("a missing file: %+v", c)
	}
}

// The output handoff's init: missing is a skip (launches still work, the
// engine carries the output), one others could change is a failure.
func TestInitCheck(t *testing.T) {
	dir := t.TempDir()
	if c := initCheck(filepath.Join(dir, "missing")); c.OK || !c.Skip || !strings.Contains(c.Info, "through the engine") {
		t.Errorf("missing: %+v", c)
	}
	f := filepath.Join(dir, "containerjob-init")
	os.WriteFile(f, nil, 0o755)
	root := os.Geteuid() == 0
	if c := initCheck(f); c.OK != root || root && !strings.Contains(c.Info, "write to the job's output files") {
		t.Errorf("a 0755 file of uid %d: %+v", os.Geteuid(), c)
	}
	os.Chmod(f, 0o777)
	if c := initCheck(f); c.OK || c.Skip || !strings.Contains(c.Fix, "chmod 0755") {
		t.Errorf("a file others can write: %+v", c)
	}
}

func TestRuncFixed(t *testing.T) {
	tests := []struct {
		commit       string
		fixed, known bool
	}{
		{"1.1.5+ds1-1+deb12u1", false, true},
		{"v1.1.13-0-g58aa920", false, true},
		{"v1.1.14-0-g2c9f560", true, true},
		{"1.2.5+ds1-1", true, true},
		{"2.0.0", true, true},
		{"N/A", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if fixed, known := runcFixed(tt.commit); fixed != tt.fixed || known != tt.known {
			t.Errorf("runcFixed(%q) = %v, %v; want %v, %v", tt.commit, fixed, known, tt.fixed, tt.known)
		}
	}
}

func TestKillWaitCheck(t *testing.T) {
	tests := []struct {
		killWait string
		grace    int
		ok       bool
	}{
		{"", 10, true},    // Slurm's default 30
		{"10", 10, false}, // the test cluster's old setting
		{"15", 10, true},
		{"14", 10, false},
		{"8", 3, true},
		{"x", 3, false},
	}
	for _, tt := range tests {
		if c := killWaitCheck(tt.killWait, tt.grace); c.OK != tt.ok {
			t.Errorf("killWaitCheck(%q, %d) = %+v, want ok %v", tt.killWait, tt.grace, c, tt.ok)
		}
	}
}

func TestCDICheck(t *testing.T) {
	gpus := map[string]string{"/dev/nvidia0": "195:0", "/dev/nvidia1": "195:1"}
	both := map[string]string{"195:0": "nvidia.com/gpu=GPU-a", "195:1": "nvidia.com/gpu=GPU-b"}
	tests := []struct {
		name       string
		engineDirs []string
		names      map[string]string
		err        error
		gpus       map[string]string
		ok, skip   bool
		says       string
	}{
		{"engine without CDI", nil, both, nil, gpus, false, false, "CDI disabled"},
		{"broken spec", []string{"/etc/cdi"}, nil, errors.New("CDI spec /etc/cdi/x.yaml is neither JSON nor YAML"), gpus, false, false, "neither JSON nor YAML"},
		{"engine reads elsewhere", []string{"/opt/cdi"}, both, nil, gpus, false, false, "/opt/cdi"},
		{"a GPU without a device", []string{"/etc/cdi", "/var/run/cdi"}, map[string]string{"195:0": "nvidia.com/gpu=GPU-a"}, nil, gpus, false, false, "/dev/nvidia1"},
		{"no GPUs here", []string{"/etc/cdi"}, nil, nil, nil, false, true, "no /dev/nvidiaN"},
		{"every GPU named", []string{"/etc/cdi", "/var/run/cdi"}, both, nil, gpus, true, false, "each of the node's 2 GPUs"},
	}
	for _, tt := range tests {
		c := cdiCheck(tt.engineDirs, tt.names, tt.err, tt.gpus)
		if c.OK != tt.ok || c.Skip != tt.skip || !strings.Contains(c.Info, tt.says) {
			t.Errorf("%s: cdiCheck = %+v; want ok %v skip %v saying %q", tt.name, c, tt.ok, tt.skip, tt.says)
		}
	}
}

func TestSlurmConfValue(t *testing.T) {
	conf := []byte("# a comment\nProctrackType=proctrack/linuxproc\n  proctracktype = proctrack/cgroup \nKillWait=30\nPlugStackConfig=/etc/slurm/plugstack.conf\n")
	for key, want := range map[string]string{"ProctrackType": "proctrack/cgroup", "KILLWAIT": "30", "Epilog": "", "PlugStackConfig": "/etc/slurm/plugstack.conf"} {
		if got := slurmConfValue(conf, key); got != want {
			t.Errorf("%s = %q, want %q (the last line for a key counts, case aside)", key, got, want)
		}
	}
}

// doctor's runc line: nested_mounts = "allow" needs runc's CVE-2024-45310
// fix (1.1.14); a distribution's patch level is not trusted to carry it.
func TestRuncCheck(t *testing.T) {
	allow := &policy.Policy{Settings: policy.Settings{NestedMounts: "allow"}}
	for _, tt := range []struct {
		commit string
		pol    *policy.Policy
		ok     bool
		info   string
	}{
		{"1.1.5+ds1-1+deb12u1", nil, true, "lacks the CVE-2024-45310 fix"},
		{"1.1.5+ds1-1+deb12u1", allow, false, "older than 1.1.14"},
		{"v1.1.14-0-g2c9f560", allow, true, "has the CVE-2024-45310 fix"},
		{"1.3.6+ds1", allow, true, "has the CVE-2024-45310 fix"},
		{"2.0.0", allow, true, "has the CVE-2024-45310 fix"},
		{"unknown", allow, false, "of unknown version"},
	} {
		c := runcCheck(tt.commit, tt.pol)
		if c.OK != tt.ok || !strings.Contains(c.Info, tt.info) || (!c.OK && c.Fix == "") {
			t.Errorf("runc %s (policy %v): %+v, want ok %v and %q", tt.commit, tt.pol != nil, c, tt.ok, tt.info)
		}
	}
}

// doctor's Slurm wiring: the plugin in the plugstack, the prolog and
// epilog, KillWait above the stop grace, proctrack/cgroup (the job is
// read from the caller's cgroup); each missing piece is one failed line
// with its fix.
func TestSlurmChecks(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "slurm.conf")
	os.WriteFile(filepath.Join(dir, "plugstack.conf"), []byte("required /usr/lib/containerjob/spank_containerjob.so\n"), 0o644)
	pol := &policy.Policy{Settings: policy.Settings{SlurmConf: conf, StopGraceSeconds: 10}}
	verdicts := func(text string) map[string]Check {
		os.WriteFile(conf, []byte(text), 0o644)
		out := map[string]Check{}
		for _, c := range slurmChecks(pol) {
			out[c.Name] = c
		}
		return out
	}
	wired := "Prolog=/usr/libexec/containerjob/slurm-prolog\nEpilog=/usr/libexec/containerjob/slurm-epilog\nKillWait=30\nProctrackType=proctrack/cgroup\n"
	for name, c := range verdicts(wired) {
		if !c.OK {
			t.Errorf("a wired node: %s fails: %+v", name, c)
		}
	}
	if len(verdicts(wired)) != 5 {
		t.Errorf("checks %v, want the plugin, Prolog, Epilog, KillWait and ProctrackType", verdicts(wired))
	}
	bare := verdicts("KillWait=12\nProctrackType=proctrack/linuxproc\nPlugStackConfig=" + filepath.Join(dir, "other.conf") + "\n")
	for _, name := range []string{"SPANK plugin", "Prolog", "Epilog", "KillWait", "ProctrackType"} {
		if c := bare[name]; c.OK || c.Fix == "" {
			t.Errorf("a bare node's %s: %+v, want a failure with its fix", name, c)
		}
	}
	pol.Settings.SlurmConf = filepath.Join(dir, "missing.conf")
	if out := slurmChecks(pol); len(out) != 1 || out[0].OK {
		t.Errorf("no slurm.conf: %+v, want one line that says so", out)
	}
}

// TestAdvisoryCheck: doctor names the advisories that apply to the
// engine's runc and says which version to install, as a warning (a
// distribution's build may carry the fix under its old number), never as
// a failure that would stop an install.
func TestAdvisoryCheck(t *testing.T) {
	c := advisoryCheck("runc advisories", "runc", "1.1.5+ds1-1+deb12u1")
	if !c.OK || !c.Warn || !strings.Contains(c.Info, "CVE-2025-31133") || !strings.Contains(c.Info, "CVE-2026-41579") || !strings.Contains(c.Fix, "install runc 1.3.6 or later") {
		t.Errorf("runc 1.1.5: %+v", c)
	}
	if c := advisoryCheck("runc advisories", "runc", "1.4.3"); !c.OK || c.Warn {
		t.Errorf("runc 1.4.3: %+v", c)
	}
	if c := advisoryCheck("nvidia toolkit advisories", "nvidia-container-toolkit", "NVIDIA Container Toolkit CLI version 1.17.4\ncommit: x"); !c.Warn || !strings.Contains(c.Fix, "1.19.1") || !strings.Contains(c.Info, "CVE-2025-23266") {
		t.Errorf("toolkit 1.17.4: %+v", c)
	}
	if c := advisoryCheck("runc advisories", "runc", "abcdef"); !c.Skip {
		t.Errorf("an unreadable version: %+v", c)
	}
}

// TestRunSaysWhatFailsAndHowToFixIt: the whole list for a node whose
// policy names an engine that does not answer, and for one whose policy
// cannot be used: every check is there in doctor's order, the failures
// each with their fix, and a broken policy still lets the rest be checked
// (with the built-in engine address).
func TestRunSaysWhatFailsAndHowToFixIt(t *testing.T) {
	dir := t.TempDir()
	pol, err := policy.Parse(filepath.Join(dir, "policy.toml"), []byte("[settings]\ndocker_host = \"unix://"+dir+"/no-engine.sock\"\n\n[defaults]\nimages_allow = [\"alpine:*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "containerjob")
	if err := os.WriteFile(bin, []byte("ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(bin, 0o777)
	down, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	checks := Run(Node{PolicyPath: filepath.Join(dir, "policy.toml"), Policy: pol, Binary: bin, Engine: down})
	byName := map[string]Check{}
	var names []string
	for _, c := range checks {
		byName[c.Name] = c
		names = append(names, c.Name)
	}
	if names[0] != "policy" || !byName["policy"].OK {
		t.Errorf("first check %+v, want the policy, valid", checks[0])
	}
	if c := byName["engine"]; c.OK || !strings.Contains(c.Fix, "start dockerd") {
		t.Errorf("an engine that does not answer: %+v", c)
	}
	if c := byName["binary "+bin]; c.OK || !strings.Contains(c.Fix, "chmod 0755 "+bin) {
		t.Errorf("a binary others may write: %+v", c)
	}
	for _, want := range []string{"sudoers drop-in", "output handoff", "cgroups", "fabric devices"} {
		if _, ok := byName[want]; !ok {
			t.Errorf("no %q check in %v", want, names)
		}
	}
	broken := Run(Node{PolicyPath: "/etc/containerjob/policy.toml", PolicyErr: errors.New("policy file /etc/containerjob/policy.toml is a symbolic link"), Binary: bin,
		EngineErr: errors.New(`unable to parse docker host "tcp:/x"`)})
	if c := broken[0]; c.Name != "policy" || c.OK || !strings.Contains(c.Info, "symbolic link") || c.Fix != "containerjob policy check /etc/containerjob/policy.toml" {
		t.Errorf("a policy that cannot be used: %+v", c)
	}
	if len(broken) < 5 || broken[1].Name != "engine" || broken[1].OK || !strings.Contains(broken[1].Info, "tcp:/x") {
		t.Errorf("a broken policy or engine address stopped the checks: %+v", broken)
	}
	// The engine answering: its version and cgroup driver, the per-user
	// cgroup that driver gives, runc.
	eng := enginetest.New(t)
	up := Run(Node{PolicyPath: filepath.Join(dir, "policy.toml"), Policy: pol, Binary: bin, Engine: eng})
	byName = map[string]Check{}
	for _, c := range up {
		byName[c.Name] = c
	}
	if c := byName["engine"]; !c.OK || !strings.Contains(c.Info, "28.5.2-fake") {
		t.Errorf("an engine that answers: %+v", c)
	}
	if c := byName["per-user cgroup"]; !c.OK || !strings.Contains(c.Info, "/containerjob/uid_UID") {
		t.Errorf("the cgroupfs driver: %+v", c)
	}
	if _, found := byName["runc"]; !found {
		t.Errorf("no runc check: %+v", up)
	}
}
