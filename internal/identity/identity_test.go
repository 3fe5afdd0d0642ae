package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost lays out a binary, a sudo, another program and a procfs with
// one parent process, so every spelling of a sudo hop can be tried
// without root.
type fakeHost struct {
	root, self, sudo, shell string
}

func newFakeHost(t *testing.T) fakeHost {
	t.Helper()
	root := t.TempDir()
	h := fakeHost{
		root:  root,
		self:  filepath.Join(root, "usr/bin/containerjob"),
		sudo:  filepath.Join(root, "usr/bin/sudo"),
		shell: filepath.Join(root, "bin/bash"),
	}
	for _, f := range []string{h.self, h.sudo, h.shell} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink(h.self, filepath.Join(root, "link-to-self")))
	must(t, os.MkdirAll(filepath.Join(root, "home/alice"), 0o755))
	return h
}

// parent makes /proc/PID with exe pointing at target and real uid ruid.
func (h fakeHost) parent(t *testing.T, pid, target, ruid string) {
	t.Helper()
	dir := filepath.Join(h.root, "proc", pid)
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.Symlink(target, filepath.Join(dir, "exe")))
	must(t, os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\tsudo\nUid:\t"+ruid+"\t0\t0\t0\nGid:\t1000\t0\t0\t0\n"), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestEstablish(t *testing.T) {
	h := newFakeHost(t)
	h.parent(t, "500", h.sudo, "1000")  // sudo kept as parent, for uid 1000
	h.parent(t, "501", h.shell, "1000") // a shell as parent
	h.parent(t, "502", h.sudo, "2000")  // sudo, but for another user
	sudoEnv := func(cmd string) []string {
		return []string{"PATH=/usr/bin", "SUDO_UID=1000", "SUDO_GID=1000", "SUDO_USER=alice", "SUDO_COMMAND=" + cmd}
	}
	bin := filepath.Join(h.root, "usr/bin")
	tests := []struct {
		name    string
		euid    int
		env     []string
		cwd     string
		ppid    int
		want    Invocation
		wantUID uint32
		wantErr string
	}{
		{name: "unprivileged", euid: 1000, env: sudoEnv(h.shell), ppid: 501, want: AsUser},
		{name: "root without SUDO_*", euid: 0, env: []string{"PATH=/usr/bin"}, ppid: 501, want: AsRoot},
		{name: "sudo, canonical path", env: sudoEnv(h.self + " run alpine true"), ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo, /./ spelling", env: sudoEnv(bin + "/./containerjob run x"), ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo, // spelling", env: sudoEnv("/" + bin + "//containerjob"), ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo, relative spelling", env: sudoEnv("./containerjob run x"), cwd: bin, ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo, .. spelling", env: sudoEnv("../../usr/bin/containerjob"), cwd: filepath.Join(h.root, "home/alice"), ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo, symlinked spelling", env: sudoEnv(filepath.Join(h.root, "link-to-self")), ppid: 501, want: ViaSudo, wantUID: 1000},
		{name: "sudo as parent, SUDO_COMMAND unresolvable", env: sudoEnv("containerjob"), cwd: "/nonexistent", ppid: 500, want: ViaSudo, wantUID: 1000},
		{name: "root ran sudo containerjob", env: []string{"SUDO_UID=0", "SUDO_COMMAND=" + h.self}, ppid: 501, want: AsRoot},
		{name: "root shell from sudo -s", env: sudoEnv(h.shell), ppid: 501, wantErr: "not by sudo for this binary"},
		{name: "another program's SUDO_COMMAND", env: sudoEnv(h.sudo), ppid: 501, wantErr: "not by sudo for this binary"},
		{name: "sudo parent for another uid", env: sudoEnv(h.shell), ppid: 502, wantErr: "not by sudo for this binary"},
		{name: "only SUDO_USER left", env: []string{"SUDO_USER=alice"}, ppid: 501, wantErr: "is not a uid"},
		{name: "SUDO_UID garbage", env: []string{"SUDO_UID=0x10", "SUDO_COMMAND=" + h.self}, ppid: 501, wantErr: "is not a uid"},
		{name: "empty SUDO_COMMAND, init as parent", env: []string{"SUDO_UID=1000", "SUDO_COMMAND="}, ppid: 1, wantErr: "not by sudo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Probe{EUID: tt.euid, Env: tt.env, Cwd: tt.cwd, SelfExe: h.self, SudoPath: h.sudo, Proc: filepath.Join(h.root, "proc"), PPID: tt.ppid}
			got, uid, err := Establish(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Establish(env %q, cwd %q) = %v, %d, %v; want error containing %q", tt.env, tt.cwd, got, uid, err, tt.wantErr)
				}
				if got == AsRoot && err == nil {
					t.Fatalf("refused probe still reported root")
				}
				return
			}
			if err != nil || got != tt.want || uid != tt.wantUID {
				t.Fatalf("Establish(env %q, cwd %q) = %v, %d, %v; want %v, %d", tt.env, tt.cwd, got, uid, err, tt.want, tt.wantUID)
			}
		})
	}
}

func TestSameFile(t *testing.T) {
	h := newFakeHost(t)
	if !SameFile(h.self, filepath.Join(h.root, "link-to-self")) {
		t.Error("a symlink to the file is not the same file")
	}
	copyPath := filepath.Join(h.root, "copy")
	must(t, os.WriteFile(copyPath, []byte(h.self), 0o755))
	if SameFile(h.self, copyPath) {
		t.Error("a copy with the same content was taken for the same file")
	}
	if SameFile(h.self, filepath.Join(h.root, "missing")) {
		t.Error("a missing file was taken for the same file")
	}
}
