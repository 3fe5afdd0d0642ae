package scheduler

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
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

func TestCheckDevicesCgroup(t *testing.T) {
	root := t.TempDir()
	step := "/slurm_vm/uid_1000/job_5/step_0"
	if err := os.MkdirAll(filepath.Join(root, "devices", step), 0o755); err != nil {
		t.Fatal(err)
	}
	procCgroup := []byte("12:devices:" + step + "\n6:freezer:" + step + "\n")
	// /dev/null is 1:3 everywhere: it stands in for a GPU's device file.
	gpu := []GPU{{Index: 0, Device: "/dev/null", Minor: 3}}
	tests := []struct {
		name, list string
		cgroup     []byte
		gpus       []GPU
		wantErr    string
	}{
		{"allowed by the step", "c 1:3 rwm\nc 195:255 rwm\n", procCgroup, gpu, ""},
		{"allowed by major wildcard", "c 1:* rwm\n", procCgroup, gpu, ""},
		{"not allowed: scontrol is not believed", "c 195:0 rwm\nc 195:255 rwm\n", procCgroup, gpu, "does not allow it"},
		{"unconstrained step", "a *:* rwm\n", procCgroup, gpu, ""},
		{"no devices controller", "c 195:0 rwm\n", []byte("0::/user.slice\n"), gpu, ""},
		{"no GPUs", "c 195:0 rwm\n", procCgroup, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(root, "devices", step, "devices.list"), []byte(tt.list), 0o644); err != nil {
				t.Fatal(err)
			}
			err := CheckDevicesCgroup(tt.gpus, tt.cgroup, root)
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("CheckDevicesCgroup(list %q) = %v; want error %q", tt.list, err, tt.wantErr)
			}
		})
	}
}
