package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const testPolicy = `# test policy
[settings]
audit_log = "/tmp/audit.log"

[defaults]
images_allow = ["alpine:*", "debian:12"]
images_deny = [
  "alpine:bad",
]
pull = ["never", "missing"]
mounts_allow = ["$HOME", "/data:ro", "/data/$USER", "$JOB_DIR"]
mounts_always = ["/etc/passwd:ro"]
flags_allow = ["env", "volume", "workdir", "name", "network"]
networks_allow = ["none"]
outside_jobs = false

[group.gpu]
images_allow = ["nvidia/cuda:*"]
flags_allow = ["tty"]
pids_limit = 100
outside_jobs = true

[group.big]
pids_limit = 9000
outside_jobs = false

[user.alice]
networks_allow = ["bridge"]
images_deny = ["debian:*"]
`

func mustParse(t *testing.T, text string) *Policy {
	t.Helper()
	p, err := Parse("/etc/containerjob/policy.toml", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

var (
	alice = Caller{User: "alice", UID: 1001, GID: 1001, Groups: []uint32{2000}, GroupNames: []string{"alice", "gpu"}, Home: "/home/alice"}
	bob   = Caller{User: "bob", UID: 1002, GID: 1002, GroupNames: []string{"bob"}, Home: "/home/bob"}
	carol = Caller{User: "carol", UID: 1003, GID: 1003, GroupNames: []string{"carol", "gpu", "big"}, Home: "/home/carol"}
	inJob = Job{Scheduler: "slurm", ID: "42", Step: "0", Dir: "/home/alice/run", Node: "n1"}
)

func TestDecide(t *testing.T) {
	pol := mustParse(t, testPolicy)
	tests := []struct {
		name    string
		caller  Caller
		job     Job
		req     Request
		wantErr string // substring of the refusal; "" means allowed
		check   func(t *testing.T, d *Decision)
	}{
		{name: "plain allowed image", caller: bob, job: inJob, req: Request{Image: "alpine:3.20"},
			check: func(t *testing.T, d *Decision) {
				if d.Image.String() != "docker.io/library/alpine:3.20" {
					t.Errorf("image = %s", d.Image)
				}
				p := d.Spec.Process
				if p.User.UID != 1002 || p.User.GID != 1002 || !p.NoNewPrivileges {
					t.Errorf("process user/nnp = %+v nnp=%v", p.User, p.NoNewPrivileges)
				}
				if p.Cwd != inJob.Dir {
					t.Errorf("cwd = %q, want the job dir", p.Cwd)
				}
				if d.Network != "none" || d.Pull != "missing" {
					t.Errorf("network %q pull %q", d.Network, d.Pull)
				}
				if got := *d.Spec.Linux.Resources.Pids.Limit; got != defaultPidsLimit {
					t.Errorf("pids limit %d", got)
				}
				if d.Labels[LabelUID] != "1002" || d.Labels[LabelJob] != "42" {
					t.Errorf("labels %v", d.Labels)
				}
				if len(d.Spec.Mounts) != 2 || d.Spec.Mounts[0].Source != inJob.Dir || d.Spec.Mounts[1].Source != "/etc/passwd" {
					t.Errorf("mounts %+v", d.Spec.Mounts)
				}
			}},
		{name: "image not allowed cites images_allow", caller: bob, job: inJob, req: Request{Image: "ubuntu:22.04"},
			wantErr: `image "ubuntu:22.04" is not allowed, says images_allow in [defaults] (/etc/containerjob/policy.toml:6)`},
		{name: "image denied cites the deny entry line", caller: bob, job: inJob, req: Request{Image: "alpine:bad"},
			wantErr: `image "alpine:bad" is denied, says images_deny in [defaults] (/etc/containerjob/policy.toml:8)`},
		{name: "deny in user table beats allow in defaults", caller: alice, job: inJob, req: Request{Image: "debian:12"},
			wantErr: `is denied, says images_deny in [user.alice] (/etc/containerjob/policy.toml:29)`},
		{name: "group allow adds images", caller: alice, job: inJob, req: Request{Image: "nvidia/cuda:12.4"}},
		{name: "group allow does not reach others", caller: bob, job: inJob, req: Request{Image: "nvidia/cuda:12.4"},
			wantErr: "is not allowed, says images_allow"},
		{name: "image alias by full name is the same image", caller: bob, job: inJob, req: Request{Image: "docker.io/library/alpine:bad"},
			wantErr: "is denied, says images_deny"},
		{name: "image id refused", caller: bob, job: inJob, req: Request{Image: "sha256:" + strings.Repeat("a", 64)},
			wantErr: "image ID"},
		{name: "flag not allowed", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Flags: []string{"tty"}},
			wantErr: "flag --tty is not allowed, says flags_allow in [defaults]"},
		{name: "flag allowed through group", caller: alice, job: inJob, req: Request{Image: "alpine:3.20", Flags: []string{"tty"}, Tty: true}},
		{name: "outside jobs refused by default table", caller: bob, job: Job{Dir: "/home/bob"}, req: Request{Image: "alpine:3.20"},
			wantErr: "a launch outside a scheduler job is not allowed, says outside_jobs in [defaults] (/etc/containerjob/policy.toml:15)"},
		{name: "outside jobs allowed by group", caller: alice, job: Job{Dir: "/home/alice"}, req: Request{Image: "alpine:3.20"}},
		{name: "most permissive group scalar wins", caller: carol, job: Job{Dir: "/home/carol"}, req: Request{Image: "alpine:3.20"},
			check: func(t *testing.T, d *Decision) {
				if got := *d.Spec.Linux.Resources.Pids.Limit; got != 9000 {
					t.Errorf("pids limit %d, want 9000 from [group.big]", got)
				}
			}},
		{name: "mount under home allowed rw", caller: bob, job: inJob,
			req: Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/bob/x", Source: "/home/bob/x", Target: "/x"}}},
			check: func(t *testing.T, d *Decision) {
				m := d.Spec.Mounts[len(d.Spec.Mounts)-1]
				if m.Source != "/home/bob/x" || m.Destination != "/x" || slices.Contains(m.Options, "ro") {
					t.Errorf("mount %+v", m)
				}
			}},
		{name: "ro prefix forces read-only", caller: bob, job: inJob,
			req: Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/data/set", Source: "/data/set", Target: "/d"}}},
			check: func(t *testing.T, d *Decision) {
				if m := d.Spec.Mounts[len(d.Spec.Mounts)-1]; !slices.Contains(m.Options, "ro") {
					t.Errorf("mount %+v not read-only", m)
				}
			}},
		{name: "longest prefix gives rw under own data dir", caller: bob, job: inJob,
			req: Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/data/bob/out", Source: "/data/bob/out", Target: "/o"}}},
			check: func(t *testing.T, d *Decision) {
				if m := d.Spec.Mounts[len(d.Spec.Mounts)-1]; slices.Contains(m.Options, "ro") {
					t.Errorf("mount %+v is read-only", m)
				}
			}},
		{name: "prefix is path-aware, not textual", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/bobby", Source: "/home/bobby", Target: "/x"}}},
			wantErr: `mount source "/home/bobby" is not under any path allowed, says mounts_allow`},
		{name: "other user's home refused", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/alice", Source: "/home/alice", Target: "/x"}}},
			wantErr: "is not under any path allowed"},
		{name: "root filesystem never", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/", Source: "/", Target: "/host"}}},
			wantErr: `mount source "/" (the host's root directory) can never be mounted`},
		{name: "symlink resolved to /etc never", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/bob/etc-link", Source: "/etc", Target: "/x"}}},
			wantErr: "(the host's /etc) can never be mounted"},
		{name: "docker socket never", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/run/docker.sock", Source: "/run/docker.sock", Target: "/s"}}},
			wantErr: "Docker socket"},
		{name: "directory holding the docker socket never", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/run", Source: "/run", Target: "/r"}}},
			wantErr: "Docker socket"},
		{name: "proc never", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/proc/1", Source: "/proc/1", Target: "/p"}}},
			wantErr: "under /proc"},
		{name: "relative mount target refused", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/bob", Source: "/home/bob", Target: "x"}}},
			wantErr: "must be an absolute, clean path"},
		{name: "mount over forced target refused", caller: bob, job: inJob,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/bob/p", Source: "/home/bob/p", Target: "/etc/passwd"}}},
			wantErr: "already taken by a mount the admin forces"},
		{name: "job dir / refused", caller: bob, job: Job{ID: "1", Dir: "/"}, req: Request{Image: "alpine:3.20"},
			wantErr: "job directory"},
		{name: "reserved GPU variable refused", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Env: []string{"NVIDIA_VISIBLE_DEVICES=all"}},
			wantErr: "NVIDIA_VISIBLE_DEVICES is set only from the job's GPU allocation"},
		{name: "malformed env refused", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Env: []string{"A B=1"}},
			wantErr: "is malformed"},
		{name: "env with NUL refused", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Env: []string{"A=1\x002"}},
			wantErr: "is malformed"},
		{name: "host network refused unless listed", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Network: "host"},
			wantErr: `network "host" is not allowed, says networks_allow`},
		{name: "user table allows bridge", caller: alice, job: inJob, req: Request{Image: "alpine:3.20", Network: "bridge"}},
		{name: "container network namespace never", caller: alice, job: inJob, req: Request{Image: "alpine:3.20", Network: "container:abc"},
			wantErr: "joins another container's network namespace"},
		{name: "pull always not allowed", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Pull: "always"},
			wantErr: `pull mode "always" is not allowed, says pull`},
		{name: "unknown pull mode", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Pull: "sometimes"},
			wantErr: "is not one of never, missing, always"},
		{name: "container name namespaced by uid and job", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Name: "web"},
			check: func(t *testing.T, d *Decision) {
				if d.Name != "cj-1002-42-n1-web" {
					t.Errorf("name %q", d.Name)
				}
			}},
		{name: "container name with slash refused", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Name: "../x"},
			wantErr: "container name"},
		{name: "workdir must be absolute", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Workdir: "rel"},
			wantErr: "working directory"},
		{name: "cwd under a mount becomes workdir", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Cwd: "/home/alice/run/sub"},
			check: func(t *testing.T, d *Decision) {
				if d.Spec.Process.Cwd != "/home/alice/run/sub" {
					t.Errorf("cwd %q", d.Spec.Process.Cwd)
				}
			}},
		{name: "cwd outside mounts falls back to job dir", caller: bob, job: inJob, req: Request{Image: "alpine:3.20", Cwd: "/tmp"},
			check: func(t *testing.T, d *Decision) {
				if d.Spec.Process.Cwd != inJob.Dir {
					t.Errorf("cwd %q", d.Spec.Process.Cwd)
				}
			}},
		{name: "image forces NVIDIA_VISIBLE_DEVICES void", caller: bob, job: inJob, req: Request{Image: "alpine:3.20"},
			check: func(t *testing.T, d *Decision) {
				if !slices.Contains(d.Spec.Process.Env, "NVIDIA_VISIBLE_DEVICES=void") {
					t.Errorf("env %v", d.Spec.Process.Env)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := pol.Decide(tt.req, tt.caller, tt.job)
			if tt.wantErr != "" {
				var ref *Refusal
				if !errors.As(err, &ref) {
					t.Fatalf("Decide(%+v) = %v, want a refusal containing %q", tt.req, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decide(%+v) refusal = %q, want containing %q", tt.req, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide(%+v) = %v, want allowed", tt.req, err)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text, wantErr string
	}{
		{"unknown key names file, line and key", "[defaults]\nimages_allow = []\nprivileged = true\n",
			`/p.toml:3: unknown key "privileged" in [defaults]`},
		{"unknown table", "[defualts]\nimages_allow = []\n", `/p.toml:1: unknown table [defualts]`},
		{"wrong type", "[defaults]\noutside_jobs = \"yes\"\n", "/p.toml:2:"},
		{"syntax error", "x = = 1\n", "/p.toml:1:"},
		{"bad pattern", "[defaults]\nimages_allow = [\n \"ok:1\",\n \"re:(\",\n]\n", `/p.toml:4: images_allow in [defaults]`},
		{"bad flag", "[group.x]\nflags_allow = [\"privileged\"]\n", `/p.toml:2: flags_allow in [group.x]: unknown flag "privileged"`},
		{"bad mount variable", "[defaults]\nmounts_allow = [\"$HOMEDIR/x\"]\n", "unknown variable"},
		{"relative mount", "[defaults]\nmounts_allow = [\"data\"]\n", "must be an absolute path"},
		{"container network", "[defaults]\nnetworks_allow = [\"container:x\"]\n", "another container's network"},
		{"tcp engine", "[settings]\ndocker_host = \"tcp://0.0.0.0:2375\"\n", "must be a unix:// socket"},
		{"bad pull", "[defaults]\npull = [\"often\"]\n", "is not one of never"},
		{"zero pids", "[defaults]\npids_limit = 0\n", "positive"},
		{"bad confine", "[settings]\nconfine = \"cgroup\"\n", `/p.toml:2: confine "cgroup" is not limits, cgroup-parent or none`},
		{"bad gpus mode", "[settings]\ngpus_mode = \"amd\"\n", `/p.toml:2: gpus_mode "amd" is not nvidia, cdi, devices or none`},
		{"bad container logs", "\n[settings]\ncontainer_logs = \"syslog\"\n", `/p.toml:3: container_logs "syslog" is not none, json-file or local`},
		{"bad qstat format", "[settings]\nqstat_format = \"xml\"\n", `/p.toml:2: qstat_format "xml" is not json or text`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("/p.toml", []byte(tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want containing %q", tt.text, err, tt.wantErr)
			}
		})
	}
}

func TestParseExamplePolicy(t *testing.T) {
	p, err := Load("../contrib/policy.toml")
	if err != nil && !strings.Contains(err.Error(), "not owned by root") {
		t.Fatalf("Load(contrib/policy.toml): %v", err)
	}
	if p == nil {
		// Not root-owned in this checkout: parse it directly.
		data, rerr := readFile("../contrib/policy.toml")
		if rerr != nil {
			t.Fatal(rerr)
		}
		if _, err := Parse("contrib/policy.toml", data); err != nil {
			t.Fatalf("Parse(contrib/policy.toml): %v", err)
		}
	}
}

// TestNestedMounts: a bind target inside another bind mount is refused
// (runc < 1.1.14 can be raced into creating it on the host), unless the
// enclosing mount already shows the same directory, or the site allows it.
func TestNestedMounts(t *testing.T) {
	refuse := mustParse(t, testPolicy)
	allow := mustParse(t, strings.Replace(testPolicy, "[settings]\n", "[settings]\nnested_mounts = \"allow\"\n", 1))
	homeRO := mustParse(t, strings.Replace(testPolicy, `mounts_always = ["/etc/passwd:ro"]`, `mounts_always = ["/etc/passwd:ro"]
mounts_default = ["$HOME:ro"]`, 1))
	homeRW := mustParse(t, strings.Replace(testPolicy, `mounts_always = ["/etc/passwd:ro"]`, `mounts_always = ["/etc/passwd:ro"]
mounts_default = ["$HOME"]`, 1))
	home := []DefaultMount{{Path: "/home/alice", Source: "/home/alice"}}
	src := MountRequest{Given: "/home/alice/src", Source: "/home/alice/src", Target: "/home/alice/run/race/x"}
	tests := []struct {
		name     string
		pol      *Policy
		req      Request
		wantErr  string
		wantHint string
		want     []string // mount targets, in order
	}{
		{name: "-v into the job directory is refused", pol: refuse,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{src}},
			wantErr: `mount target "/home/alice/run/race/x" lies inside the mount of "/home/alice/run"`},
		{name: "the refusal names nested_mounts", pol: refuse,
			req:     Request{Image: "alpine:3.20", Mounts: []MountRequest{src}},
			wantErr: "CVE-2024-45310), says nested_mounts in [settings]", wantHint: "mount it outside /home/alice/run, e.g. under /mnt"},
		{name: "-v elsewhere is fine", pol: refuse,
			req:  Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/alice/src", Source: "/home/alice/src", Target: "/mnt/src"}}},
			want: []string{"/home/alice/run", "/etc/passwd", "/mnt/src"}},
		{name: "nested_mounts allow lets it through", pol: allow,
			req:  Request{Image: "alpine:3.20", Mounts: []MountRequest{src}},
			want: []string{"/home/alice/run", "/etc/passwd", "/home/alice/run/race/x"}},
		{name: "job dir inside a rw home is shown by the home mount", pol: homeRW,
			req:  Request{Image: "alpine:3.20", DefaultMounts: home},
			want: []string{"/etc/passwd", "/home/alice"}},
		{name: "rw job dir inside a read-only home is nested", pol: homeRO,
			req:     Request{Image: "alpine:3.20", DefaultMounts: home},
			wantErr: `mount target "/home/alice/run" lies inside the mount of "/home/alice"`},
		{name: "a -v of the same directory at its own place inside home is shown by home", pol: homeRW,
			req:  Request{Image: "alpine:3.20", DefaultMounts: home, Mounts: []MountRequest{{Given: "/home/alice/data", Source: "/home/alice/data", Target: "/home/alice/data"}}},
			want: []string{"/etc/passwd", "/home/alice"}},
		{name: "another directory mounted inside home is nested", pol: homeRW,
			req:     Request{Image: "alpine:3.20", DefaultMounts: home, Mounts: []MountRequest{{Given: "/data/x", Source: "/data/x", Target: "/home/alice/x"}}},
			wantErr: `mount target "/home/alice/x" lies inside the mount of "/home/alice"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if req.DefaultMounts != nil {
				// The policy's own list, each default present at its path.
				req.DefaultMounts = tt.pol.DefaultMounts(alice, inJob)
				for i := range req.DefaultMounts {
					req.DefaultMounts[i].Source = req.DefaultMounts[i].Path
				}
			}
			d, err := tt.pol.Decide(req, alice, inJob)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decide(%+v) err = %v, want %q", tt.req.Mounts, err, tt.wantErr)
				}
				var ref *Refusal
				if tt.wantHint != "" && (!errors.As(err, &ref) || ref.Hint != tt.wantHint) {
					t.Fatalf("hint %q, want %q", ref.Hint, tt.wantHint)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range d.Spec.Mounts {
				if m.Type == "bind" {
					got = append(got, m.Destination)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("mount targets %v, want %v", got, tt.want)
			}
			for _, s := range d.StageSources {
				if !slices.ContainsFunc(d.Spec.Mounts, func(m specs.Mount) bool { return m.Source == s }) {
					t.Errorf("staged source %q is mounted nowhere", s)
				}
			}
		})
	}
}

// TestPyxisPrecedence: with ImageFirst (the SPANK form) the container
// starts in the image's WORKDIR (Cwd empty: the engine's default) unless
// a working directory is asked for or forced, and the variables the job's
// environment gave are marked for the image to override; those the user
// named (--container-env) or the policy and containerjob set are not.
// "$PWD:$PWD" in the job directory is the job directory's own mount.
func TestPyxisPrecedence(t *testing.T) {
	pol := mustParse(t, testPolicy+"\nenv_force = [\"SITE=x\"]\n")
	req := Request{Image: "alpine:3.20", ImageFirst: true, Cwd: "/home/alice/run",
		JobEnv: []string{"CUDA_VERSION=12.0", "NCCL_DEBUG=INFO", "SITE=mine", "KEEP=1"}, Env: []string{"KEEP=1"}}
	d, err := pol.Decide(req, alice, inJob)
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Process.Cwd != "" || !d.ImageEnvWins {
		t.Errorf("cwd %q, image env wins %v; want the image's WORKDIR and its ENV first", d.Spec.Process.Cwd, d.ImageEnvWins)
	}
	if got := strings.Join(d.JobEnvNames, " "); got != "CUDA_VERSION NCCL_DEBUG" {
		t.Errorf("variables the image may override: %q; want CUDA_VERSION NCCL_DEBUG (not SITE, forced, nor KEEP, asked for)", got)
	}
	req.Workdir = "/tmp"
	if d, _ := pol.Decide(req, alice, inJob); d.Spec.Process.Cwd != "/tmp" {
		t.Errorf("--container-workdir /tmp: cwd %q", d.Spec.Process.Cwd)
	}
	req.Workdir, req.ImageFirst = "", false
	if d, _ := pol.Decide(req, alice, inJob); d.Spec.Process.Cwd != "/home/alice/run" || d.ImageEnvWins {
		t.Errorf("the wrapper form: cwd %q, image env wins %v; want the job directory and the job's env", d.Spec.Process.Cwd, d.ImageEnvWins)
	}
	// --container-mounts="$PWD:$PWD" in the job directory.
	for _, ro := range []bool{false, true} {
		req := Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/alice/run", Source: "/home/alice/run", Target: "/home/alice/run", ReadOnly: ro}}}
		d, err := pol.Decide(req, alice, inJob)
		if err != nil {
			t.Fatalf("$PWD:$PWD (ro %v): %v", ro, err)
		}
		n := 0
		for _, m := range d.Spec.Mounts {
			if m.Destination == "/home/alice/run" {
				n++
				if slices.Contains(m.Options, "ro") != ro {
					t.Errorf("$PWD:$PWD ro %v: options %v", ro, m.Options)
				}
			}
		}
		if n != 1 {
			t.Errorf("$PWD:$PWD: %d mounts at the job directory, want 1", n)
		}
	}
	// Another source at a forced target is still refused.
	req = Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/alice/x", Source: "/home/alice/x", Target: "/home/alice/run"}}}
	if _, err := pol.Decide(req, alice, inJob); err == nil || !strings.Contains(err.Error(), "already taken") {
		t.Errorf("another source at the job directory: %v", err)
	}
}

// TestSharedStepGetsTheStepsCPUs: a container the step's tasks share gets
// all of the step's CPUs on the node, not the binding of the task that
// happened to create it (its other ranks all ran on that task's CPU).
func TestSharedStepGetsTheStepsCPUs(t *testing.T) {
	pol := mustParse(t, testPolicy)
	job := Job{Scheduler: "slurm", ID: "42", Step: "0", Dir: "/home/alice/run", Node: "n1", CPUs: "1", StepCPUs: "0-3", StepTasks: 4}
	d, err := pol.Decide(Request{Image: "alpine:3.20"}, alice, job)
	if err != nil {
		t.Fatal(err)
	}
	if !d.StepShared || d.Spec.Linux.Resources.CPU == nil || d.Spec.Linux.Resources.CPU.Cpus != "0-3" {
		t.Errorf("shared %v, cpus %+v; want the step's 0-3", d.StepShared, d.Spec.Linux.Resources.CPU)
	}
	job.StepTasks = 1
	if d, _ := pol.Decide(Request{Image: "alpine:3.20"}, alice, job); d.Spec.Linux.Resources.CPU.Cpus != "1" {
		t.Errorf("a one-task step: cpus %q, want the task's 1", d.Spec.Linux.Resources.CPU.Cpus)
	}
}

// TestJudgeSubmission: at submission only what no node or job can change
// is judged, with the same refusal and rule the node would give; a digest
// waits for the node.
func TestJudgeSubmission(t *testing.T) {
	pol, err := Parse("/p.toml", []byte(`[defaults]
images_allow = ["alpine:*"]
images_deny = ["alpine:denied"]
flags_allow = ["volume", "workdir"]
`))
	if err != nil {
		t.Fatal(err)
	}
	alice := Caller{User: "alice", UID: 1000, GID: 1000}
	tests := []struct {
		image string
		flags []string
		want  string // "" allowed
	}{
		{"alpine:3.20", []string{"volume"}, ""},
		{"alpine:denied", nil, `image "alpine:denied" is denied, says images_deny in [defaults] (/p.toml:3)`},
		{"ubuntu:24.04", nil, "is not allowed"},
		{"alpine:3.20", []string{"network"}, "flag --network is not allowed"},
		{"alpine@sha256:" + strings.Repeat("a", 64), nil, ""},
		{"", []string{"workdir"}, ""},
	}
	for _, tt := range tests {
		err := pol.JudgeSubmission(alice, tt.image, tt.flags)
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %v: %v, want %q", tt.image, tt.flags, err, tt.want)
		}
	}
}
