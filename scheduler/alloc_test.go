package scheduler

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFormatCPUList(t *testing.T) {
	tests := []struct {
		in   []int
		want string
	}{
		{nil, ""}, {[]int{0}, "0"}, {[]int{0, 1, 2, 5}, "0-2,5"}, {[]int{7, 3, 4}, "3-4,7"},
	}
	for _, tt := range tests {
		if got := FormatCPUList(tt.in); got != tt.want {
			t.Errorf("FormatCPUList(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMemoryLimitTightestAncestor(t *testing.T) {
	root := t.TempDir()
	write := func(rel, v string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(v+"\n"), 0o644)
	}
	// As recorded on the test cluster: the limit is on the job, the task
	// reports "unlimited".
	write("memory/slurm_vm/uid_1002/job_42/memory.limit_in_bytes", "314572800")
	write("memory/slurm_vm/uid_1002/job_42/step_0/memory.limit_in_bytes", "9223372036854771712")
	write("memory/slurm_vm/uid_1002/job_42/step_0/task_0/memory.limit_in_bytes", "9223372036854771712")
	write("memory/memory.limit_in_bytes", "9223372036854771712")
	cg := "4:memory:/slurm_vm/uid_1002/job_42/step_0/task_0\n3:cpuset:/slurm_vm/uid_1002/job_42/step_0\n"
	if got := MemoryLimit([]byte(cg), root); got != 314572800 {
		t.Errorf("v1 limit = %d, want 314572800", got)
	}
	write("system.slice/slurmstepd.scope/job_9/memory.max", "max")
	write("system.slice/slurmstepd.scope/job_9/step_0/memory.max", "1073741824")
	if got := MemoryLimit([]byte("0::/system.slice/slurmstepd.scope/job_9/step_0/user/task_0\n"), root); got != 1073741824 {
		t.Errorf("v2 limit = %d, want 1073741824", got)
	}
	if got := MemoryLimit([]byte("4:memory:/user.slice\n"), root); got != 0 {
		t.Errorf("no limit = %d, want 0", got)
	}
}

func TestGPUDevices(t *testing.T) {
	conf := `# recorded layout of the test cluster, plus another node
NodeName=vm Name=gpu File=/dev/nvidia[0-3]
NodeName=other Name=gpu Type=a100 File=/dev/nvidia[4-5]
`
	got, err := GPUDevices([]int{1, 3}, []byte(conf), "vm")
	want := []GPU{{Index: 1, Device: "/dev/nvidia1", Minor: 1}, {Index: 3, Device: "/dev/nvidia3", Minor: 3}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GPUDevices = %v, %v; want %v", got, err, want)
	}
	// gres.conf order, not device number, gives Slurm's index.
	got, _ = GPUDevices([]int{0}, []byte("Name=gpu File=/dev/nvidia2\nName=gpu File=/dev/nvidia0\n"), "vm")
	if len(got) != 1 || got[0].Device != "/dev/nvidia2" {
		t.Errorf("index 0 of reordered gres.conf = %v, want /dev/nvidia2", got)
	}
	// AutoDetect: no File lines.
	got, _ = GPUDevices([]int{2}, []byte("AutoDetect=nvml\n"), "vm")
	if len(got) != 1 || got[0].Device != "/dev/nvidia2" {
		t.Errorf("autodetect = %v", got)
	}
	if _, err := GPUDevices([]int{9}, []byte(conf), "vm"); err == nil || !strings.Contains(err.Error(), "not in gres.conf") {
		t.Errorf("out-of-range index: %v", err)
	}
}

// TestStepGPUs: the step keeps the job's GPUs its device controller lets
// it open; EPERM (srun --gres=gpu:1 in a job of 2, --gres=none) leaves one
// out; anything else is an error rather than a guess.
func TestStepGPUs(t *testing.T) {
	job := []GPU{{Index: 0, Device: "/dev/nvidia0", Minor: 0}, {Index: 1, Device: "/dev/nvidia1", Minor: 1}}
	tests := []struct {
		name    string
		denied  map[string]error
		want    []int
		wantErr string
	}{
		{"unconstrained or the step holds both", nil, []int{0, 1}, ""},
		{"step holds one", map[string]error{"/dev/nvidia0": unix.EPERM}, []int{1}, ""},
		{"--gres=none", map[string]error{"/dev/nvidia0": unix.EPERM, "/dev/nvidia1": unix.EPERM}, nil, ""},
		{"device file missing", map[string]error{"/dev/nvidia1": unix.ENOENT}, nil, "GPU device /dev/nvidia1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StepGPUs(job, func(p string) error { return tt.denied[p] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("StepGPUs = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			var idx []int
			for _, g := range got {
				idx = append(idx, g.Index)
			}
			if err != nil || !reflect.DeepEqual(idx, tt.want) {
				t.Fatalf("StepGPUs = %v, %v; want indices %v", idx, err, tt.want)
			}
		})
	}
}

// TestDeviceAccessAsksTheKernel: /dev/null is open to every cgroup; a
// missing file is an error, not a GPU left out.
func TestDeviceAccessAsksTheKernel(t *testing.T) {
	if err := DeviceAccess("/dev/null"); err != nil {
		t.Errorf("DeviceAccess(/dev/null) = %v", err)
	}
	if err := DeviceAccess("/dev/containerjob-no-such-device"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("DeviceAccess(missing) = %v; want ENOENT", err)
	}
}

// TestStepCPUs: the step's CPUs come from its own cpuset directory (v1
// cpuset.cpus, v2 cpuset.cpus.effective), never a task's below it.
func TestStepCPUs(t *testing.T) {
	root := t.TempDir()
	write := func(rel, data string) {
		os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755)
		os.WriteFile(filepath.Join(root, rel), []byte(data), 0o644)
	}
	write("cpuset/slurm_vm/uid_1002/job_7/step_0/cpuset.cpus", "0-1\n")
	write("cpuset/slurm_vm/uid_1002/job_7/step_0/task_0/cpuset.cpus", "0\n")
	write("system.slice/slurmstepd.scope/job_8/step_2/cpuset.cpus.effective", "2,4-5\n")
	write("cpuset/slurm/uid_1/job_9/step_0/cpuset.cpus", "0-1; rm -rf /\n")
	for _, tt := range []struct{ cgroup, want string }{
		{"5:cpuset:/slurm_vm/uid_1002/job_7/step_0/task_0\n", "0-1"},
		{"0::/system.slice/slurmstepd.scope/job_8/step_2/user/task_1\n", "2,4-5"},
		{"5:cpuset:/slurm/uid_1/job_9/step_0\n", ""},
		{"5:cpuset:/user.slice\n", ""},
	} {
		if got := StepCPUs([]byte(tt.cgroup), root); got != tt.want {
			t.Errorf("StepCPUs(%q) = %q, want %q", tt.cgroup, got, tt.want)
		}
	}
}
