//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The test cluster's partition "all" holds its two nodes (contrib/slurm/
// testcluster): the host's own and HOST-2, each with its own slurmd, all
// on one engine. MPI runs with Slurm's mpi/pmix and the mpi-test image
// (contrib/testimage/build-mpi): /hello prints, per rank, "rank R of N on
// HOST: sum S" after an MPI_Allreduce of the ranks.

// rankLine is what /hello prints, followed by the container the rank ran
// in and the PMIx data store it was told to use, which the test's command
// appends.
var rankLine = regexp.MustCompile(`(?m)^rank (\d+) of (\d+) on (\S+): sum (\d+) container ([0-9a-f]{12}) gds=(\S*)$`)

// mpiHello runs /hello and then names the container the rank ran in (the
// 64-hex id in its cgroup path) and its PMIX_MCA_gds.
const mpiHello = `sh -c '/hello | tr -d "\n"; echo " container $(grep -o "[0-9a-f]\{64\}" /proc/self/cgroup | head -1 | cut -c1-12) gds=$PMIX_MCA_gds"'`

// checkRanks asserts n ranks on both nodes, each with the sum of all ranks,
// and one container per node: the node's ranks share it.
func checkRanks(t *testing.T, out string, n int) {
	t.Helper()
	ms := rankLine.FindAllStringSubmatch(out, -1)
	if len(ms) != n {
		t.Fatalf("%d rank lines, want %d:\n%s", len(ms), n, out)
	}
	want := fmt.Sprint(n * (n - 1) / 2)
	nodeOf := map[string]string{} // container -> node
	var nodes []string
	for _, m := range ms {
		if m[2] != fmt.Sprint(n) || m[4] != want {
			t.Errorf("rank %s: world %s, sum %s; want %d and %s", m[1], m[2], m[4], n, want)
		}
		// The ranks read the job's data from the server by messages
		// (policy's pmixStore): the shared-memory store crashed ranks.
		if m[6] != "hash" {
			t.Errorf("rank %s: PMIX_MCA_gds=%q, want hash", m[1], m[6])
		}
		if prev, ok := nodeOf[m[5]]; ok && prev != m[3] {
			t.Errorf("container %s on two nodes (%s, %s)", m[5], prev, m[3])
		}
		nodeOf[m[5]] = m[3]
		if !slices.Contains(nodes, m[3]) {
			nodes = append(nodes, m[3])
		}
	}
	if len(nodes) != 2 {
		t.Errorf("ranks ran on %v, want two nodes", nodes)
	}
	if len(nodeOf) != 2 {
		t.Errorf("ranks ran in %d containers, want one per node: %v", len(nodeOf), nodeOf)
	}
}

// TestMPIAcrossNodes: srun -N2 -n4 --mpi=pmix --container-image: four
// ranks on two nodes, two per node in the node's one container, an
// Allreduce across nodes, exit 0, and nothing left after the step.
func TestMPIAcrossNodes(t *testing.T) {
	t.Parallel()
	needPMIx(t)
	dir := jobDir(t, bob)
	r := as(t, bob, dir, "srun -p all -N2 -n4 --mpi=pmix --container-image=mpi-test:1 "+mpiHello+"; echo \"srun exit $?\"")
	if !strings.Contains(r.Stdout, "srun exit 0") {
		t.Fatalf("srun: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	checkRanks(t, r.Stdout, 4)
}

// TestMPIFromBatchScript: the same from an sbatch -N2 script.
func TestMPIFromBatchScript(t *testing.T) {
	t.Parallel()
	needPMIx(t)
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, `#!/bin/sh
#SBATCH -p all -N2 --ntasks-per-node=2 -o out-%j.txt
srun --mpi=pmix --container-image=mpi-test:1 `+mpiHello+`
echo "srun exit $?"
`)
	waitJob(t, id, 3*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if !strings.Contains(out, "srun exit 0") {
		t.Fatalf("job output %q", out)
	}
	checkRanks(t, out, 4)
	waitFor(t, 30*time.Second, "no container of the job", func() bool { return len(jobContainers(t, id)) == 0 })
}

// TestWrapperAcrossNodes: srun -N2 containerjob IMG cmd, the wrapper form.
func TestWrapperAcrossNodes(t *testing.T) {
	t.Parallel()
	needPMIx(t)
	dir := jobDir(t, bob)
	r := as(t, bob, dir, "srun -p all -N2 -n2 --mpi=pmix containerjob mpi-test:1 "+mpiHello)
	if r.Code != 0 {
		t.Fatalf("srun: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	checkRanks(t, r.Stdout, 2)
}

// TestPMI2Refused: PMI-2 cannot reach a container; the step is refused
// with one line saying what to use instead, exit 125.
func TestPMI2Refused(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	r := as(t, bob, dir, "srun --mpi=pmi2 --container-image=alpine:3.20 true; echo \"srun exit $?\"")
	if !strings.Contains(r.Stdout, "srun exit 125") || strings.Count(r.Stderr, "containerjob: error:") != 1 ||
		!strings.Contains(r.Stderr, "srun --mpi=pmi2 cannot reach a container") || !strings.Contains(r.Stderr, "containerjob: hint: use srun --mpi=pmix") {
		t.Errorf("srun --mpi=pmi2: stdout %q stderr %q", r.Stdout, r.Stderr)
	}
}

// TestNamedContainerOnBothNodes: --container-name across two steps of a
// two-node job: each node's container keeps what that node's first step
// wrote, containerjob ps on each node lists that node's only, and the
// epilogue removes both.
func TestNamedContainerOnBothNodes(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -p all -N2 -o out-%j.txt
srun -N2 -n2 --container-image=alpine:3.20 --container-name=w sh -c 'hostname > /tmp/first'
echo "step1 $?"
srun -N2 -n2 --container-name=w sh -c 'echo "on $(hostname) first $(cat /tmp/first)"'
echo "step2 $?"
srun -N2 -n2 sh -c 'echo "ps on $(hostname): $(containerjob ps | grep -c " w ")"'
`)
	waitJob(t, id, 3*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	// Both nodes share one engine; each node's ps lists its own container.
	// (ps lists all of alice's containers on the node: no other test may
	// name one w.)
	if ps := regexp.MustCompile(`(?m)^ps on \S+: 1$`).FindAllString(out, -1); len(ps) != 2 {
		t.Errorf("containerjob ps on each node: %q; want one container named w on each", out)
	}
	lines := regexp.MustCompile(`(?m)^on (\S+) first (\S+)$`).FindAllStringSubmatch(out, -1)
	var nodes []string
	for _, l := range lines {
		if l[1] != l[2] {
			t.Errorf("node %s's container holds %s's file", l[1], l[2])
		}
		nodes = append(nodes, l[1])
	}
	sort.Strings(nodes)
	if len(nodes) != 2 || nodes[0] == nodes[1] || !strings.Contains(out, "step1 0") || !strings.Contains(out, "step2 0") {
		t.Errorf("job output %q; want step 2 on both nodes, each seeing its own node's first step", out)
	}
	waitFor(t, 30*time.Second, "the epilogues to remove both named containers", func() bool { return len(jobContainers(t, id)) == 0 })
}

// startTwoNodeStep submits a two-node job whose step holds one container
// per node until cancelled, and waits for both.
func startTwoNodeStep(t *testing.T) (id string) {
	t.Helper()
	dir := jobDir(t, alice)
	id = sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -p all -N2 --ntasks-per-node=2 -o out-%j.txt
srun --container-image=alpine:3.20 sh -c 'echo up; sleep 600'
`)
	waitFor(t, 2*time.Minute, "a container on each node", func() bool { return len(containerNodes(t, id)) == 2 })
	return id
}

// containerNodes is the node label of each of the job's containers.
func containerNodes(t *testing.T, id string) []string {
	t.Helper()
	out, _ := exec.Command("docker", "ps", "-a", "--filter", "label=org.containerjob.job="+id, "--format", `{{.Label "org.containerjob.node"}}`).Output()
	return strings.Fields(string(out))
}

// TestScancelTwoNodeStep: scancel of a running two-node step leaves no
// container on either node.
func TestScancelTwoNodeStep(t *testing.T) {
	t.Parallel()
	id := startTwoNodeStep(t)
	if out, err := exec.Command("scancel", id).CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v %s", err, out)
	}
	waitJob(t, id, 2*time.Minute)
	waitFor(t, 30*time.Second, "no container on either node", func() bool { return len(jobContainers(t, id)) == 0 })
}

// TestEpilogIsNodeScoped: on one engine, the epilogue of one node removes
// that node's containers of the job and leaves the other node's alone.
func TestEpilogIsNodeScoped(t *testing.T) {
	t.Parallel()
	id := startTwoNodeStep(t)
	defer func() {
		exec.Command("scancel", id).Run()
		waitFor(t, 2*time.Minute, "the cancelled job's containers to go", func() bool { return len(jobContainers(t, id)) == 0 })
	}()
	nodes := containerNodes(t, id)
	sort.Strings(nodes)
	cmd := exec.Command(bin, "epilog", "--scheduler", "slurm", "--job", id)
	cmd.Env = append(os.Environ(), "SLURMD_NODENAME="+nodes[0])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("epilog for %s: %v %s", nodes[0], err, out)
	}
	if left := containerNodes(t, id); len(left) != 1 || left[0] != nodes[1] {
		t.Errorf("after %s's epilogue: containers on %v, want only %s's", nodes[0], left, nodes[1])
	}
}

// TestOneRankFails: rank 2 exits 3; srun reports it, and once the step
// is over no container of it is left on either node, while the job (its
// batch script, sleeping) still runs.
func TestOneRankFails(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, `#!/bin/sh
#SBATCH -p all -N2 --ntasks-per-node=2 -o out-%j.txt
srun --container-image=alpine:3.20 sh -c 'if [ "$SLURM_PROCID" = 2 ]; then exit 3; fi; sleep 2'
echo "srun exit $?"
sleep 300
`)
	defer func() {
		exec.Command("scancel", id).Run()
		waitJob(t, id, 2*time.Minute)
	}()
	path := filepath.Join(dir, "out-"+id+".txt")
	waitFor(t, 3*time.Minute, "the step's end", func() bool {
		data, _ := os.ReadFile(path)
		return strings.Contains(string(data), "srun exit")
	})
	out := readOutput(t, path)
	if !strings.Contains(out, "srun exit 3") || !strings.Contains(out, "exit code 3") {
		t.Errorf("job output %q; want srun to report rank 2's exit 3", out)
	}
	waitFor(t, 30*time.Second, "no container of the step, the job still running", func() bool { return len(jobContainers(t, id)) == 0 })
	if state, _ := jobState(t, id); state != "RUNNING" {
		t.Errorf("job %s is %s; the check above was to be made while it ran", id, state)
	}
}

// TestFabricDevices: the node's RDMA devices that fabric_devices lists
// (the test cluster's fake /dev/infiniband nodes) reach every rank's
// container on both nodes with their device numbers, memlock is bob's
// (ulimits in [user.cjbob]), and a device the policy does not list stays
// outside.
func TestFabricDevices(t *testing.T) {
	t.Parallel()
	needPMIx(t)
	// A device on the host that the policy does not name.
	extra := "/dev/infiniband/umad0"
	if _, err := os.Stat(extra); os.IsNotExist(err) {
		if out, err := exec.Command("mknod", "-m", "666", extra, "c", "231", "0").CombinedOutput(); err != nil {
			t.Fatalf("mknod %s: %v %s", extra, err, out)
		}
		t.Cleanup(func() { os.Remove(extra) })
	}
	dir := jobDir(t, bob)
	r := as(t, bob, dir, `srun -p all -N2 -n2 --mpi=pmix --container-image=mpi-test:1 sh -c 'echo "$(hostname) memlock $(ulimit -l)"; for f in /dev/infiniband/*; do echo "$(hostname) $f $(stat -c %t:%T $f)"; done'; echo "srun exit $?"`)
	if !strings.Contains(r.Stdout, "srun exit 0") {
		t.Fatalf("srun: code %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	hosts := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] != "srun" {
			hosts[f[0]] = true
		}
	}
	if len(hosts) != 2 {
		t.Fatalf("ran on %v, want two nodes:\n%s", hosts, r.Stdout)
	}
	for h := range hosts {
		for _, want := range []string{h + " memlock 64", h + " /dev/infiniband/uverbs0 e7:c0", h + " /dev/infiniband/rdma_cm e7:fa"} {
			if !strings.Contains(r.Stdout, want+"\n") {
				t.Errorf("no %q in:\n%s", want, r.Stdout)
			}
		}
	}
	if strings.Contains(r.Stdout, "umad0") {
		t.Errorf("a device outside fabric_devices reached the container:\n%s", r.Stdout)
	}
}

// noPMIx names the lanes whose Slurm package has no mpi/pmix plugin:
// forky's slurm-wlm 26.05.5 ships mpi_pmi2 and mpi_cray_shasta only
// (checked: ls /usr/lib/x86_64-linux-gnu/slurm-wlm | grep mpi), and the
// test image's Open MPI speaks PMIx alone. There the PMIx tests cannot
// run; everywhere else a missing plugin fails them.
var noPMIx = map[string]string{
	"forky":   "Debian 14's slurm-wlm 26.05.5 ships no mpi/pmix plugin",
	"cgroup2": "Debian 14's slurm-wlm 26.05.5 ships no mpi/pmix plugin",
}

func needPMIx(t *testing.T) {
	t.Helper()
	if why, ok := noPMIx[os.Getenv("CONTAINERJOB_E2E_LANE")]; ok {
		list := exec.Command("srun", "--mpi=list")
		list.Env = append(os.Environ(), "SLURM_CONF="+slurmConf)
		out, _ := list.CombinedOutput()
		if strings.Contains(string(out), "pmix") {
			t.Fatalf("the %s lane has mpi/pmix now (%q): run the test there", os.Getenv("CONTAINERJOB_E2E_LANE"), out)
		}
		t.Skipf("not run on the %s lane: %s", os.Getenv("CONTAINERJOB_E2E_LANE"), why)
	}
}
