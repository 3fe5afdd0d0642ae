package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const knobsPolicy = `[defaults]
images_allow = ["alpine:*"]
flags_allow = ["workdir", "cap-add", "shm-size", "pull", "read-only"]
pull = ["never", "missing", "always"]
env_force = ["SITE=hpc1", "OMP_PROC_BIND=true"]
workdir_force = "/work"
read_only_root = true
init = true
ulimits = ["nofile=1024:4096", "core=0"]
shm_size_max = "64m"
capabilities_allow = ["NET_RAW"]
max_containers_per_job = 8
max_containers_per_user = 16

[group.lenient]
read_only_root = false
max_containers_per_user = 32
local_only = false

[group.strict]
local_only = true
read_only_root = true
max_containers_per_user = 2
`

func TestForcedKnobs(t *testing.T) {
	p := mustParse(t, knobsPolicy)
	tests := []struct {
		name    string
		groups  []string
		req     Request
		wantErr string
		check   func(t *testing.T, d *Decision)
	}{
		{name: "forced values applied", req: Request{Image: "alpine:3.20", Env: []string{"SITE=mine"}},
			check: func(t *testing.T, d *Decision) {
				p := d.Spec.Process
				if !slices.Contains(p.Env, "SITE=hpc1") || slices.Contains(p.Env, "SITE=mine") || !slices.Contains(p.Env, "OMP_PROC_BIND=true") {
					t.Errorf("env %v: the forced value must win", p.Env)
				}
				if p.Cwd != "/work" || !d.ReadOnlyRoot || !d.Init {
					t.Errorf("cwd %q read-only %v init %v", p.Cwd, d.ReadOnlyRoot, d.Init)
				}
				if len(p.Rlimits) != 2 || p.Rlimits[0].Type != "RLIMIT_NOFILE" || p.Rlimits[0].Soft != 1024 || p.Rlimits[0].Hard != 4096 {
					t.Errorf("rlimits %+v", p.Rlimits)
				}
				if len(d.Limits) != 2 || d.Limits[0].Max != 16 || d.Limits[1].Max != 8 || d.Limits[1].Value != "42" {
					t.Errorf("limits %+v", d.Limits)
				}
			}},
		{name: "workdir cannot be chosen", req: Request{Image: "alpine:3.20", Workdir: "/tmp", Flags: []string{"workdir"}},
			wantErr: `working directory "/tmp" cannot be chosen; it is "/work", says workdir_force in [defaults] (/etc/containerjob/policy.toml:6)`},
		{name: "capability allowed", req: Request{Image: "alpine:3.20", CapAdd: []string{"cap_net_raw"}, Flags: []string{"cap-add"}},
			check: func(t *testing.T, d *Decision) {
				if !slices.Equal(d.Spec.Process.Capabilities.Effective, []string{"NET_RAW"}) {
					t.Errorf("caps %v", d.Spec.Process.Capabilities.Effective)
				}
			}},
		{name: "capability not allowed", req: Request{Image: "alpine:3.20", CapAdd: []string{"SYS_ADMIN"}, Flags: []string{"cap-add"}},
			wantErr: "capability SYS_ADMIN is not allowed, says capabilities_allow in [defaults] (/etc/containerjob/policy.toml:11)"},
		{name: "ALL never", req: Request{Image: "alpine:3.20", CapAdd: []string{"ALL"}, Flags: []string{"cap-add"}},
			wantErr: "capability ALL is not allowed"},
		{name: "shm above maximum", req: Request{Image: "alpine:3.20", ShmSize: 1 << 30, Flags: []string{"shm-size"}},
			wantErr: "is above the 67108864 allowed, says shm_size_max"},
		{name: "lenient group lifts read-only, raises the user limit", groups: []string{"lenient"}, req: Request{Image: "alpine:3.20"},
			check: func(t *testing.T, d *Decision) {
				if d.ReadOnlyRoot || d.Limits[0].Max != 32 {
					t.Errorf("read-only %v limits %+v", d.ReadOnlyRoot, d.Limits)
				}
			}},
		{name: "between groups the lenient value wins", groups: []string{"lenient", "strict"}, req: Request{Image: "alpine:3.20", Pull: "always", Flags: []string{"pull"}},
			check: func(t *testing.T, d *Decision) {
				if d.ReadOnlyRoot || d.Pull != "always" || d.Limits[0].Max != 32 {
					t.Errorf("read-only %v pull %q limits %+v", d.ReadOnlyRoot, d.Pull, d.Limits)
				}
			}},
		{name: "local_only forbids pulls", groups: []string{"strict"}, req: Request{Image: "alpine:3.20", Pull: "missing", Flags: []string{"pull"}},
			wantErr: `pull mode "missing" is not allowed, says local_only in [group.strict]`},
		{name: "local_only forces never", groups: []string{"strict"}, req: Request{Image: "alpine:3.20"},
			check: func(t *testing.T, d *Decision) {
				if d.Pull != "never" {
					t.Errorf("pull %q", d.Pull)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caller := bob
			caller.GroupNames = append([]string{"bob"}, tt.groups...)
			d, err := p.Decide(tt.req, caller, inJob)
			if tt.wantErr != "" {
				var ref *Refusal
				if !errors.As(err, &ref) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decide = %v, want a refusal containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			tt.check(t, d)
		})
	}
}

func TestKnobErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"[defaults]\nenv_force = [\"NOEQUALS\"]\n", "must be NAME=VALUE"},
		{"[defaults]\nenv_force = [\"NVIDIA_VISIBLE_DEVICES=all\"]\n", "containerjob's own"},
		{"[defaults]\nworkdir_force = \"rel\"\n", "absolute, clean path"},
		{"[defaults]\nulimits = [\"files=1\"]\n", "known NAME"},
		{"[defaults]\nulimits = [\"nofile=10:5\"]\n", "SOFT <= HARD"},
		{"[defaults]\nshm_size_max = \"big\"\n", "not a size"},
		{"[defaults]\ncapabilities_allow = [\"ALL\"]\n", "ALL is never allowed"},
		{"[defaults]\nmax_containers_per_job = 0\n", "at least 1"},
	} {
		if _, err := Parse("/p.toml", []byte(tt.text)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %q", tt.text, err, tt.want)
		}
	}
}

func TestDecideExec(t *testing.T) {
	pol, err := Parse("/p.toml", []byte("[defaults]\nflags_allow = [\"tty\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	bob := Caller{User: "bob", UID: 1002, GID: 1002, GroupNames: []string{"bob"}}
	for _, tt := range []struct {
		flags []string
		want  string
	}{
		{nil, ""},
		{[]string{"tty"}, ""},
		{[]string{"tty", "interactive"}, "flag --interactive is not allowed, says flags_allow in [defaults]"},
		{[]string{"volume"}, "flag --volume is not a flag of exec, says built-in rule exec-flags"},
	} {
		err := pol.DecideExec(bob, tt.flags)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("DecideExec(%v) = %v, want %q", tt.flags, err, tt.want)
		}
	}
}
