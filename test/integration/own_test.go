//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
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
	r = cj(t, bob, bob.Home, "kill", "--signal", "SIGTERM", "shared")
	if r.Code != 0 {
		t.Errorf("bob kill own: code %d stderr %q", r.Code, r.Stderr)
	}
	r = cj(t, bob, bob.Home, "ps", "--as-user", alice.Name)
	if r.Code != 125 || !strings.Contains(r.Stderr, "--as-user is for root only") {
		t.Errorf("bob ps --as-user alice: code %d stderr %q", r.Code, r.Stderr)
	}
}
