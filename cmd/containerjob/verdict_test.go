package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/policy"
)

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
		if c.ok != tt.ok || !strings.Contains(c.info, tt.info) || (!c.ok && c.fix == "") {
			t.Errorf("runc %s (policy %v): %+v, want ok %v and %q", tt.commit, tt.pol != nil, c, tt.ok, tt.info)
		}
	}
}

func TestRlimitValue(t *testing.T) {
	for v, want := range map[uint64]int64{0: 0, 1024: 1024, 1<<62 + 1: -1, ^uint64(0): -1} {
		if got := rlimitValue(v); got != want {
			t.Errorf("rlimitValue(%d) = %d, want %d", v, got, want)
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
	verdicts := func(text string) map[string]check {
		os.WriteFile(conf, []byte(text), 0o644)
		out := map[string]check{}
		for _, c := range slurmChecks(pol) {
			out[c.name] = c
		}
		return out
	}
	wired := "Prolog=/usr/libexec/containerjob/slurm-prolog\nEpilog=/usr/libexec/containerjob/slurm-epilog\nKillWait=30\nProctrackType=proctrack/cgroup\n"
	for name, c := range verdicts(wired) {
		if !c.ok {
			t.Errorf("a wired node: %s fails: %+v", name, c)
		}
	}
	if len(verdicts(wired)) != 5 {
		t.Errorf("checks %v, want the plugin, Prolog, Epilog, KillWait and ProctrackType", verdicts(wired))
	}
	bare := verdicts("KillWait=12\nProctrackType=proctrack/linuxproc\nPlugStackConfig=" + filepath.Join(dir, "other.conf") + "\n")
	for _, name := range []string{"SPANK plugin", "Prolog", "Epilog", "KillWait", "ProctrackType"} {
		if c := bare[name]; c.ok || c.fix == "" {
			t.Errorf("a bare node's %s: %+v, want a failure with its fix", name, c)
		}
	}
	pol.Settings.SlurmConf = filepath.Join(dir, "missing.conf")
	if out := slurmChecks(pol); len(out) != 1 || out[0].ok {
		t.Errorf("no slurm.conf: %+v, want one line that says so", out)
	}
}
