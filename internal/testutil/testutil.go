// Package testutil holds helpers for the integration and end-to-end tests
// that talk to the real engine, real sudo and real Slurm.
package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
)

// InCI reports whether a missing component must fail rather than skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test on a developer machine and fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("required component unavailable in CI: %s", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// RequireRoot: the suites install policies, create users and call sudo.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// RequireDocker returns a client for the local engine.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost("unix:///var/run/docker.sock"))
	if err != nil {
		Unavailable(t, "docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		Unavailable(t, "docker engine not reachable: %v", err)
	}
	return c
}

// User is a real, non-root account made for the tests.
type User struct {
	Name     string
	UID, GID uint32
	Home     string
}

// EnsureUser creates name (with a 0700 home) unless it exists.
func EnsureUser(name string, extraGroups ...string) (User, error) {
	for _, g := range extraGroups {
		if _, err := user.LookupGroup(g); err != nil {
			if out, err := exec.Command("groupadd", g).CombinedOutput(); err != nil {
				return User{}, fmt.Errorf("groupadd %s: %v: %s", g, err, out)
			}
		}
	}
	if _, err := user.Lookup(name); err != nil {
		args := []string{"-m", "-s", "/bin/sh"}
		if len(extraGroups) > 0 {
			args = append(args, "-G", strings.Join(extraGroups, ","))
		}
		if out, err := exec.Command("useradd", append(args, name)...).CombinedOutput(); err != nil {
			return User{}, fmt.Errorf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return User{}, err
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	if err := os.Chmod(u.HomeDir, 0o700); err != nil {
		return User{}, err
	}
	return User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}, nil
}

// Result of a command run as a test user.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Command prepares argv to run as u (real and effective ids, groups from the
// user database) in dir, with a plain user environment plus env.
func Command(u User, dir string, env []string, argv ...string) *exec.Cmd {
	args := append([]string{"--reuid=" + strconv.Itoa(int(u.UID)), "--regid=" + strconv.Itoa(int(u.GID)), "--init-groups", "--"}, argv...)
	cmd := exec.Command("setpriv", args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + u.Home, "USER=" + u.Name, "LANG=C"}, env...)
	return cmd
}

// Run runs argv as u and waits.
func Run(t testing.TB, u User, dir string, env []string, argv ...string) Result {
	t.Helper()
	cmd := Command(u, dir, env, argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v as %s: %v", argv, u.Name, err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// ContainerEvents returns the create events of containers labelled with uid
// between since and now, from the engine's own event log: proof that a
// refused request created nothing, even briefly.
func ContainerEvents(t testing.TB, c *client.Client, uid uint32, since time.Time, action string) []events.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := client.Filters{}
	f.Add("type", "container")
	f.Add("event", action)
	f.Add("label", "org.containerjob.uid="+strconv.Itoa(int(uid)))
	res := c.Events(ctx, client.EventsListOptions{
		Since:   unixNano(since),
		Until:   unixNano(time.Now()),
		Filters: f,
	})
	var out []events.Message
	for {
		select {
		case m := <-res.Messages:
			out = append(out, m)
		case err := <-res.Err:
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("reading engine events: %v", err)
			}
			return out
		}
	}
}

// Containers lists every container (any state) labelled with uid.
func Containers(t testing.TB, c *client.Client, label string) []string {
	t.Helper()
	f := client.Filters{}
	f.Add("label", label)
	res, err := c.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatalf("listing containers: %v", err)
	}
	var ids []string
	for _, s := range res.Items {
		ids = append(ids, s.ID)
	}
	return ids
}

// RemoveContainers force-removes every container with label.
func RemoveContainers(c *client.Client, label string) {
	f := client.Filters{}
	f.Add("label", label)
	res, err := c.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, s := range res.Items {
		c.ContainerRemove(context.Background(), s.ID, client.ContainerRemoveOptions{Force: true})
	}
}

// InstallFile writes data to path as root with mode, returning a restore
// function that puts back what was there.
func InstallFile(path string, data []byte, mode os.FileMode) (restore func(), err error) {
	old, oldErr := os.ReadFile(path)
	oldInfo, _ := os.Stat(path)
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return nil, err
	}
	tmp := path + ".cjtest"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	return func() {
		if oldErr != nil {
			os.Remove(path)
			return
		}
		os.WriteFile(tmp, old, oldInfo.Mode().Perm())
		os.Chmod(tmp, oldInfo.Mode().Perm())
		os.Rename(tmp, path)
	}, nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

// unixNano formats t as the engine's "seconds.nanoseconds" timestamp; an
// "until" in the future would make the engine hold the stream open.
func unixNano(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}
