//go:build integration

package integration

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
)

// The integration policy's [defaults] is its last table, so keys appended
// here extend it without moving the lines other tests cite.
const portsAndDefaultsPolicy = `mounts_default = ["/srv/cjtest/default/$USER:ro"]
ports_allow = ["18000-18099"]

[user.cjalice]
flags_allow = ["publish"]
`

func TestPublishedPorts(t *testing.T) {
	usePolicy(t, testPolicy+portsAndDefaultsPolicy)

	// A published port reaches the container from the node's loopback.
	cmd := testutil.Command(alice, alice.Home, nil, bin, "--network", "bridge", "-p", "18080:8080", "alpine:3.20",
		"sh", "-c", "echo ready; echo hello-from-container | nc -l -p 8080")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("container said %q", line)
	}
	if got := firstLine("127.0.0.1:18080"); got != "hello-from-container\n" {
		t.Errorf("127.0.0.1:18080 answered %q", got)
	}
	cmd.Wait()
	noContainers(t, alice)

	tests := []struct {
		name string
		user testutil.User
		args []string
		want string
	}{
		{"every interface needs the admin's rule", alice, []string{"-p", "0.0.0.0:18080:8080"}, "publishing host port 0.0.0.0:18080:8080/tcp is not allowed, says ports_allow in [defaults]"},
		{"port outside the range", alice, []string{"-p", "2222:22"}, "publishing host port 127.0.0.1:2222:22/tcp is not allowed, says ports_allow"},
		{"flag not allowed for others", bob, []string{"-p", "18080:8080"}, "flag --publish is not allowed, says flags_allow"},
		{"no network to publish on", alice, []string{"--network", "none", "-p", "18080:8080"}, "has nothing to forward"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			since := time.Now()
			args := append(append([]string{bin}, tt.args...), "alpine:3.20", "true")
			r := testutil.Run(t, tt.user, tt.user.Home, nil, args...)
			refused(t, tt.user, since, r, tt.want)
		})
	}
}

func TestDefaultMounts(t *testing.T) {
	usePolicy(t, testPolicy+portsAndDefaultsPolicy)
	// Like /scratch: world-writable and sticky, so each user owns (and
	// could replace) the entry under their name.
	base := "/srv/cjtest/default"
	os.RemoveAll(base)
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o1777)
	defer os.RemoveAll(base)
	mine := filepath.Join(base, alice.Name)
	os.Mkdir(mine, 0o700)
	os.WriteFile(filepath.Join(mine, "f"), []byte("default-data\n"), 0o600)
	os.Chown(filepath.Join(mine, "f"), int(alice.UID), int(alice.GID))
	os.Chown(mine, int(alice.UID), int(alice.GID))

	read := "cat " + mine + "/f 2>&1; touch " + mine + "/w 2>&1 || echo read-only"
	r := testutil.Run(t, alice, alice.Home, nil, bin, "alpine:3.20", "sh", "-c", read)
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "default-data\n") || !strings.Contains(r.Stdout, "read-only") {
		t.Errorf("default mount: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, optOut := range []string{mine, "all"} {
		r = testutil.Run(t, alice, alice.Home, nil, bin, "--no-default-mount", optOut, "alpine:3.20", "sh", "-c", "test -e "+mine+" && echo present || echo absent")
		if r.Code != 0 || r.Stdout != "absent\n" {
			t.Errorf("--no-default-mount %s: code %d stdout %q stderr %q", optOut, r.Code, r.Stdout, r.Stderr)
		}
	}
	// bob has no directory there: the default is left out, not created.
	r = testutil.Run(t, bob, bob.Home, nil, bin, "alpine:3.20", "true")
	if _, err := os.Lstat(filepath.Join(base, bob.Name)); r.Code != 0 || err == nil {
		t.Errorf("absent default: code %d stderr %q; %s exists afterwards: %v", r.Code, r.Stderr, filepath.Join(base, bob.Name), err == nil)
	}
	// bob points his entry at /etc: refused, nothing created.
	if err := os.Symlink("/etc", filepath.Join(base, bob.Name)); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(base, bob.Name), int(bob.UID), int(bob.GID))
	since := time.Now()
	r = testutil.Run(t, bob, bob.Home, nil, bin, "alpine:3.20", "true")
	refused(t, bob, since, r, `default mount "/srv/cjtest/default/cjbob" resolves to "/etc"`)
	noContainers(t, alice)
}

// TestUsersIsolatedOnTheBridge: on --network bridge, a container of alice
// cannot reach a port that bob's container listens on without publishing
// it; the node itself can (the listener was there all along).
func TestUsersIsolatedOnTheBridge(t *testing.T) {
	cmd := testutil.Command(bob, bob.Home, nil, bin, "--network", "bridge", "alpine:3.20",
		"sh", "-c", "echo ready; echo secret-of-bob | nc -l -p 8080")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait(); noContainers(t, bob) }()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("bob's container said %q", line)
	}
	ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(bob.UID)))
	if len(ids) != 1 {
		t.Fatalf("bob's containers: %v", ids)
	}
	c, err := docker.ContainerInspect(context.Background(), ids[0], client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mode := c.Container.HostConfig.NetworkMode; mode != "containerjob-isolated" {
		t.Errorf("--network bridge joined %q, want containerjob's isolated bridge", mode)
	}
	ep := c.Container.NetworkSettings.Networks["containerjob-isolated"]
	if ep == nil || !ep.IPAddress.IsValid() {
		t.Fatalf("bob's container has no address on the isolated bridge: %+v", c.Container.NetworkSettings.Networks)
	}
	addr := ep.IPAddress.String()
	r := cj(t, alice, alice.Home, "--network", "bridge", "alpine:3.20", "sh", "-c", "nc -w 3 "+addr+" 8080 </dev/null; echo done")
	if strings.Contains(r.Stdout, "secret-of-bob") || !strings.Contains(r.Stdout, "done") {
		t.Errorf("alice's container reached bob's unpublished port: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
	// The control: from the node, the listener answers.
	if got := firstLine(net.JoinHostPort(addr, "8080")); got != "secret-of-bob\n" {
		t.Errorf("the node could not reach bob's listener at %s:8080 (got %q): the isolation test proves nothing", addr, got)
	}
	noContainers(t, alice)
}

// firstLine connects to a TCP listener the container is bringing up and
// returns the first line it sends, trying for up to 50 connections (the
// listener starts after the container says it is ready); "" when none
// answered.
func firstLine(addr string) string {
	for i := 0; i < 50; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			got, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if got != "" {
				return got
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}
