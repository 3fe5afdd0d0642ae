//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// TestTwoJobsConfinedToTheirAllocation runs two jobs at once, each with its
// own CPU, memory and (fake) GPUs, and proves from inside each container and
// from the engine's view of it that each sees only its own. The memory
// limit is read from cgroup v1's file or v2's (the cgroup v2 lane).
func TestTwoJobsConfinedToTheirAllocation(t *testing.T) {
	type job struct {
		name, args string
		gpus       int
		memMB      int64
		id, dir    string
	}
	jobs := []*job{
		{name: "a", args: "-c1 --mem=300M --gres=gpu:1", gpus: 1, memMB: 300},
		{name: "b", args: "-c1 --mem=200M --gres=gpu:2", gpus: 2, memMB: 200},
	}
	script := `#!/bin/sh
#SBATCH -o out-%j.txt
srun containerjob alpine:3.20 sh -c 'echo DEVICES $(ls /dev/nvidia[0-9]* | tr "\n" " "); echo CUDA $CUDA_VISIBLE_DEVICES; grep Cpus_allowed_list /proc/self/status; echo MEM $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); cat /dev/nvidia9 2>&1 | head -1; while [ ! -e release ]; do sleep 0.2; done'
`
	for _, j := range jobs {
		j.dir = jobDir(t, alice)
		j.dir = filepath.Join(j.dir)
		j.id = sbatch(t, alice, j.dir, script, j.args)
	}
	t.Cleanup(func() { // also when an assertion below stops the test
		for _, j := range jobs {
			os.WriteFile(filepath.Join(j.dir, "release"), nil, 0o644)
		}
	})
	// While both run: the engine's own record of each container.
	hostCPUs := map[string]string{}
	for _, j := range jobs {
		waitFor(t, 2*time.Minute, "job "+j.name+"'s container", func() bool { return len(jobContainers(t, j.id)) > 0 })
		c, err := docker.ContainerInspect(context.Background(), jobContainers(t, j.id)[0], client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := c.Container.HostConfig
		if h.Memory != j.memMB<<20 || h.MemorySwap != j.memMB<<20 {
			t.Errorf("job %s: engine memory %d swap %d, want %d MiB", j.name, h.Memory, h.MemorySwap, j.memMB)
		}
		if !regexp.MustCompile(`^\d+$`).MatchString(h.CpusetCpus) {
			t.Errorf("job %s: cpuset %q, want the one CPU of the job", j.name, h.CpusetCpus)
		}
		hostCPUs[j.name] = h.CpusetCpus
		var devs []string
		for _, d := range h.Devices {
			devs = append(devs, d.PathOnHost)
		}
		if n := countGPUs(devs); n != j.gpus {
			t.Errorf("job %s: engine devices %v, want %d GPUs", j.name, devs, j.gpus)
		}
	}
	// Any user may see which job holds which GPU on the node.
	r := as(t, bob, bob.Home, "containerjob ps --gpus")
	for _, j := range jobs {
		if r.Code != 0 || !strings.Contains(r.Stdout, j.id) || !strings.Contains(r.Stdout, "/dev/nvidia") {
			t.Errorf("ps --gpus lacks job %s: code %d stdout %q stderr %q", j.id, r.Code, r.Stdout, r.Stderr)
		}
	}
	// Both containers run until now, whatever the machine's speed; the
	// test lets them end.
	for _, j := range jobs {
		if err := os.WriteFile(filepath.Join(j.dir, "release"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if hostCPUs["a"] == hostCPUs["b"] {
		t.Errorf("both jobs' containers got CPU %s; Slurm gave each job its own", hostCPUs["a"])
	}
	gpusOf := map[string][]string{}
	for _, j := range jobs {
		state, _ := waitJob(t, j.id, 2*time.Minute)
		if state != "COMPLETED" {
			t.Errorf("job %s: %s", j.name, state)
		}
		out := readOutput(t, filepath.Join(j.dir, "out-"+j.id+".txt"))
		m := regexp.MustCompile(`DEVICES ([^\n]*)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("job %s output %q", j.name, out)
		}
		gpusOf[j.name] = strings.Fields(m[1])
		if len(gpusOf[j.name]) != j.gpus {
			t.Errorf("job %s sees GPUs %v, want %d", j.name, gpusOf[j.name], j.gpus)
		}
		var ords []string
		for i := 0; i < j.gpus; i++ {
			ords = append(ords, fmt.Sprint(i))
		}
		for _, want := range []string{
			"CUDA " + strings.Join(ords, ","),
			"Cpus_allowed_list:\t" + hostCPUs[j.name],
			fmt.Sprintf("MEM %d", j.memMB<<20),
			"No such file or directory", // /dev/nvidia9 is not there
		} {
			if !strings.Contains(out, want) {
				t.Errorf("job %s output %q lacks %q", j.name, out, want)
			}
		}
	}
	all := append(append([]string{}, gpusOf["a"]...), gpusOf["b"]...)
	sort.Strings(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Errorf("GPU %s given to both jobs: a %v, b %v", all[i], gpusOf["a"], gpusOf["b"])
		}
	}
}

func countGPUs(devs []string) int {
	n := 0
	for _, d := range devs {
		if regexp.MustCompile(`^/dev/nvidia\d+$`).MatchString(d) {
			n++
		}
	}
	return n
}

// TestStepGetsItsOwnGPUs: a step holds its own share of the job's GPUs,
// which scontrol does not report: `srun --gres=gpu:1` in a job of 2 gets
// one GPU, the one Slurm's device controller lets the step open, and
// `srun --gres=none` gets none. Slurm 22.05 and 24.11 say so differently
// (a v1 allow list, a deny list behind "a *:* rwm"); the kernel's answer
// is the same.
func TestStepGetsItsOwnGPUs(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt
srun containerjob alpine:3.20 sh -c 'echo "whole $(ls /dev/nvidia[0-9]* | wc -l)"'
srun --gres=gpu:1 containerjob alpine:3.20 sh -c 'echo "one $(ls /dev/nvidia[0-9]* | wc -l) CUDA=$CUDA_VISIBLE_DEVICES"'
srun --gres=none containerjob alpine:3.20 sh -c 'echo "none $(ls /dev/nvidia[0-9]* 2>/dev/null | wc -l)"'
`, "--gres=gpu:2")
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	for _, want := range []string{"whole 2\n", "one 1 CUDA=0\n", "none 0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("job output %q lacks %q", out, want)
		}
	}
}

// TestForeignGPURefused: a user cannot reach GPUs the job does not own.
func TestForeignGPURefused(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	r := as(t, bob, dir, `srun --gres=gpu:1 sh -c '
containerjob -e NVIDIA_VISIBLE_DEVICES=all alpine:3.20 true; echo "env $?"
containerjob --gpus all alpine:3.20 true; echo "gpus $?"
containerjob --device /dev/nvidia3 alpine:3.20 true; echo "device $?"
containerjob -v /dev/nvidia3:/dev/nvidia3 alpine:3.20 true; echo "mount $?"
containerjob alpine:3.20 sh -c "ls /dev/nvidia3"; echo "ls $?"'`)
	for _, want := range []string{
		"NVIDIA_VISIBLE_DEVICES is set only from the job's GPU allocation", "env 125",
		"unknown flag: --gpus", "gpus 125",
		"unknown flag: --device", "device 125",
		"is a device file; devices are given only from the job's allocation", "mount 125",
		"ls 1",
	} {
		if !strings.Contains(r.Stdout+r.Stderr, want) {
			t.Errorf("output %q / %q lacks %q", r.Stdout, r.Stderr, want)
		}
	}
}

// TestOOMReported: a container that allocates past the job's memory is
// killed by the kernel and the job's log says why.
func TestOOMReported(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 sh -c 'head -c 400m /dev/zero | tail > /dev/null'\n", "--mem=100M")
	state, exit := waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "FAILED" || exit != "137:0" {
		t.Errorf("state %s exit %s, want FAILED 137:0", state, exit)
	}
	if !strings.Contains(out, "containerjob: error: the container was killed for using more than the job's memory on this node (100 MiB)") {
		t.Errorf("job output %q lacks the OOM line", out)
	}
}

// TestUsageReported: with report_usage, each container's CPU time and peak
// memory end up as one line in the job's log (and in the audit trail).
func TestUsageReported(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, bob)
	id := sbatch(t, bob, dir, "#!/bin/sh\n#SBATCH -o out-%j.txt\nsrun containerjob alpine:3.20 sh -c 'head -c 60m /dev/zero | tail > /dev/null; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'\n", "--mem=300M")
	waitJob(t, id, 2*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	m := regexp.MustCompile(`containerjob: usage: cpu ([0-9.]+) s, peak memory ([0-9.]+) MiB, wall [0-9.]+ s, exit 0`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("job output %q lacks the usage line", out)
	}
	var cpu, mem float64
	fmt.Sscan(m[1], &cpu)
	fmt.Sscan(m[2], &mem)
	if cpu <= 0.05 || mem < 50 || mem > 300 {
		t.Errorf("usage cpu %.2f s, peak %.1f MiB: want some CPU and a peak between 50 and 300 MiB (60 MiB buffered)", cpu, mem)
	}
}

// TestForgedGRESInJobFields: a job's name, output path and work dir are
// the user's words; scontrol prints them beside the node's real GRES.
// Written as "GRES=gpu:4(IDX:0-3)" they must not give the job's container
// the node's four GPUs: the job has one.
func TestForgedGRESInJobFields(t *testing.T) {
	t.Parallel()
	dir := jobDir(t, alice)
	forged := "x GRES=gpu:4(IDX:0-3) UserId=root(0)"
	work := filepath.Join(dir, forged)
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(work, int(alice.UID), int(alice.GID))
	script := `#!/bin/sh
srun containerjob alpine:3.20 sh -c 'echo "CUDA=$CUDA_VISIBLE_DEVICES"; echo "DEVS=$(ls /dev/nvidia[0-9]* | tr "\n" " ")"'
`
	id := sbatch(t, alice, dir, script, "--gres=gpu:1", `-J "`+forged+`"`, `-D "`+work+`"`, `-o "`+filepath.Join(work, "out "+forged)+`"`)
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(work, "out "+forged))
	if !strings.Contains(out, "CUDA=0\n") || countGPUs(strings.Fields(strings.TrimPrefix(lineWith(out, "DEVS="), "DEVS="))) != 1 {
		t.Errorf("a job with one GPU and GRES= in its name, -D and -o saw: %q; want CUDA=0 and one GPU device", out)
	}
}

func lineWith(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
