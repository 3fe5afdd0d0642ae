package node

import (
	"os"
	"strconv"
	"strings"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// gpuControlFiles are the NVIDIA devices every GPU process needs besides
// its GPUs'; passed in "devices" mode when present on the node.
var gpuControlFiles = []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}

// presentControlFiles is the control files the node has (a variable, so
// tests do not depend on the machine's devices).
var presentControlFiles = func() []string {
	var out []string
	for _, f := range gpuControlFiles {
		if _, err := os.Stat(f); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// presentFabric is the fabric devices of the policy's list that this node
// has as character devices (a variable, as presentControlFiles is).
var presentFabric = func(devs []string) []string {
	var out []string
	for _, d := range devs {
		if st, err := os.Stat(d); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			out = append(out, d)
		}
	}
	return out
}

// PolicyJob is the verified job in the policy's terms. Each GPU is named
// to the engine by the UUID scheduler.Detect read from the driver's record
// of that very device when the site names GPUs by UUID (gpus_mode
// "nvidia"), else by its device minor; under gpus_mode "cdi" by the CDI
// spec's device that brings that very device file. jobEnv gives hints only: how many
// tasks the step has and its srun --mpi, which choose between outcomes
// the policy allows anyway.
func PolicyJob(job scheduler.Job, jobEnv []string, settings policy.Settings) policy.Job {
	pj := policy.Job{
		Scheduler: job.Scheduler, ID: job.ID, Step: job.Step, Dir: job.Dir, Node: job.Node, Files: job.Files,
		CPUs: job.Alloc.CPUs, MemoryBytes: job.Alloc.MemoryBytes, StepCgroup: job.Cgroup,
		PidMax: nodePidMax(), StepCPUs: job.Alloc.StepCPUs,
	}
	if job.Scheduler == "slurm" {
		pj.StepTasks, _ = strconv.Atoi(identity.EnvValue(jobEnv, "SLURM_STEP_NUM_TASKS"))
		pj.MPIType = identity.EnvValue(jobEnv, "SLURM_MPI_TYPE")
		pj.MPIDirs = job.PMIxDirs
	}
	if job.ID != "" {
		pj.FabricDevices = presentFabric(settings.FabricDevices)
	}
	for _, g := range job.Alloc.GPUs {
		id := g.UUID
		if id == "" {
			id = strconv.Itoa(g.Minor)
		}
		pj.GPUs = append(pj.GPUs, policy.GPU{ID: id, CDI: g.CDI, Device: g.Device, Minor: int64(g.Minor)})
	}
	if len(pj.GPUs) > 0 {
		pj.ControlFiles = presentControlFiles()
	}
	return pj
}

// jobDevices is what the guard independently allows of a job's devices:
// GPU ids in every form a device request may name them (the id PolicyJob
// chose, UUID or minor, and the CDI name Detect found in the spec), and
// device files: the fabric's,
// the GPUs' and their control files, as PolicyJob found them on the node.
func jobDevices(job policy.Job) (ids, devices []string) {
	devices = append(devices, job.FabricDevices...)
	for _, g := range job.GPUs {
		ids = append(ids, g.ID)
		if g.CDI != "" {
			ids = append(ids, g.CDI)
		}
		devices = append(devices, g.Device)
	}
	return ids, append(devices, job.ControlFiles...)
}

// nodePidMax is the kernel's pid_max, 0 when it cannot be read.
func nodePidMax() int64 {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}
