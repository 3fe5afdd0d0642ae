package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
			CgroupJob{UID: 1002, Job: "2", Step: "0", Path: "/slurm_vm/uid_1002/job_2/step_0", Node: "vm"}, true},
		{"v1 plain slurm root, batch step", "6:freezer:/slurm/uid_1000/job_77/step_batch\n",
			CgroupJob{UID: 1000, Job: "77", Step: "batch", Path: "/slurm/uid_1000/job_77/step_batch"}, true},
		{"v2 stepd scope", "0::/system.slice/slurmstepd.scope/job_12/step_3/user/task_0\n",
			CgroupJob{Job: "12", Step: "3", Path: "/system.slice/slurmstepd.scope/job_12/step_3/user/task_0", V2: true}, true},
		{"v2 stepd scope at the root (slurmd without systemd)", "0::/slurmstepd.scope/job_12/step_batch\n",
			CgroupJob{Job: "12", Step: "batch", Path: "/slurmstepd.scope/job_12/step_batch", V2: true}, true},
		{"v2 lookalike in a user's delegated subtree", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/slurmstepd.scope/job_12/step_0\n", CgroupJob{}, false},
		{"v2 lookalike below a slice in a delegated subtree", "0::/user.slice/user-1000.slice/user@1000.service/x.slice/y_slurmstepd.scope/job_12/step_0\n", CgroupJob{}, false},
		{"v2 lookalike in a session scope", "0::/user.slice/user-1000.slice/session-3.scope/slurmstepd.scope/job_12/step_0\n", CgroupJob{}, false},
		{"v2 stepd scope of one of several slurmd", "0::/system.slice/gpu_n2_slurmstepd.scope/job_12/step_3/user/task_0\n",
			CgroupJob{Job: "12", Step: "3", Path: "/system.slice/gpu_n2_slurmstepd.scope/job_12/step_3/user/task_0", Node: "gpu_n2", V2: true}, true},
		{"v2 job named by its SLUID (Slurm 26.05, as the cgroup v2 lane saw it)", "0::/system.slice/cjv2_slurmstepd.scope/s875M97C5QX100/step_0/user/task_0\n",
			CgroupJob{Job: "s875M97C5QX100", Step: "0", Path: "/system.slice/cjv2_slurmstepd.scope/s875M97C5QX100/step_0/user/task_0", Node: "cjv2", V2: true}, true},
		{"v2 batch step by SLUID", "0::/system.slice/slurmstepd.scope/sADXM9745KC900/step_batch/user/task_0\n",
			CgroupJob{Job: "sADXM9745KC900", Step: "batch", Path: "/system.slice/slurmstepd.scope/sADXM9745KC900/step_batch/user/task_0", V2: true}, true},
		{"v2 job directory that is neither job_ID nor a SLUID", "0::/system.slice/slurmstepd.scope/x875M97C5QX100/step_0/user/task_0\n", CgroupJob{}, false},
		{"v2 SLUID-like in lower case", "0::/system.slice/slurmstepd.scope/s875m97c5qx100/step_0/user/task_0\n", CgroupJob{}, false},
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

// TestVerifyV2Owner: a v2 job cgroup counts only when its scope, job and
// step directories are root's. A user who made the same names where
// systemd delegates a subtree to them (their own directories) is refused.
func TestVerifyV2Owner(t *testing.T) {
	cg, ok := ParseCgroup([]byte("0::/system.slice/slurmstepd.scope/job_12/step_3/user/task_0\n"))
	if !ok {
		t.Fatal("not parsed")
	}
	owners := func(m map[string]uint32) func(string) (uint32, error) {
		return func(p string) (uint32, error) {
			if uid, ok := m[p]; ok {
				return uid, nil
			}
			return 0, fmt.Errorf("%s: no such directory", p)
		}
	}
	root := map[string]uint32{
		"/cg/system.slice/slurmstepd.scope":               0,
		"/cg/system.slice/slurmstepd.scope/job_12":        0,
		"/cg/system.slice/slurmstepd.scope/job_12/step_3": 0,
	}
	if err := VerifyV2Owner(cg, "/cg", owners(root)); err != nil {
		t.Errorf("slurmstepd's own tree: %v", err)
	}
	forged := map[string]uint32{
		"/cg/system.slice/slurmstepd.scope":               0,
		"/cg/system.slice/slurmstepd.scope/job_12":        1000,
		"/cg/system.slice/slurmstepd.scope/job_12/step_3": 1000,
	}
	if err := VerifyV2Owner(cg, "/cg", owners(forged)); err == nil || !strings.Contains(err.Error(), "belongs to uid 1000") {
		t.Errorf("a job directory of the user's: %v", err)
	}
	if err := VerifyV2Owner(cg, "/cg", owners(nil)); err == nil {
		t.Error("a tree that is not there was trusted")
	}
	v1 := CgroupJob{UID: 1000, Job: "1", Step: "0", Path: "/slurm/uid_1000/job_1/step_0"}
	if err := VerifyV2Owner(v1, "/cg", owners(nil)); err != nil {
		t.Errorf("v1 paths are not checked here: %v", err)
	}
}

// TestInCgroup: a cgroup path counts only when the process is listed in
// that cgroup under the node's mount (read in a cgroup namespace of the
// caller's, the path names another one).
func TestInCgroup(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "system.slice/slurmstepd.scope/job_1/step_0")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("17\n4242\n"), 0o644)
	if err := InCgroup(root, "/system.slice/slurmstepd.scope/job_1/step_0", 4242); err != nil {
		t.Errorf("a member: %v", err)
	}
	if err := InCgroup(root, "/system.slice/slurmstepd.scope/job_1/step_0", 424); err == nil {
		t.Error("a process not listed was taken for a member")
	}
	if err := InCgroup(root, "/system.slice/other", 4242); err == nil {
		t.Error("a cgroup that is not there was trusted")
	}
}

// TestParseJobJSON: the job's owner, state, nodes and GPUs come from their
// own fields; what a user writes into the job's name, output paths or work
// dir (here "GRES=gpu:4(IDX:0-3)", "UserId=0(0)") is never read as one.
// The 22.05 fixture is squeue --json from the test cluster, hostile job
// names and -o paths included.
func TestParseJobJSON(t *testing.T) {
	recorded, err := os.ReadFile("testdata/squeue-json-22.05-hostile.json")
	if err != nil {
		t.Fatal(err)
	}
	current, err := os.ReadFile("testdata/scontrol-json-0.0.42-multinode.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		id      string
		want    SlurmJob
		wantErr string
	}{
		{name: "22.05, GRES= and UserId= in name and -o", data: recorded, id: "8",
			want: SlurmJob{ID: "8", UID: 0, User: "root", State: "RUNNING", NodeList: "vm", WorkDir: "/tmp", BatchHost: "vm",
				Nodes: map[string]NodeAlloc{"vm": {MemMB: 1000, GPUs: []int{0, 1}}}}},
		{name: "22.05, second job's GPUs", data: recorded, id: "9",
			want: SlurmJob{ID: "9", UID: 0, User: "root", State: "RUNNING", NodeList: "vm", WorkDir: "/tmp", BatchHost: "vm",
				Nodes: map[string]NodeAlloc{"vm": {MemMB: 1000, GPUs: []int{2, 3}}}}},
		{name: "22.05, finished job without GPUs", data: recorded, id: "1",
			want: SlurmJob{ID: "1", UID: 1001, User: "cjguide", State: "COMPLETED", NodeList: "vm", WorkDir: "/home/cjguide", BatchHost: "vm",
				Nodes: map[string]NodeAlloc{"vm": {MemMB: 1000}}}},
		{name: "22.05, job not listed", data: recorded, id: "7", wantErr: "no record of job 7"},
		{name: "0.0.42, two nodes, state flags, wrapped numbers", data: current, id: "41",
			want: SlurmJob{ID: "41", UID: 1002, User: "cjalice", State: "RUNNING", NodeList: "node[1-2]",
				WorkDir: "/home/cjalice/x GRES=gpu:4(IDX:0-3)\nNodeList=evil", BatchHost: "node1",
				Nodes: map[string]NodeAlloc{"node1": {MemMB: 2000, GPUs: []int{1}}, "node2": {MemMB: 2000, GPUs: []int{0, 3}}}}},
		{name: "not JSON", data: []byte("JobId=8 UserId=root(0) GRES=gpu:4(IDX:0-3)"), id: "8", wantErr: "not JSON"},
		{name: "user_id missing", data: []byte(`{"jobs":[{"job_id":5,"job_state":"RUNNING"}]}`), id: "5", wantErr: "no valid user_id"},
		{name: "state missing", data: []byte(`{"jobs":[{"job_id":5,"user_id":7}]}`), id: "5", wantErr: "not a state"},
		{name: "more GRES entries than nodes", data: []byte(`{"jobs":[{"job_id":5,"user_id":7,"job_state":"RUNNING","nodes":"a","gres_detail":["gpu:1(IDX:0)","gpu:1(IDX:1)"]}]}`), id: "5", wantErr: "GRES for 2 nodes"},
		{name: "errors reported", data: []byte(`{"jobs":[],"errors":[{"error":"Invalid job id specified","description":"x"}]}`), id: "5", wantErr: "Invalid job id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJobJSON(tt.data, tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseJobJSON(%s) = %+v, %v; want error containing %q", tt.id, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseJobJSON(%s) = %+v, %v\nwant %+v", tt.id, got, err, tt.want)
			}
		})
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

func TestNodeOfPrefersTheStepsCgroup(t *testing.T) {
	cg := []byte("4:freezer:/slurm_vm-2/uid_1002/job_7/step_0/task_1\n")
	if got := NodeOf(cg); got != "vm-2" {
		t.Fatalf("NodeOf(%q) = %q, want vm-2", cg, got)
	}
	if got, want := NodeOf([]byte("0::/user.slice\n")), Node(); got != want {
		t.Fatalf("outside a step NodeOf = %q, want the host %q", got, want)
	}
}

// TestShowJobConfirmsAnEmptyAnswer: Slurm 24.11's `scontrol --json show job`
// prints the same empty list, exit 0, whether the job is unknown or
// slurmctld could not be reached (testdata: recorded both ways on 24.11.5,
// identical). Only the plain scontrol's "Invalid job id" makes the job gone;
// gc and the epilogue remove containers on that answer alone.
func TestShowJobConfirmsAnEmptyAnswer(t *testing.T) {
	empty, err := os.ReadFile("testdata/scontrol-json-24.11-no-jobs.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		plainStderr string
		plainRC     int
		gone        bool
	}{
		{"controller unreachable", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)", 1, false},
		{"job unknown", "slurm_load_jobs error: Invalid job id specified", 1, true},
		{"plain scontrol shows the job", "", 0, false},
		{"plain scontrol fails without a reason", "", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			jsonFile := dir + "/empty.json"
			if err := os.WriteFile(jsonFile, empty, 0o644); err != nil {
				t.Fatal(err)
			}
			script := fmt.Sprintf("#!/bin/sh\nif [ \"$1\" = --json ]; then cat %s; exit 0; fi\necho '%s' >&2\nexit %d\n", jsonFile, tt.plainStderr, tt.plainRC)
			if err := os.WriteFile(dir+"/scontrol", []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			_, err := Slurm{Scontrol: dir + "/scontrol"}.ShowJob(context.Background(), "5")
			var unreachable *UnreachableError
			switch {
			case tt.gone && !errors.Is(err, ErrNoSuchJob):
				t.Errorf("ShowJob = %v; want ErrNoSuchJob", err)
			case !tt.gone && !errors.As(err, &unreachable):
				t.Errorf("ShowJob = %v; want an UnreachableError (keep the containers)", err)
			}
		})
	}
}

// TestVerifyStepBySLUID: Slurm 26.05 names a job's cgroup by its SLUID
// (unless CgroupJobIdPaths=yes); the job is the one SLURM_JOB_ID names, and
// only when Slurm's record of it (testdata: forky's slurm-wlm 26.05.5) has
// that very SLUID. The previous binary refused every such step.
func TestVerifyStepBySLUID(t *testing.T) {
	dir := t.TempDir()
	// Job 999999 is no job: an empty JSON answer, confirmed by the plain one.
	script := `#!/bin/sh
case "$*" in
*999999*) case "$*" in *--json*) echo '{"jobs": []}' ;; *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;; esac ;;
*) cat ` + filepath.Join(mustAbs(t, "testdata"), "scontrol-json-26.05-job-sluid.json") + ` ;;
esac
`
	if err := os.WriteFile(dir+"/scontrol", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := Slurm{Scontrol: dir + "/scontrol", Node: "vm"}
	const sluid = "sADXM9745KC900"
	tests := []struct {
		name, job, hint, err string
	}{
		{"by SLUID, named by SLURM_JOB_ID", sluid, "1", ""},
		{"by job id (CgroupJobIdPaths=yes)", "1", "1", ""},
		{"by SLUID without SLURM_JOB_ID", sluid, "", "SLURM_JOB_ID is not set"},
		{"another job's SLUID", "sZZZZ9745KC900", "1", `whose SLUID is "` + sluid + `"`},
		{"a hint that is no job id", sluid, "1; rm", "is not a Slurm job id"},
		{"a hint that names no job", sluid, "999999", `SLURM_JOB_ID="999999" does not match job ` + sluid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := CgroupJob{Job: tt.job, Step: "0", Path: "/system.slice/slurmstepd.scope/" + tt.job + "/step_0/user/task_0", V2: true}
			job, _, err := s.VerifyStep(context.Background(), 0, cg, tt.hint)
			if tt.err == "" {
				if err != nil || job.ID != "1" {
					t.Fatalf("job %+v err %v; want job 1", job, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err %v, want %q", err, tt.err)
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
