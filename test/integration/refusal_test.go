//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestRefusals is the attack suite's first part: every request here must be
// refused with exit 125, one error line naming the rule, and no container.
func TestRefusals(t *testing.T) {
	dir := userDir(t, alice, "attacks")
	// Symlinks the caller owns that point where she may not go.
	os.Symlink("/etc", filepath.Join(dir, "etclink"))
	os.Symlink(bob.Home, filepath.Join(dir, "boblink"))
	os.Symlink("/", filepath.Join(dir, "rootlink"))
	for _, l := range []string{"etclink", "boblink", "rootlink"} {
		os.Lchown(filepath.Join(dir, l), int(alice.UID), int(alice.GID))
	}
	evil := filepath.Join(dir, "evil.toml")
	os.WriteFile(evil, []byte("[defaults]\nimages_allow=[\"**\"]\nmounts_allow=[\"/\"]\noutside_jobs=true\n"), 0o644)

	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"privileged", nil, []string{"--privileged", "alpine:3.20", "true"}, "unknown flag: --privileged"},
		{"user root", nil, []string{"-u", "0", "alpine:3.20", "true"}, "unknown shorthand flag: 'u'"},
		{"cap add", nil, []string{"--cap-add", "SYS_ADMIN", "alpine:3.20", "true"}, "flag --cap-add is not allowed, says flags_allow"},
		{"device", nil, []string{"--device", "/dev/sda", "alpine:3.20", "true"}, "unknown flag: --device"},
		{"host pid", nil, []string{"--pid", "host", "alpine:3.20", "true"}, "unknown flag: --pid"},
		{"group add", nil, []string{"--group-add", "0", "alpine:3.20", "true"}, "unknown flag: --group-add"},
		{"security opt", nil, []string{"--security-opt", "seccomp=unconfined", "alpine:3.20", "true"}, "unknown flag: --security-opt"},
		{"label spoof", nil, []string{"--label", "org.containerjob.uid=0", "alpine:3.20", "true"}, "unknown flag: --label"},
		{"root filesystem", nil, []string{"-v", "/:/host", "alpine:3.20", "true"}, `mount source "/" (the host's root directory) can never be mounted`},
		{"etc", nil, []string{"-v", "/etc:/x", "alpine:3.20", "true"}, "(the host's /etc) can never be mounted"},
		{"docker socket", nil, []string{"-v", "/var/run/docker.sock:/s", "alpine:3.20", "true"}, "Docker socket"},
		{"proc", nil, []string{"-v", "/proc:/p", "alpine:3.20", "true"}, "under /proc"},
		{"dev", nil, []string{"-v", "/dev:/d", "alpine:3.20", "true"}, "under /dev"},
		{"symlink to etc", nil, []string{"-v", filepath.Join(dir, "etclink") + ":/x", "alpine:3.20", "true"}, "(the host's /etc) can never be mounted"},
		{"symlink to root", nil, []string{"-v", "./rootlink:/x", "alpine:3.20", "true"}, "can never be mounted"},
		{"other user's home", nil, []string{"-v", bob.Home + ":/x", "alpine:3.20", "true"}, "permission denied"},
		{"symlink to other user's home", nil, []string{"-v", filepath.Join(dir, "boblink") + ":/x", "alpine:3.20", "true"}, "permission denied"},
		{"path outside mounts_allow", nil, []string{"-v", "/tmp:/t", "alpine:3.20", "true"}, "is not under any path allowed, says mounts_allow in [defaults] (/etc/containerjob/policy.toml:10)"},
		{"dotdot escape", nil, []string{"-v", alice.Home + "/../../etc:/x", "alpine:3.20", "true"}, "can never be mounted"},
		{"named volume", nil, []string{"-v", "myvol:/x", "alpine:3.20", "true"}, "names a volume"},
		{"image denied", nil, []string{"alpine:denied", "true"}, `image "alpine:denied" is denied, says images_deny in [defaults] (/etc/containerjob/policy.toml:8)`},
		{"image alias of denied", nil, []string{"docker.io/library/alpine:denied", "true"}, "is denied, says images_deny"},
		{"image not allowed", nil, []string{"busybox:1", "true"}, `image "busybox:1" is not allowed, says images_allow in [defaults] (/etc/containerjob/policy.toml:7)`},
		{"image id", nil, []string{"sha256:8493fb792559f2965cf3053b3bf4803d5e4443880f4018e583c1c155602eb91d", "true"}, "image ID"},
		{"gpu env", nil, []string{"-e", "NVIDIA_VISIBLE_DEVICES=all", "alpine:3.20", "true"}, "NVIDIA_VISIBLE_DEVICES is set only from the job's GPU allocation"},
		{"host network", nil, []string{"--network", "host", "alpine:3.20", "true"}, `network "host" is not allowed, says networks_allow`},
		{"other container's network", nil, []string{"--network", "container:abc", "alpine:3.20", "true"}, "another container's network namespace"},
		{"pull always", nil, []string{"--pull", "always", "alpine:3.20", "true"}, `pull mode "always" is not allowed, says pull`},
		{"policy flag", nil, []string{"--policy", evil, "alpine:denied", "true"}, "--policy and --as-user are for root only"},
		{"as-user flag", nil, []string{"--as-user", "root", "alpine:3.20", "true"}, "--policy and --as-user are for root only"},
		// sudo resets the environment, and containerjob ignores it under
		// sudo anyway: the real policy still refuses.
		{"policy env", []string{"CONTAINERJOB_POLICY=" + evil}, []string{"alpine:denied", "true"}, "is denied, says images_deny"},
		{"docker host env", []string{"DOCKER_HOST=tcp://127.0.0.1:1"}, []string{"alpine:denied", "true"}, "is denied, says images_deny"},
		{"bad container name", nil, []string{"--name", "../../x", "alpine:3.20", "true"}, "container name"},
		{"relative workdir", nil, []string{"-w", "tmp", "alpine:3.20", "true"}, "working directory"},
		{"bad shm size", nil, []string{"--shm-size", "lots", "alpine:3.20", "true"}, "--shm-size"},
		{"no image", nil, []string{"run"}, "requires at least 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			since := time.Now()
			r := testutil.Run(t, alice, dir, tt.env, append([]string{bin}, tt.args...)...)
			refused(t, alice, since, r, tt.want)
		})
	}
}

// TestUntrustedPolicyFile: a policy that a non-root user could have written
// is not a policy.
func TestUntrustedPolicyFile(t *testing.T) {
	tests := []struct {
		name  string
		setup func() (undo func())
		want  string
	}{
		{"group writable", func() func() {
			os.Chmod(policyPath, 0o664)
			return func() { os.Chmod(policyPath, 0o644) }
		}, "is writable by group or others"},
		{"owned by a user", func() func() {
			os.Chown(policyPath, int(alice.UID), 0)
			return func() { os.Chown(policyPath, 0, 0) }
		}, "is not owned by root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			undo := tt.setup()
			defer undo()
			since := time.Now()
			r := testutil.Run(t, alice, alice.Home, nil, bin, "alpine:3.20", "true")
			refused(t, alice, since, r, tt.want)
		})
	}
}

// TestCwdWithMountSyntax: a directory name carrying docker's -v syntax
// must be mounted as a plain path, not parsed.
func TestCwdWithMountSyntax(t *testing.T) {
	base := userDir(t, alice, "syntax")
	odd := filepath.Join(base, "a:b,ro'c")
	if err := os.Mkdir(odd, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(odd, int(alice.UID), int(alice.GID))
	r := testutil.Run(t, alice, odd, nil, bin, "alpine:3.20", "sh", "-c", "pwd; touch f")
	if r.Code != 0 {
		t.Fatalf("code %d stderr %q", r.Code, r.Stderr)
	}
	if got := r.Stdout; got != odd+"\n" {
		t.Errorf("pwd %q, want %q", got, odd)
	}
	if _, err := os.Stat(filepath.Join(odd, "f")); err != nil {
		t.Errorf("job directory was not mounted read-write at its own path: %v", err)
	}
	noContainers(t, alice)
}
