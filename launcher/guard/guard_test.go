package guard

import (
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

func TestCheckMountTargets(t *testing.T) {
	bind := func(src, dst string) mount.Mount { return mount.Mount{Type: mount.TypeBind, Source: src, Target: dst} }
	tests := []struct {
		name    string
		mounts  []mount.Mount
		allow   bool
		wantErr string
	}{
		{"side by side", []mount.Mount{bind("/home/a/run", "/home/a/run"), bind("/home/a/src", "/mnt/src")}, false, ""},
		{"prefix is not nesting", []mount.Mount{bind("/x", "/home/a/run"), bind("/y", "/home/a/run2")}, false, ""},
		{"inside the job dir", []mount.Mount{bind("/home/a/run", "/home/a/run"), bind("/home/a/src", "/home/a/run/race/x")}, false, `lies inside the bind mount at "/home/a/run"`},
		{"inside, order reversed", []mount.Mount{bind("/home/a/src", "/home/a/run/x"), bind("/home/a/run", "/home/a/run")}, false, "lies inside"},
		{"allowed by the site", []mount.Mount{bind("/home/a/run", "/home/a/run"), bind("/home/a/src", "/home/a/run/x")}, true, ""},
		{"unclean target", []mount.Mount{bind("/a", "/mnt/../etc")}, false, "not an absolute, clean path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := client.ContainerCreateOptions{Config: &container.Config{}, HostConfig: &container.HostConfig{Mounts: tt.mounts}}
			err := checkMountTargets(req, Expect{AllowNestedMounts: tt.allow})
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("checkMountTargets(%v) = %v; want %q", tt.mounts, err, tt.wantErr)
			}
		})
	}
}

func TestCheckMountsGeneratedFiles(t *testing.T) {
	const root = "/run/containerjob/stage"
	gen := root + "/1-ab/gen-passwd"
	const init = "/usr/libexec/containerjob/containerjob-init"
	want := Expect{StageRoot: root, Generated: map[string]string{gen: "/etc/passwd"}, Staged: map[string]string{root + "/1-ab/0": "/home/a"}, Own: map[string]string{init: "/.containerjob/init"}}
	bind := func(src, dst string, ro bool) mount.Mount {
		return mount.Mount{Type: mount.TypeBind, Source: src, Target: dst, ReadOnly: ro}
	}
	tests := []struct {
		name    string
		m       mount.Mount
		wantErr string
	}{
		{"generated, read-only, at its target", bind(gen, "/etc/passwd", true), ""},
		{"generated, writable", bind(gen, "/etc/passwd", false), "want read-only"},
		{"generated, elsewhere", bind(gen, "/etc/shadow", true), "want read-only"},
		{"staged user path", bind(root+"/1-ab/0", "/home/a", false), ""},
		{"another launch's file", bind(root+"/2-cd/gen-passwd", "/etc/passwd", true), "not made by this launch"},
		{"containerjob's own, read-only, at its target", bind(init, "/.containerjob/init", true), ""},
		{"containerjob's own, writable", bind(init, "/.containerjob/init", false), "want read-only"},
		{"containerjob's own, elsewhere", bind(init, "/usr/bin/env", true), "want read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := client.ContainerCreateOptions{Config: &container.Config{}, HostConfig: &container.HostConfig{Mounts: []mount.Mount{tt.m}}}
			err := checkMounts(req, want)
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("checkMounts(%v) = %v; want %q", tt.m, err, tt.wantErr)
			}
		})
	}
}

func TestOwnParent(t *testing.T) {
	for p, want := range map[string]bool{
		"/containerjob/uid_1002/123-abcd": true,
		"containerjob-uid_1002.slice":     true,
		"containerjob-uid_.slice":         false,
		"containerjob-uid_10x.slice":      false,
		"containerjob-uid_1002.scope":     false,
		"system.slice":                    false,
		"/system.slice/slurmstepd.scope":  false,
		"user-1002.slice":                 false,
	} {
		if got := ownParent(p); got != want {
			t.Errorf("ownParent(%q) = %v, want %v", p, got, want)
		}
	}
}
