package node

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

func TestShebangInterpreter(t *testing.T) {
	for _, c := range []struct{ head, want string }{
		{"#!/bin/bash\necho hi\n", "/bin/bash"},
		{"#! /usr/bin/env python3\n", "/usr/bin/env"},
		{"#!/bin/sh -e", "/bin/sh"},
		{"#!bash\n", ""},
		{"#!/bin/../bin/bash\n", ""},
		{"echo no shebang\n", ""},
		{"", ""},
		{"#!\n", ""},
	} {
		if got := shebangInterpreter([]byte(c.head)); got != c.want {
			t.Errorf("shebangInterpreter(%q) = %q, want %q", c.head, got, c.want)
		}
	}
}

// TestScriptInterpreter reads slurmd's copy of the batch script, and only
// when the container runs it.
func TestScriptInterpreter(t *testing.T) {
	spool := t.TempDir()
	job := scheduler.Job{Scheduler: "slurm", ID: "42", Step: "batch"}
	script := scheduler.BatchScript(job, spool)
	if err := os.MkdirAll(filepath.Dir(script), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/usr/bin/python3\nprint(1)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := scriptInterpreter(job, spool, []string{script}); got != "/usr/bin/python3" {
		t.Errorf("the batch step's script: %q", got)
	}
	if got := scriptInterpreter(job, spool, []string{"/bin/true"}); got != "" {
		t.Errorf("another command in the batch step: %q", got)
	}
	step := job
	step.Step = "0"
	if got := scriptInterpreter(step, spool, []string{script}); got != "" {
		t.Errorf("outside a batch step: %q", got)
	}
	// A symlink where the script should be is not followed.
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "x")
	os.WriteFile(other, []byte("#!/bin/zsh\n"), 0o600)
	if err := os.Symlink(other, script); err != nil {
		t.Fatal(err)
	}
	if got := scriptInterpreter(job, spool, []string{script}); got != "" {
		t.Errorf("a symlinked script was followed: %q", got)
	}
}

func TestPolicyJobAndGuardBounds(t *testing.T) {
	old := presentControlFiles
	presentControlFiles = func() []string { return []string{"/dev/nvidiactl"} }
	t.Cleanup(func() { presentControlFiles = old })
	job := scheduler.Job{Scheduler: "slurm", ID: "9", Step: "0", Node: "n1", Alloc: scheduler.Allocation{CPUs: "0-1", MemoryBytes: 1 << 30,
		GPUs: []scheduler.GPU{{Index: 1, Device: "/dev/nvidia3", Minor: 3}}}}
	pj := PolicyJob(job, nil, policy.Settings{})
	if pj.ID != "9" || pj.Node != "n1" || pj.CPUs != "0-1" || pj.MemoryBytes != 1<<30 ||
		len(pj.GPUs) != 1 || pj.GPUs[0].ID != "3" || !slices.Equal(pj.ControlFiles, []string{"/dev/nvidiactl"}) {
		t.Errorf("PolicyJob without UUIDs = %+v", pj)
	}
	// With the UUID the driver reported, the engine is asked for it.
	job.Alloc.GPUs[0].UUID = "GPU-abc"
	job.Alloc.GPUs[0].CDI = "nvidia.com/gpu=GPU-abc"
	pj = PolicyJob(job, nil, policy.Settings{})
	if pj.GPUs[0].ID != "GPU-abc" || pj.GPUs[0].Minor != 3 {
		t.Errorf("PolicyJob with a UUID = %+v", pj.GPUs)
	}
	want := GuardBounds(policy.Caller{UID: 5, GID: 6}, pj, &policy.Decision{Network: "none"})
	if want.UID != 5 || want.GID != 6 || want.AllowHostNetwork ||
		!slices.Equal(want.AllowedGPUIDs, []string{"GPU-abc", "nvidia.com/gpu=GPU-abc"}) ||
		!slices.Equal(want.AllowedDevices, []string{"/dev/nvidia3", "/dev/nvidiactl"}) {
		t.Errorf("GuardBounds = %+v", want)
	}
	// Fabric devices the node has are the job's, and the guard's bound.
	oldFabric := presentFabric
	presentFabric = func(devs []string) []string { return devs }
	t.Cleanup(func() { presentFabric = oldFabric })
	fj := PolicyJob(job, nil, policy.Settings{FabricDevices: []string{"/dev/infiniband/uverbs0"}})
	if want := GuardBounds(policy.Caller{UID: 5, GID: 6}, fj, &policy.Decision{}); !slices.Contains(want.AllowedDevices, "/dev/infiniband/uverbs0") {
		t.Errorf("GuardBounds with a fabric device = %+v", want)
	}
	// No GPUs: no device at all, whatever the node has.
	if want := GuardBounds(policy.Caller{UID: 5, GID: 6}, PolicyJob(scheduler.Job{}, nil, policy.Settings{}), &policy.Decision{}); len(want.AllowedDevices)+len(want.AllowedGPUIDs) != 0 {
		t.Errorf("GuardBounds without GPUs = %+v", want)
	}
}

func TestCallerAndAccount(t *testing.T) {
	c := identity.Caller{User: "alice", UID: 1002, GID: 1003, Groups: []uint32{1002, 77}, Home: "/home/alice",
		GroupNames: map[uint32]string{1003: "alice", 1002: "extra"}}
	pc := PolicyCaller(c)
	if pc.User != "alice" || pc.UID != 1002 || pc.GID != 1003 || !slices.Equal(pc.Groups, []uint32{1002, 77}) ||
		!slices.Equal(pc.GroupNames, []string{"alice", "extra"}) {
		t.Errorf("PolicyCaller = %+v", pc)
	}
	a := ContainerAccount(c)
	if a == nil || a.Name != "alice" || a.UID != 1002 || a.GID != 1003 || a.Home != "/home/alice" ||
		len(a.Groups) != 2 || a.Groups[0].Name != "alice" || a.Groups[0].GID != 1003 || a.Groups[1].Name != "extra" {
		t.Errorf("ContainerAccount = %+v", a)
	}
	if a := ContainerAccount(identity.Caller{User: "x:y", UID: 5, GID: 5, GroupNames: map[uint32]string{5: "x"}}); a != nil {
		t.Errorf("an account that cannot be written as a line: %+v", a)
	}
}

// TestAddHome: --mount-home adds home as a mount the policy judges, unless
// a default mount that is present and kept shows it already.
func TestAddHome(t *testing.T) {
	home := "/home/alice"
	shown := []policy.DefaultMount{{Path: home, Source: home}}
	for _, tt := range []struct {
		name     string
		defaults []policy.DefaultMount
		optOut   []string
		added    bool
	}{
		{"no default mount", nil, nil, true},
		{"a default shows home", shown, nil, false},
		{"the default is absent on the node", []policy.DefaultMount{{Path: home}}, nil, true},
		{"opted out of it", shown, []string{home}, true},
		{"opted out of all", shown, []string{"all"}, true},
	} {
		req := policy.Request{DefaultMounts: tt.defaults, NoDefaultMounts: tt.optOut}
		addHome(&req, home)
		added := slices.ContainsFunc(req.Mounts, func(m policy.MountRequest) bool { return m.Target == home })
		if added != tt.added || added != slices.Contains(req.Flags, "volume") {
			t.Errorf("%s: mounts %+v flags %v, want added %v", tt.name, req.Mounts, req.Flags, tt.added)
		}
	}
}
