//go:build e2e

// Package e2e submits real Slurm jobs, as real non-root users, on the local
// single-node cluster (contrib/slurm/testcluster) with the containerjob
// SPANK plugin and prolog/epilog, against the real Docker engine.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
)

const (
	clusterDir = "/run/containerjob-testcluster"
	policyPath = "/etc/containerjob/policy.toml"
)

var slurmConf = clusterDir + "/slurm.conf"

// The site policy for the suite; line numbers are asserted in refusals.
var testPolicy = `# containerjob e2e policy
[settings]
stop_grace_seconds = 3
gpus_mode = "devices"
confine = "limits"
report_usage = true
slurm_conf = "` + slurmConf + `"
slurmd_spool_dir = "` + clusterDir + `/spool/%n"
slurm_tmpfs = "` + clusterDir + `/tmp/%n"
# The test cluster's fake RDMA devices (TestFabricDevices).
fabric_devices = ["/dev/infiniband/uverbs0", "/dev/infiniband/rdma_cm"]

[defaults]
images_allow = ["alpine:*"]
images_deny = ["alpine:denied"]
pull = ["never", "missing"]
mounts_allow = ["$HOME", "/srv/cje2e:ro"]
flags_allow = ["env", "volume", "workdir", "entrypoint", "name", "read-only"]
networks_allow = ["none"]
outside_jobs = false

# MPI steps (multinode_test.go): bob's run the MPI image on the host network.
[user.cjbob]
images_allow = ["mpi-test:*"]
networks_allow = ["host"]
# RDMA wants memlock=-1; raising a hard limit needs CAP_SYS_RESOURCE,
# which this CI's sandbox withholds from the engine: a lowered limit
# proves the policy's ulimits reach every rank.
ulimits = ["memlock=65536"]
`

var (
	docker     *client.Client
	alice, bob testutil.User
	bin        = "/usr/bin/containerjob"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", a...)
		if testutil.InCI() {
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipping (not in CI)")
		return 0
	}
	if os.Geteuid() != 0 {
		return fail("needs root")
	}
	if _, err := os.Stat(slurmConf); err != nil {
		return fail("no test cluster at %s: run contrib/slurm/testcluster up", clusterDir)
	}
	if b := os.Getenv("CONTAINERJOB_BIN"); b != "" {
		bin = b
	}
	os.Setenv("SLURM_CONF", slurmConf)
	if out, err := exec.Command("sinfo", "-h", "-o", "%T").Output(); err != nil || !regexp.MustCompile(`idle|mixed|alloc`).Match(out) {
		return fail("the test cluster does not answer (sinfo: %v %q)", err, out)
	}
	var err error
	c, err := client.New(client.WithHost("unix:///var/run/docker.sock"))
	if err != nil {
		return fail("docker: %v", err)
	}
	docker = c
	if alice, err = testutil.EnsureUser("cjalice", "cjextra"); err != nil {
		return fail("%v", err)
	}
	if bob, err = testutil.EnsureUser("cjbob"); err != nil {
		return fail("%v", err)
	}
	restore, err := testutil.InstallFile(policyPath, []byte(testPolicy), 0o644)
	if err != nil {
		return fail("installing the test policy: %v", err)
	}
	defer restore()
	code := m.Run()
	for _, u := range []testutil.User{alice, bob} {
		label := "org.containerjob.uid=" + strconv.Itoa(int(u.UID))
		if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+label).Output(); len(strings.TrimSpace(string(out))) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: containers of %s left behind: %s\n", u.Name, out)
			testutil.RemoveContainers(docker, label)
			code = 1
		}
	}
	return code
}

// as runs a shell command line as u in dir, with the cluster's SLURM_CONF.
func as(t *testing.T, u testutil.User, dir, script string, env ...string) testutil.Result {
	t.Helper()
	return testutil.Run(t, u, dir, append([]string{"SLURM_CONF=" + slurmConf}, env...), "sh", "-c", script)
}

// usePolicy installs text as the node's policy until the test ends (its
// cleanups put the suite's back, after the test's own defers).
func usePolicy(t *testing.T, text string) {
	t.Helper()
	restore, err := testutil.InstallFile(policyPath, []byte(text), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restore)
}

// jobDir is a fresh directory owned by u, the job's working directory.
func jobDir(t *testing.T, u testutil.User) string {
	t.Helper()
	dir := filepath.Join(u.Home, "e2e-"+regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, int(u.UID), int(u.GID))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sbatch writes script into dir and submits it as u; returns the job id.
func sbatch(t *testing.T, u testutil.User, dir, script string, args ...string) string {
	t.Helper()
	path := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(path, int(u.UID), int(u.GID))
	cmd := "sbatch --parsable " + strings.Join(args, " ") + " job.sh"
	r := as(t, u, dir, cmd)
	id := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || !regexp.MustCompile(`^\d+$`).MatchString(id) {
		t.Fatalf("%s: code %d stdout %q stderr %q", cmd, r.Code, r.Stdout, r.Stderr)
	}
	return id
}

// jobState returns scontrol's JobState and ExitCode of id.
func jobState(t *testing.T, id string) (state, exit string) {
	t.Helper()
	out, err := exec.Command("scontrol", "show", "job", "--oneliner", id).Output()
	if err != nil {
		t.Fatalf("scontrol show job %s: %v", id, err)
	}
	m := regexp.MustCompile(`JobState=(\S+)`).FindSubmatch(out)
	e := regexp.MustCompile(`ExitCode=(\S+)`).FindSubmatch(out)
	if m == nil || e == nil {
		t.Fatalf("scontrol output for %s: %q", id, out)
	}
	return string(m[1]), string(e[1])
}

// waitJob waits until the job leaves PENDING/RUNNING/COMPLETING.
func waitJob(t *testing.T, id string, timeout time.Duration) (state, exit string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		state, exit = jobState(t, id)
		switch state {
		case "PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED":
		default:
			return state, exit
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s after %v", id, state, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func jobContainers(t *testing.T, id string) []string {
	t.Helper()
	return testutil.Containers(t, docker, "org.containerjob.job="+id)
}

func readOutput(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("job output: %v", err)
	}
	return string(data)
}
