package launcher

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/policy"
)

func TestAcctParentRead(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	write := func(rel, data string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v1 := &acctParent{path: "/containerjob/aa"}
	write("cpuacct/containerjob/aa/cpuacct.usage", "450000000\n")
	write("memory/containerjob/aa/memory.max_usage_in_bytes", "67108864\n")
	if u, ok := v1.read(); !ok || u.CPU != 450*time.Millisecond || u.PeakMemory != 64<<20 {
		t.Errorf("v1 read = %+v, %v", u, ok)
	}
	v2 := &acctParent{path: "/containerjob/bb"}
	write("containerjob/bb/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n")
	write("containerjob/bb/memory.peak", "1048576\n")
	if u, ok := v2.read(); !ok || u.CPU != 1500*time.Millisecond || u.PeakMemory != 1<<20 {
		t.Errorf("v2 read = %+v, %v", u, ok)
	}
	if _, ok := (&acctParent{path: "/containerjob/none"}).read(); ok {
		t.Error("a missing accounting cgroup was read")
	}
	var none *acctParent
	if _, ok := none.read(); ok {
		t.Error("no accounting cgroup was read")
	}
	// Empty directories are removed; one with content (a cgroup in use,
	// here a plain file) is left.
	os.MkdirAll(filepath.Join(root, "pids/containerjob/cc"), 0o755)
	(&acctParent{path: "/containerjob/cc"}).remove()
	if _, err := os.Stat(filepath.Join(root, "pids/containerjob/cc")); !os.IsNotExist(err) {
		t.Errorf("the empty accounting cgroup was not removed: %v", err)
	}
	v1.remove()
	if _, err := os.Stat(filepath.Join(root, "cpuacct/containerjob/aa")); err != nil {
		t.Errorf("a non-empty accounting cgroup was removed: %v", err)
	}
}

// TestCleanStaleAcct: only the accounting cgroups of launches whose
// process is gone are removed; a live launch's and the user's own stay.
func TestCleanStaleAcct(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	live := filepath.Join(root, "memory/containerjob/uid_5", strconv.Itoa(os.Getpid())+"-aa")
	dead := filepath.Join(root, "memory/containerjob/uid_5", "2147483646-bb") // no such pid
	for _, d := range []string{live, dead} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cleanStaleAcct()
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live launch's cgroup was removed: %v", err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead launch's cgroup was left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "memory/containerjob/uid_5")); err != nil {
		t.Errorf("the user's cgroup was removed: %v", err)
	}
}

// TestEveryPathLivesUnderTheUsersCap: a plain run, a named container and
// a step's shared container are all created under the caller's cgroup,
// whose pids.max is the per-user cap. Named and step containers used to
// get no parent at all, so they escaped pids_limit_per_user (three named
// containers held 906 processes under a cap of 600).
// onEveryPath launches a plain, a named and a shared step's container
// with the engine's cgroup driver (socket names the engine, for the
// driver's cache) and hands check each decision and the cgroup parent
// its container was created with.
func onEveryPath(t *testing.T, driver, socket string, check func(t *testing.T, d *policy.Decision, parent string)) {
	t.Helper()
	for _, tt := range []struct {
		name string
		req  policy.Request
		job  policy.Job
	}{
		{"plain", policy.Request{Cmd: []string{"true"}}, policy.Job{}},
		{"named", policy.Request{Name: "w", Cmd: []string{"true"}}, policy.Job{}},
		{"shared step", policy.Request{Image: "alpine:3.20", Cmd: []string{"true"}}, policy.Job{Scheduler: "slurm", ID: "7", Step: "3", Node: "n1", StepTasks: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eng, d, opts := lifecycle(t, tt.req)
			eng.Driver = driver
			if tt.job.ID != "" {
				d = decideFor(t, lifecyclePolicy, tt.req, tt.job)
				if !d.StepShared {
					t.Fatal("a two-task step's decision does not share a container")
				}
			}
			opts.EngineSocket = socket
			eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 } // a named container's keeper
			var parent string
			opts.Created = func(id string) {
				c, _ := eng.Find(id)
				parent = c.Req.HostConfig.CgroupParent
			}
			if _, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts); err != nil {
				t.Fatal(err)
			}
			check(t, d, parent)
			for _, c := range eng.Live() {
				eng.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
			}
		})
	}
}

func TestEveryPathLivesUnderTheUsersCap(t *testing.T) {
	root := t.TempDir()
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	os.MkdirAll(filepath.Join(root, "pids"), 0o755) // a v1 pids hierarchy
	socket := filepath.Join(t.TempDir(), "docker.sock")
	os.WriteFile(socket, nil, 0o600)

	onEveryPath(t, "cgroupfs", socket, func(t *testing.T, d *policy.Decision, parent string) {
		if !strings.HasPrefix(parent+"/", "/containerjob/uid_1002/") {
			t.Errorf("cgroup parent %q, want under the user's /containerjob/uid_1002", parent)
		}
		b, err := os.ReadFile(filepath.Join(root, "pids/containerjob/uid_1002/pids.max"))
		if err != nil || strings.TrimSpace(string(b)) != strconv.FormatInt(d.PidsPerUser.Max, 10) || d.PidsPerUser.Max <= 0 {
			t.Errorf("the user's pids.max %q (%v), want %d", b, err, d.PidsPerUser.Max)
		}
	})
}

// With the systemd driver (which takes slices only) every container of a
// user lives in their slice, whose TasksMax is pids_limit_per_user: set
// once through systemctl, then found in systemd's drop-in.
func TestEveryPathLivesInTheUsersSlice(t *testing.T) {
	bin := t.TempDir()
	control := t.TempDir()
	calls := filepath.Join(bin, "calls")
	oldCtl, oldDir := systemctl, systemdControlDir
	systemctl, systemdControlDir = filepath.Join(bin, "systemctl"), control
	defer func() { systemctl, systemdControlDir = oldCtl, oldDir }()
	// systemd's own answer to set-property --runtime: a drop-in.
	os.WriteFile(systemctl, []byte(`#!/bin/sh
echo "$*" >> `+calls+`
[ -n "$FAIL" ] && { echo "Failed to set unit properties: Access denied" >&2; exit 1; }
mkdir -p `+control+`/"$3".d && printf '[Slice]\n%s\n' "$4" > `+control+`/"$3".d/50-TasksMax.conf
`), 0o755)
	socket := filepath.Join(t.TempDir(), "docker.sock")
	os.WriteFile(socket, nil, 0o600)

	onEveryPath(t, "systemd", socket, func(t *testing.T, d *policy.Decision, parent string) {
		if parent != "containerjob-uid_1002.slice" {
			t.Errorf("cgroup parent %q, want the user's slice containerjob-uid_1002.slice", parent)
		}
	})
	b, _ := os.ReadFile(calls)
	_, d, _ := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	want := "set-property --runtime containerjob-uid_1002.slice TasksMax=" + strconv.FormatInt(d.PidsPerUser.Max, 10) + "\n"
	if string(b) != want {
		t.Errorf("systemctl was called with %q, want once with %q (the drop-in answers the later launches)", b, want)
	}

	// A cap systemd refuses fails the launch, naming it.
	os.RemoveAll(filepath.Join(control, "containerjob-uid_1002.slice.d"))
	t.Setenv("FAIL", "1")
	eng, d, opts := lifecycle(t, policy.Request{Cmd: []string{"true"}})
	if d.PidsPerUser.Max <= 0 {
		t.Fatal("the test policy sets no per-user cap")
	}
	eng.Driver = "systemd"
	opts.EngineSocket = socket
	_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
	if err == nil || !strings.Contains(err.Error(), "pids_limit_per_user") || !strings.Contains(err.Error(), "Access denied") || len(eng.Live()) != 0 {
		t.Errorf("launch with a cap systemd refused: %v, %d containers; want a refusal naming the cap and systemd's answer, and none", err, len(eng.Live()))
	}
}

// confine = "cgroup-parent" with Docker's systemd driver: refused on every
// path, naming the setting, before anything is created (the engine's own
// error named neither).
func TestStepParentNeedsCgroupfs(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "docker.sock")
	os.WriteFile(socket, nil, 0o600)
	for _, req := range []policy.Request{{Cmd: []string{"true"}}, {Name: "w", Cmd: []string{"true"}}} {
		for _, driver := range []string{"systemd", "cgroupfs"} {
			eng, d, opts := lifecycle(t, req)
			eng.Driver = driver
			eng.Program["/bin/sh"] = func(p *fakeProc) int { <-p.Killed; return 0 }
			d.CgroupParent = "/system.slice/slurmstepd.scope/job_7/step_0"
			opts.Guard.CgroupParent = d.CgroupParent
			opts.EngineSocket = socket
			_, err := Run(context.Background(), eng, d, IO{Stdout: newLineWriter(), Stderr: newLineWriter()}, opts)
			switch {
			case driver == "systemd" && (err == nil || !strings.Contains(err.Error(), `confine = "cgroup-parent"`) || len(eng.Live()) != 0):
				t.Errorf("%s, name %q: %v, %d containers; want a refusal naming confine and none", driver, req.Name, err, len(eng.Live()))
			case driver == "cgroupfs" && err != nil:
				t.Errorf("%s, name %q: %v", driver, req.Name, err)
			}
			for _, c := range eng.Live() {
				eng.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
			}
		}
	}
}
