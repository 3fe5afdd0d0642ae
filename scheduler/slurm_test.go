package scheduler

import (
	"os"
	"reflect"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	recorded, err := os.ReadFile("testdata/proc-self-cgroup-slurm-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data string
		want CgroupJob
		ok   bool
	}{
		{"recorded v1 step with node-named root", string(recorded),
			CgroupJob{UID: 1002, Job: "2", Step: "0", Path: "/slurm_vm/uid_1002/job_2/step_0"}, true},
		{"v1 plain slurm root, batch step", "6:freezer:/slurm/uid_1000/job_77/step_batch\n",
			CgroupJob{UID: 1000, Job: "77", Step: "batch", Path: "/slurm/uid_1000/job_77/step_batch"}, true},
		{"v2 stepd scope", "0::/system.slice/slurmstepd.scope/job_12/step_3/user/task_0\n",
			CgroupJob{Job: "12", Step: "3", Path: "/system.slice/slurmstepd.scope/job_12/step_3/user/task_0"}, true},
		{"not in a job", "4:memory:/user.slice\n0::/user.slice/user-1000.slice/session-3.scope\n", CgroupJob{}, false},
		{"lookalike path outside slurm root", "6:freezer:/evil/slurm/uid_1000/job_1/step_0\n", CgroupJob{}, false},
		{"uid out of range", "6:freezer:/slurm/uid_99999999999/job_1/step_0\n", CgroupJob{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseCgroup([]byte(tt.data))
			if ok != tt.ok || got != tt.want {
				t.Fatalf("ParseCgroup(%q) = %+v, %v; want %+v, %v", tt.data, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseScontrolJob(t *testing.T) {
	data, err := os.ReadFile("testdata/scontrol-show-job-d-gpu.txt")
	if err != nil {
		t.Fatal(err)
	}
	j, err := ParseScontrolJob(string(data))
	if err != nil {
		t.Fatal(err)
	}
	want := SlurmJob{ID: "2", UID: 1002, User: "cjalice", State: "RUNNING", NodeList: "vm", WorkDir: "/home/cjalice", BatchHost: "vm",
		Nodes: map[string]NodeAlloc{"vm": {CPUIDs: "0-1", MemMB: 500, GPUs: []int{0, 1}}}}
	if !reflect.DeepEqual(j, want) {
		t.Fatalf("ParseScontrolJob = %+v\nwant %+v", j, want)
	}
}

func TestParseScontrolMultiNode(t *testing.T) {
	text := `JobId=9 UserId=bob(1500) JobState=RUNNING NodeList=n[01-02],gpu7 WorkDir=/home/bob
   Nodes=n[01-02] CPU_IDs=0-3 Mem=4096 GRES=
   Nodes=gpu7 CPU_IDs=8 Mem=1024 GRES=gpu:a100:1(IDX:3),gpu:v100:2(IDX:5-6)`
	j, err := ParseScontrolJob(text)
	if err != nil {
		t.Fatal(err)
	}
	if got := j.Nodes["n02"]; got.CPUIDs != "0-3" || got.MemMB != 4096 || len(got.GPUs) != 0 {
		t.Errorf("n02 = %+v", got)
	}
	if got := j.Nodes["gpu7"]; !reflect.DeepEqual(got.GPUs, []int{3, 5, 6}) {
		t.Errorf("gpu7 GPUs = %v", got.GPUs)
	}
}

func TestExpandHostlist(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"vm", []string{"vm"}, false},
		{"n[1-3]", []string{"n1", "n2", "n3"}, false},
		{"n[01-02,10],login", []string{"n01", "n02", "n10", "login"}, false},
		{"rack[1-2]-a", []string{"rack1-a", "rack2-a"}, false},
		{"n[3-1]", nil, true},
		{"n[x]", nil, true},
	}
	for _, tt := range tests {
		got, err := ExpandHostlist(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ExpandHostlist(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
