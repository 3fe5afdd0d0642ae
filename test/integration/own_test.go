//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestOwnContainersOnly: ps, inspect, stop, kill and rm act on the caller's
// containers only, however the other user's container is named.
func TestOwnContainersOnly(t *testing.T) {
	start := func(u testutil.User, name string) (func(), string) {
		cmd := testutil.Command(u, u.Home, nil, bin, "--name", name, "alpine:3.20", "sh", "-c", "echo ready; sleep 60")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() {
			t.Fatalf("%s's container did not start", u.Name)
		}
		ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(u.UID)))
		if len(ids) != 1 {
			t.Fatalf("%s has containers %v", u.Name, ids)
		}
		return func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }, ids[0]
	}
	stopAlice, aliceID := start(alice, "shared")
	defer stopAlice()
	stopBob, bobID := start(bob, "shared")
	defer stopBob()

	r := cj(t, bob, bob.Home, "ps")
	if r.Code != 0 || !strings.Contains(r.Stdout, bobID[:12]) || strings.Contains(r.Stdout, aliceID[:12]) {
		t.Errorf("bob's ps: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, args := range [][]string{
		{"inspect", aliceID[:12]}, {"stop", aliceID[:12]}, {"kill", aliceID}, {"rm", aliceID[:8]},
		{"exec", aliceID[:12], "id"}, {"logs", aliceID[:12]}, {"attach", aliceID[:12]},
	} {
		r := cj(t, bob, bob.Home, args...)
		if r.Code != 125 || !strings.Contains(r.Stderr, "no container of yours matches") {
			t.Errorf("bob %v on alice's container: code %d stderr %q", args, r.Code, r.Stderr)
		}
	}
	if ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(alice.UID))); len(ids) != 1 {
		t.Fatalf("alice's container was touched: %v", ids)
	}
	// Both named "shared": the name resolves to bob's own.
	r = cj(t, bob, bob.Home, "inspect", "shared")
	var info struct {
		ID   string `json:"id"`
		User string `json:"user"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &info); err != nil || info.ID != bobID || info.User != strconv.Itoa(int(bob.UID))+":"+strconv.Itoa(int(bob.GID)) {
		t.Errorf("bob inspect shared: %v %+v %q", err, info, r.Stderr)
	}
	// exec runs as the caller in the caller's own container, exit status kept.
	r = cj(t, bob, bob.Home, "exec", "shared", "sh", "-c", "id -u; exit 5")
	if r.Code != 5 || strings.TrimSpace(r.Stdout) != strconv.Itoa(int(bob.UID)) {
		t.Errorf("bob exec own: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = cj(t, bob, bob.Home, "logs", "shared")
	if r.Code != 125 || !strings.Contains(r.Stderr, "container_logs = none") {
		t.Errorf("logs with container_logs none: code %d stderr %q", r.Code, r.Stderr)
	}
	r = cj(t, bob, bob.Home, "kill", "--signal", "SIGTERM", "shared")
	if r.Code != 0 {
		t.Errorf("bob kill own: code %d stderr %q", r.Code, r.Stderr)
	}
	r = cj(t, bob, bob.Home, "ps", "--as-user", alice.Name)
	if r.Code != 125 || !strings.Contains(r.Stderr, "--as-user is for root only") {
		t.Errorf("bob ps --as-user alice: code %d stderr %q", r.Code, r.Stderr)
	}
}

// TestImagesListsOnlyAllowed: images shows what the caller may run.
func TestImagesListsOnlyAllowed(t *testing.T) {
	for _, tag := range []string{"alpine:denied", "busybox:cjtest"} {
		if out, err := exec.Command("docker", "tag", "alpine:3.20", tag).CombinedOutput(); err != nil {
			t.Fatalf("docker tag: %v %s", err, out)
		}
		defer exec.Command("docker", "rmi", tag).Run()
	}
	r := cj(t, alice, alice.Home, "images")
	if r.Code != 0 || !strings.Contains(r.Stdout, "alpine:3.20") || strings.Contains(r.Stdout, "alpine:denied") || strings.Contains(r.Stdout, "busybox:cjtest") {
		t.Errorf("images: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}
