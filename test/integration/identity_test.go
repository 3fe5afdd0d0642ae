//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestSudoPathSpellings: sudo accepts any spelling of the allowed path.
// Every spelling must still be a sudo hop for the calling user (proven by
// the binary's device and inode), so none of them reaches what only root
// may do: another user's identity, another policy, the scheduler hooks.
func TestSudoPathSpellings(t *testing.T) {
	dir := userDir(t, alice, "spellings")
	// The same binary under another directory, as a link and as a bind
	// mount; sudo matches the command by its file, so both are allowed.
	linkDir := filepath.Join(dir, "l")
	os.MkdirAll(linkDir, 0o755)
	if err := os.Symlink(bin, filepath.Join(linkDir, "containerjob")); err != nil {
		t.Fatal(err)
	}
	bindDir := "/srv/cjtest/bind"
	os.MkdirAll(bindDir, 0o755)
	bindPath := filepath.Join(bindDir, "containerjob")
	os.WriteFile(bindPath, nil, 0o755)
	if err := unix.Mount(bin, bindPath, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount of %s: %v", bin, err)
	}
	t.Cleanup(func() { unix.Unmount(bindPath, unix.MNT_DETACH); os.RemoveAll(bindDir) })

	binDir, base := filepath.Dir(bin), filepath.Base(bin)
	spellings := []struct{ name, cwd, path string }{
		{"canonical", dir, bin},
		{"dot segment", dir, binDir + "/./" + base},
		{"double slash", dir, "/" + binDir + "//" + base},
		{"dot-dot", dir, binDir + "/../" + filepath.Base(binDir) + "/" + base},
		{"relative", binDir, "./" + base},
		{"symlink", dir, filepath.Join(linkDir, "containerjob")},
		{"bind mount", dir, bindPath},
	}
	// Each root-only request, and how its refusal reads.
	rootOnly := []struct {
		name string
		args []string
		want string
	}{
		{"--as-user", []string{"run", "--as-user", bob.Name, "alpine:3.20", "id", "-u"}, "--as-user is for root only"},
		{"--policy", []string{"run", "--policy", "/dev/null", "alpine:3.20", "true"}, "--policy and CONTAINERJOB_POLICY are for root only"},
		{"exec --as-user", []string{"ps", "--as-user", bob.Name}, "--as-user is for root only"},
		{"epilog", []string{"epilog", "--job", "1"}, "epilog is run by the scheduler as root"},
		{"prolog", []string{"prolog", "--job", "1"}, "prolog is run by the scheduler as root"},
		{"gc", []string{"gc"}, "gc is run"},
	}
	for _, sp := range spellings {
		t.Run(sp.name, func(t *testing.T) {
			// The hop is recognised: the container runs as alice.
			// /bin/id: from /usr/bin the job directory is /usr/bin, mounted
			// over the image's.
			r := cjAs(t, sp.cwd, sp.path, "run", "alpine:3.20", "/bin/id", "-u")
			if r.Code != 0 || strings.TrimSpace(r.Stdout) != strconv.Itoa(int(alice.UID)) {
				t.Errorf("sudo %s run: code %d, stdout %q, stderr %q; want alice's uid", sp.path, r.Code, r.Stdout, r.Stderr)
			}
			for _, ro := range rootOnly {
				r := cjAs(t, sp.cwd, sp.path, ro.args...)
				if r.Code != 125 || !strings.Contains(r.Stderr, ro.want) {
					t.Errorf("sudo %s %v: code %d, stdout %q, stderr %q; want exit 125 and %q", sp.path, ro.args, r.Code, r.Stdout, r.Stderr, ro.want)
				}
			}
		})
	}
	noContainers(t, alice)
	noContainers(t, bob)
}

// cjAs runs `sudo -n PATH ARGS...` as alice in cwd: the spelling sudo is
// given is exactly path.
func cjAs(t *testing.T, cwd, path string, args ...string) testutil.Result {
	t.Helper()
	return testutil.Run(t, alice, cwd, nil, append([]string{"/usr/bin/sudo", "-n", path}, args...)...)
}

// TestRootShellWithInheritedSudoUID: a root shell opened with sudo -s keeps
// SUDO_UID and SUDO_COMMAND of the shell. It is neither that user nor root:
// it is refused until the SUDO_* variables are cleared, and then it is
// root and must name the user.
func TestRootShellWithInheritedSudoUID(t *testing.T) {
	cmd := exec.Command(bin, "run", "--as-user", bob.Name, "alpine:3.20", "true")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SUDO_UID=" + strconv.Itoa(int(alice.UID)), "SUDO_GID=" + strconv.Itoa(int(alice.GID)), "SUDO_COMMAND=/bin/bash"}
	cmd.Dir = alice.Home
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 || !strings.Contains(string(out), "not by sudo for this binary") {
		t.Errorf("root shell with inherited SUDO_UID: %v %q", err, out)
	}
	cmd = exec.Command(bin, "run", "alpine:3.20", "true")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "as root, name the job's owner with --as-user") {
		t.Errorf("root without --as-user: %v %q", err, out)
	}
	cmd = exec.Command(bin, "run", "--as-user", alice.Name, "alpine:3.20", "id", "-u")
	cmd.Dir = alice.Home
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(int(alice.UID)) {
		t.Errorf("root with --as-user: %v %q", err, out)
	}
	noContainers(t, alice)
}
