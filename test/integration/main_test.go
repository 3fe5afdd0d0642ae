//go:build integration

// Package integration drives the installed containerjob binary as real,
// non-root users through real sudo against the real Docker engine.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
)

const policyPath = "/etc/containerjob/policy.toml"

// testPolicy is installed as the site policy for the whole suite; the line
// numbers of its rules are asserted in refusal messages (a new setting
// takes a line without moving them).
const testPolicy = `# containerjob integration test policy
[settings]
audit_log = "/var/log/containerjob/audit.log"
stop_grace_seconds = 3
metrics_dir = "/run/containerjob-test-metrics"
[defaults]
images_allow = ["alpine:*"]
images_deny = ["alpine:denied"]
pull = ["never", "missing"]
mounts_allow = ["$HOME", "/srv/cjtest/shared:ro"]
flags_allow = ["env", "volume", "workdir", "entrypoint", "tty", "interactive", "name", "read-only", "shm-size", "network", "pull"]
networks_allow = ["none", "bridge"]
outside_jobs = true
pids_limit = 256
env_force = ["CJ_SITE=cluster1"]
ulimits = ["nofile=1024:2048"]
max_containers_per_user = 4
`

var (
	bin          string
	docker       *client.Client
	alice, bob   testutil.User
	extraGroupID uint32
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	t := &setupT{}
	bin = os.Getenv("CONTAINERJOB_BIN")
	if bin == "" {
		bin = "/usr/bin/containerjob"
	}
	if os.Geteuid() != 0 || !fileExists(bin) || !fileExists("/etc/sudoers.d/containerjob") {
		if testutil.InCI() {
			fmt.Fprintf(os.Stderr, "integration: needs root, %s and /etc/sudoers.d/containerjob (run make install)\n", bin)
			return 1
		}
		fmt.Fprintln(os.Stderr, "integration: skipping: needs root and an installed containerjob")
		return 0
	}
	docker = testutil.RequireDocker(t)
	if t.failed {
		return 1
	}
	var err error
	if alice, err = testutil.EnsureUser("cjalice", "cjextra"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if bob, err = testutil.EnsureUser("cjbob"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, err := exec.Command("getent", "group", "cjextra").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "getent cjextra:", err)
		return 1
	}
	gid, _ := strconv.ParseUint(strings.Split(strings.TrimSpace(string(out)), ":")[2], 10, 32)
	extraGroupID = uint32(gid)
	os.MkdirAll("/srv/cjtest/shared", 0o755)
	os.WriteFile("/srv/cjtest/shared/readme", []byte("shared data\n"), 0o644)

	restore, err := testutil.InstallFile(policyPath, []byte(testPolicy), 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "installing test policy:", err)
		return 1
	}
	defer restore()

	code := m.Run()

	// Every container a test made must be gone: the suite fails otherwise.
	for _, u := range []testutil.User{alice, bob} {
		label := "org.containerjob.uid=" + strconv.Itoa(int(u.UID))
		if ids := listContainers(label); len(ids) > 0 {
			fmt.Fprintf(os.Stderr, "integration: containers of %s left behind: %v\n", u.Name, ids)
			testutil.RemoveContainers(docker, label)
			code = 1
		}
	}
	return code
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// setupT lets TestMain use helpers written for tests.
type setupT struct {
	testing.TB
	failed bool
}

func (s *setupT) Helper() {}
func (s *setupT) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, f+"\n", a...)
	s.failed = true
	panic(fmt.Sprintf(f, a...))
}
func (s *setupT) Skipf(f string, a ...any) { fmt.Fprintf(os.Stderr, "skip: "+f+"\n", a...); os.Exit(0) }

func listContainers(label string) []string {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+label).Output()
	return strings.Fields(string(out))
}

// usePolicy installs text as the site policy for the rest of the test; the
// suite's policy is put back when it ends.
func usePolicy(t *testing.T, text string) {
	t.Helper()
	restore, err := testutil.InstallFile(policyPath, []byte(text), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
}

// cj runs containerjob as u in dir.
func cj(t *testing.T, u testutil.User, dir string, args ...string) testutil.Result {
	t.Helper()
	return testutil.Run(t, u, dir, nil, append([]string{bin}, args...)...)
}

// noContainers asserts that u has no container at all right now.
func noContainers(t *testing.T, u testutil.User) {
	t.Helper()
	if ids := testutil.Containers(t, docker, "org.containerjob.uid="+strconv.Itoa(int(u.UID))); len(ids) > 0 {
		t.Errorf("containers of %s left behind: %v", u.Name, ids)
		testutil.RemoveContainers(docker, "org.containerjob.uid="+strconv.Itoa(int(u.UID)))
	}
}

// userDir makes a fresh directory owned by u under u's home.
func userDir(t *testing.T, u testutil.User, name string) string {
	t.Helper()
	dir := filepath.Join(u.Home, name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(u.UID), int(u.GID)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// refused asserts the containerjob contract for a refusal: exit 125, exactly
// one error line naming what was refused, and no container created.
func refused(t *testing.T, u testutil.User, since time.Time, r testutil.Result, want string) {
	t.Helper()
	if r.Code != 125 {
		t.Errorf("exit code %d, want 125 (stdout %q, stderr %q)", r.Code, r.Stdout, r.Stderr)
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stderr), "\n") {
		if strings.HasPrefix(l, "containerjob: error: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], want) {
		t.Errorf("stderr %q: want exactly one error line containing %q", r.Stderr, want)
	}
	if ev := testutil.ContainerEvents(t, docker, u.UID, since, "create"); len(ev) > 0 {
		t.Errorf("a refused request created %d container(s)", len(ev))
	}
	noContainers(t, u)
}
