package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/policy"
)

// TestSpankArgs: each pyxis option the plugin hands over becomes the run
// flag a user could have typed, so the policy judges it the same way.
func TestSpankArgs(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		argv []string
		want string // the run arguments, space-joined
		err  string
	}{
		{"not a plugin task", map[string]string{"MODE": "prepend"}, []string{"containerjob", "x"}, "", ""},
		{"image and command",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine:3.20"},
			[]string{"containerjob", "hostname"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine:3.20 hostname", ""},
		{"name alone runs in the existing container, never on the host",
			map[string]string{"": "1", "MODE": "prepend", "NAME": "work"},
			[]string{"containerjob", "hostname"}, "run --step-stdin --image-first --existing --name=work --pyxis-entrypoint=quiet -- hostname", ""},
		{"neither image nor name",
			map[string]string{"": "1", "MODE": "prepend"},
			[]string{"containerjob", "hostname"}, "", "--container-image is empty"},
		{"argv0 mode puts the task's own argv[0] back",
			map[string]string{"": "1", "MODE": "argv0", "ARGV0": "/bin/echo", "IMAGE": "alpine"},
			[]string{"containerjob", "a", "b"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine /bin/echo a b", ""},
		{"mounts in pyxis syntax",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/data,/scratch:/s,/ref:/ref:ro"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --volume=/data:/data --volume=/scratch:/s --volume=/ref:/ref:ro --pyxis-entrypoint=quiet -- alpine true", ""},
		{"mount home",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNT_HOME": "1"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --mount-home --pyxis-entrypoint=quiet -- alpine true", ""},
		{"no mount home leaves out the default",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNT_HOME": "0"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --no-default-mount=/home/alice --pyxis-entrypoint=quiet -- alpine true", ""},
		{"workdir, env, name, readonly, no entrypoint",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "WORKDIR": "/tmp", "ENV": "PATH, OMP_NUM_THREADS,",
				"NAME": "work", "READONLY": "1", "ENTRYPOINT": "0"},
			[]string{"containerjob", "true"},
			"run --step-stdin --image-first --workdir=/tmp --env=PATH --env=OMP_NUM_THREADS --name=work --read-only --entrypoint= -- alpine true", ""},
		{"the entrypoint is the default, its output kept aside",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "ENTRYPOINT": "1"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine true", ""},
		{"--container-entrypoint-log shows the entrypoint's output",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "ENTRYPOINT_LOG": "1"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=log -- alpine true", ""},
		{"read-write asked for explicitly is refused: the image's files are root's",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "READONLY": "0"},
			[]string{"containerjob", "true"}, "", "--container-writable is refused"},
		{"an image beginning with a dash stays an image",
			map[string]string{"": "1", "MODE": "prepend", "IMAGE": "--privileged"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- --privileged true", ""},
		{"bad mount flag", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/a:/b:rshared"},
			[]string{"containerjob", "true"}, "", `mount flag "rshared" cannot be honoured`},
		{"too many colons", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/a:/b:ro:x"},
			[]string{"containerjob", "true"}, "", "is not SRC[:DST[:FLAGS]]"},
		{"pyxis mount flags joined with +", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/a:/b:ro+rprivate,/c:/d:rw+rbind+nosuid,/e:/f:x-create=dir"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --volume=/a:/b:ro --volume=/c:/d:rw --volume=/e:/f --pyxis-entrypoint=quiet -- alpine true", ""},
		{"noexec cannot be honoured", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/a:/b:ro+noexec"},
			[]string{"containerjob", "true"}, "", `mount flag "noexec" cannot be honoured`},
		{"ro and rw", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "/a:/b:ro+rw"},
			[]string{"containerjob", "true"}, "", "both ro and rw"},
		{"tmpfs source", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "MOUNTS": "tmpfs:/scratch"},
			[]string{"containerjob", "true"}, "", "only host directories can be mounted"},
		{"registry#image", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "nvcr.io#nvidia/pytorch:24.01-py3"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- nvcr.io/nvidia/pytorch:24.01-py3 true", ""},
		{"user@registry#image", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alice@docker.io#alpine:3.20"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- docker.io/alpine:3.20 true", ""},
		{"docker://", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "docker://alpine:3.20"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine:3.20 true", ""},
		{"dockerd:// never pulls", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "dockerd://alpine:3.20"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --local-only --pyxis-entrypoint=quiet -- alpine:3.20 true", ""},
		{"digest stays a digest", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine@sha256:" + strings.Repeat("a", 64)},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine@sha256:" + strings.Repeat("a", 64) + " true", ""},
		{"squashfs path", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "/scratch/alice/pytorch.sqsh"},
			[]string{"containerjob", "true"}, "", "a squashfs file is not a Docker image"},
		{"remap root refused", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "REMAP_ROOT": "1"},
			[]string{"containerjob", "true"}, "", "--container-remap-root is refused"},
		{"no remap root is what happens anyway", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "REMAP_ROOT": "0"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --pyxis-entrypoint=quiet -- alpine true", ""},
		{"name:exec runs only in the existing container", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "NAME": "w:exec"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --existing --name=w --pyxis-entrypoint=quiet -- true", ""},
		{"name:auto is the default", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "NAME": "w:auto"},
			[]string{"containerjob", "true"}, "run --step-stdin --image-first --name=w --pyxis-entrypoint=quiet -- alpine true", ""},
		{"name:create refused", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "NAME": "w:create"},
			[]string{"containerjob", "true"}, "", "the :create suffix is not offered"},
		{"name:bogus", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "NAME": "w:bogus"},
			[]string{"containerjob", "true"}, "", "the suffix is not"},
		{"unshare refused", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "UNSHARE": "net"},
			[]string{"containerjob", "true"}, "", "--container-unshare is refused"},
		{"container-save refused", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine", "SAVE": "/tmp/x.sqsh"},
			[]string{"containerjob", "true"}, "", "--container-save is refused"},
		{"no image", map[string]string{"": "1", "MODE": "prepend"}, []string{"containerjob", "true"}, "", "--container-image is empty"},
		{"no command", map[string]string{"": "1", "MODE": "prepend", "IMAGE": "alpine"}, []string{"containerjob"}, "", "the task has no command"},
		{"unknown mode", map[string]string{"": "1", "MODE": "exec", "IMAGE": "alpine"}, []string{"containerjob", "true"}, "", `MODE "exec"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HOME", "/home/alice")
			for _, k := range []string{"", "MODE", "ARGV0", "IMAGE", "MOUNTS", "MOUNT_HOME", "WORKDIR", "ENV", "NAME", "READONLY", "ENTRYPOINT", "ENTRYPOINT_LOG", "REMAP_ROOT", "SAVE", "UNSHARE"} {
				name := spankPrefix
				if k != "" {
					name += "_" + k
				}
				t.Setenv(name, tt.env[k])
				if _, set := tt.env[k]; !set {
					os.Unsetenv(name)
				}
			}
			args, ok, err := spankArgs(tt.argv)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.env[""] != "1" {
				if ok {
					t.Fatalf("ok without %s=1", spankPrefix)
				}
				return
			}
			if got := strings.Join(args, " "); got != tt.want {
				t.Errorf("args\n got %s\nwant %s", got, tt.want)
			}
			if i := slices.IndexFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, spankPrefix) }); i >= 0 {
				t.Errorf("%s left in the environment", os.Environ()[i])
			}
		})
	}
}

// TestSubmitCheck: the plugin's question at submission gets the node's
// refusal for what no node can change (a denied image, a flag, an option
// containerjob does not offer) and silence for everything else: an
// allowed image, a digest, a name alone, no policy on the host.
func TestSubmitCheck(t *testing.T) {
	pol := trustedPolicy(t, "[defaults]\nimages_allow = [\"alpine:*\"]\nimages_deny = [\"alpine:denied\"]\nflags_allow = [\"volume\", \"workdir\", \"env\", \"name\", \"read-only\", \"entrypoint\"]\n")
	dir := t.TempDir()
	old, oldCaller := submitPolicyPath, submitCaller
	t.Cleanup(func() { submitPolicyPath, submitCaller = old, oldCaller })
	submitCaller = func() (policy.Caller, error) { return policy.Caller{User: "alice", UID: 1000, GID: 1000}, nil }
	tests := []struct {
		name   string
		env    map[string]string
		policy string
		want   string // "" nothing said
	}{
		{"allowed", map[string]string{"IMAGE": "alpine:3.20", "MOUNTS": "/data"}, pol, ""},
		{"denied image", map[string]string{"IMAGE": "alpine:denied"}, pol, "is denied, says images_deny"},
		{"not allowed", map[string]string{"IMAGE": "ubuntu:24.04"}, pol, "is not allowed"},
		{"an option not offered", map[string]string{"IMAGE": "alpine:3.20", "READONLY": "0"}, pol, "--container-writable is refused"},
		{"a digest waits for the node", map[string]string{"IMAGE": "ubuntu@sha256:" + strings.Repeat("a", 64)}, pol, ""},
		{"a name alone", map[string]string{"NAME": "w"}, pol, ""},
		{"no policy on this host", map[string]string{"IMAGE": "alpine:denied"}, dir + "/none.toml", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			submitPolicyPath = tt.policy
			for _, k := range []string{"", "MODE", "ARGV0", "IMAGE", "MOUNTS", "MOUNT_HOME", "WORKDIR", "ENV", "NAME", "READONLY", "ENTRYPOINT", "ENTRYPOINT_LOG", "REMAP_ROOT", "SAVE", "UNSHARE"} {
				name := spankPrefix
				if k != "" {
					name += "_" + k
				}
				t.Setenv(name, tt.env[k])
				if _, set := tt.env[k]; !set {
					os.Unsetenv(name)
				}
			}
			var errb strings.Builder
			old := stderr
			stderr = &errb
			defer func() { stderr = old }()
			code := exitCode(submitCheck())
			out := errb.String()
			if tt.want == "" {
				if code != 0 || out != "" {
					t.Errorf("code %d, said %q; want nothing", code, out)
				}
				return
			}
			if code != 125 || !strings.Contains(out, tt.want) {
				t.Errorf("code %d, said %q; want 125 and %q", code, out, tt.want)
			}
		})
	}
}
