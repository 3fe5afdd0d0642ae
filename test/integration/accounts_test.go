//go:build integration

package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/moby/moby/client"
)

// TestUserKnownInside: the caller has a name inside (id -un, whoami), with
// their groups by name, and the image keeps its own entries; also on a
// read-only root filesystem, and never by changing the image.
func TestUserKnownInside(t *testing.T) {
	for _, extra := range [][]string{nil, {"--read-only"}} {
		args := append(append([]string{"run"}, extra...), "alpine:3.20", "sh", "-c",
			"id -un; whoami; id -Gn; grep -c '^root:x:0:0:' /etc/passwd; grep '^cjalice:' /etc/passwd; ls -ln /etc/passwd")
		r := cj(t, alice, alice.Home, args...)
		if r.Code != 0 {
			t.Fatalf("%v: code %d stderr %q", extra, r.Code, r.Stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		if len(lines) != 6 || lines[0] != "cjalice" || lines[1] != "cjalice" || lines[3] != "1" ||
			!strings.Contains(" "+lines[2]+" ", " cjextra ") || !strings.HasPrefix(lines[4], "cjalice:x:") ||
			!strings.HasSuffix(lines[4], ":"+alice.Home+":/bin/sh") || !strings.HasPrefix(lines[5], "-r--r--r--") && !strings.HasPrefix(lines[5], "-rw-r--r--") {
			t.Errorf("%v: output %q", extra, r.Stdout)
		}
	}
	// The image itself is unchanged.
	out, err := exec.Command("docker", "run", "--rm", "alpine:3.20", "cat", "/etc/passwd").CombinedOutput()
	if err != nil || strings.Contains(string(out), "cjalice") {
		t.Errorf("the image's own /etc/passwd: %q %v", out, err)
	}
	noContainers(t, alice)
}

// TestUserEntriesOff: the admin's switch leaves the image's files alone.
func TestUserEntriesOff(t *testing.T) {
	usePolicy(t, strings.Replace(testPolicy, "stop_grace_seconds = 3\n", "stop_grace_seconds = 3\nuser_entries = \"off\"\n", 1))
	r := cj(t, alice, alice.Home, "alpine:3.20", "sh", "-c", "id -un; grep -c cjalice /etc/passwd")
	if r.Code == 0 || strings.Contains(r.Stdout, "cjalice") {
		t.Errorf("user_entries = off: code %d stdout %q", r.Code, r.Stdout)
	}
	noContainers(t, alice)
}

// TestUserEntriesSymlinkedEtc: an image whose /etc/passwd is a symlink (to
// a path under a mount the caller controls, say) would steer the bind
// mount; no entries are added there, and the launch still runs.
func TestUserEntriesSymlinkedEtc(t *testing.T) {
	const tag = "alpine:symlinked-passwd"
	ctx := context.Background()
	build := exec.Command("sh", "-c", `set -e
c=$(docker create alpine:3.20 sh -c 'rm /etc/passwd && ln -s /tmp/pw /etc/passwd')
docker start -a "$c"
docker commit "$c" `+tag+` >/dev/null
docker rm "$c" >/dev/null`)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v %s", tag, err, out)
	}
	t.Cleanup(func() { docker.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true}) })
	r := cj(t, alice, alice.Home, tag, "sh", "-c", "ls -l /etc/passwd; id -un")
	if r.Code == 0 || !strings.Contains(r.Stdout, "/etc/passwd -> /tmp/pw") {
		t.Errorf("symlinked /etc/passwd: code %d stdout %q stderr %q; want the symlink left alone and no name", r.Code, r.Stdout, r.Stderr)
	}
	noContainers(t, alice)
}
