//go:build integration

package integration

import (
	"github.com/containerjob/containerjob/internal/testutil"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPackage checks the installed .deb (CONTAINERJOB_DEB, the package
// `make check` installed by following the admin guide): ownership and modes
// of what it installed, and that reinstalling it, as an upgrade does, keeps
// an edited policy and an edited sudoers drop-in.
func TestPackage(t *testing.T) {
	deb := os.Getenv("CONTAINERJOB_DEB")
	if deb == "" {
		testutil.Unavailable(t, "CONTAINERJOB_DEB not set (make check sets it to the .deb it installed)")
		return
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "containerjob").CombinedOutput(); err != nil || string(out) != "install ok installed" {
		t.Fatalf("containerjob is not installed as a package: %v %s", err, out)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{"/usr/bin/containerjob", 0o755},
		{"/usr/lib/containerjob/spank_containerjob.so", 0o755},
		{"/usr/libexec/containerjob/slurm-epilog", 0o755},
		{"/usr/libexec/containerjob/containerjob-init", 0o755},
		{"/etc/sudoers.d/containerjob", 0o440},
		{"/etc/containerjob", 0o755 | os.ModeDir},
		{"/var/log/containerjob", 0o700 | os.ModeDir},
		{"/usr/share/man/man5/containerjob-policy.5", 0o644},
		{"/usr/share/containerjob/pbs/torque/epilogue", 0o755},
		{"/usr/lib/systemd/system/containerjob-gc.timer", 0o644},
		{"/usr/lib/systemd/system/containerjob-gc.service", 0o644},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&(os.ModeDir|os.ModePerm) != f.mode || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %v uid %d gid %d, want %v root:root", f.path, fi.Mode(), st.Uid, st.Gid, f.mode)
		}
	}

	// Edit both files an admin edits, then reinstall.
	const marker = "\n# edited by the admin\n"
	policy, _ := os.ReadFile(policyPath)
	sudoers, _ := os.ReadFile("/etc/sudoers.d/containerjob")
	if err := os.WriteFile(policyPath, append(append([]byte{}, policy...), marker...), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(policyPath, policy, 0o644)
	if err := os.WriteFile("/etc/sudoers.d/containerjob", append(append([]byte{}, sudoers...), marker...), 0o440); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/etc/sudoers.d/containerjob", sudoers, 0o440)
	abs, _ := filepath.Abs(deb)
	cmd := exec.Command("dpkg", "-i", abs)
	cmd.Stdin = nil // a conffile prompt would fail here instead of hanging
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reinstalling %s: %v\n%s", deb, err, out)
	}
	for _, p := range []string{policyPath, "/etc/sudoers.d/containerjob"} {
		data, _ := os.ReadFile(p)
		if !strings.HasSuffix(string(data), marker) {
			t.Errorf("%s lost the admin's edit on reinstall", p)
		}
	}
	if fi, err := os.Stat(policyPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("policy after reinstall: %v %v", fi.Mode(), err)
	}
	// And the reinstalled package still works for a user.
	if r := cj(t, alice, alice.Home, "alpine:3.20", "true"); r.Code != 0 {
		t.Errorf("run after reinstall: code %d stderr %q", r.Code, r.Stderr)
	}
}

// TestRPM checks the .rpm's metadata (no RPM system to install it on here):
// modes, owners, and the sudoers drop-in as %config(noreplace).
func TestRPM(t *testing.T) {
	pkg := os.Getenv("CONTAINERJOB_RPM")
	if pkg == "" {
		testutil.Unavailable(t, "CONTAINERJOB_RPM not set (make check sets it to the .rpm it built)")
		return
	}
	out, err := exec.Command("rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qp: %v\n%s", err, out)
	}
	for _, want := range []string{
		"-rwxr-xr-x root:root  /usr/bin/containerjob\n",
		"-r--r----- root:root cn /etc/sudoers.d/containerjob\n",
		"-rwxr-xr-x root:root  /usr/lib/containerjob/spank_containerjob.so\n",
		"-rwxr-xr-x root:root  /usr/libexec/containerjob/containerjob-init\n",
		"-rw-r--r-- root:root  /usr/share/containerjob/policy.toml.example\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rpm lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), " /etc/containerjob/policy.toml\n") {
		t.Errorf("the policy is a package file; an upgrade could replace it")
	}
	scripts, _ := exec.Command("rpm", "-qp", "--scripts", pkg).CombinedOutput()
	if !strings.Contains(string(scripts), "postinstall scriptlet") || !strings.Contains(string(scripts), `if [ ! -e "$policy" ]`) {
		t.Errorf("rpm scriptlets:\n%s", scripts)
	}
}
