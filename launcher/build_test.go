package launcher

import (
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

const buildPolicy = `
[defaults]
images_allow = ["alpine:*"]
mounts_allow = ["$HOME"]
flags_allow = ["volume", "entrypoint", "publish", "network"]
networks_allow = ["none", "host", "bridge"]
ports_allow = ["8000-8099", "0.0.0.0:9000"]
`

func decision(t *testing.T, req policy.Request) *policy.Decision {
	t.Helper()
	return decideFor(t, buildPolicy, req, policy.Job{Scheduler: "slurm", ID: "7", Dir: "/home/bob/job", Node: "n1"})
}

// decideFor is the decision of policy text for bob (uid 1002, the caller
// expect() holds the guard to) in job.
func decideFor(t *testing.T, text string, req policy.Request, job policy.Job) *policy.Decision {
	t.Helper()
	pol, err := policy.Parse("/p.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	caller := policy.Caller{User: "bob", UID: 1002, GID: 1002, Groups: []uint32{3000, 3001}, GroupNames: []string{"bob"}, Home: "/home/bob"}
	d, err := pol.Decide(req, caller, job)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

func expect() guard.Expect {
	return guard.Expect{UID: 1002, GID: 1002, Groups: []uint32{3000, 3001}}
}

func TestBuildIsGuarded(t *testing.T) {
	d := decision(t, policy.Request{Image: "alpine:3.20", Cmd: []string{"id"},
		Mounts: []policy.MountRequest{{Given: "/home/bob/in", Source: "/home/bob/in", Target: "/in", ReadOnly: true}}})
	req, err := Build(d, "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	c, h := req.Config, req.HostConfig
	if c.User != "1002:1002" || c.Image != "sha256:abc" || c.WorkingDir != "/home/bob/job" {
		t.Errorf("config user %q image %q workdir %q", c.User, c.Image, c.WorkingDir)
	}
	if strings.Join(h.GroupAdd, ",") != "3000,3001" || strings.Join(h.CapDrop, ",") != "ALL" {
		t.Errorf("groups %v capdrop %v", h.GroupAdd, h.CapDrop)
	}
	if h.PidsLimit == nil || *h.PidsLimit != 4096 {
		t.Errorf("pids limit %v", h.PidsLimit)
	}
	if len(h.Mounts) != 2 || !h.Mounts[1].ReadOnly || h.Mounts[1].Type != mount.TypeBind {
		t.Errorf("mounts %+v", h.Mounts)
	}
	if c.Labels["org.containerjob.job"] != "7" || c.Labels["org.containerjob.version"] == "" {
		t.Errorf("labels %v", c.Labels)
	}
	if err := guard.Check(req, expect()); err != nil {
		t.Fatalf("guard refused a policy-built request: %v", err)
	}
}

func TestBuildClearsEntrypoint(t *testing.T) {
	empty := ""
	req, err := Build(decision(t, policy.Request{Image: "alpine", Entrypoint: &empty, Flags: []string{"entrypoint"}}), "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Config.Entrypoint) != 1 || req.Config.Entrypoint[0] != "" {
		t.Fatalf("entrypoint %q, want [\"\"] to clear the image's", req.Config.Entrypoint)
	}
}

func TestBuildPorts(t *testing.T) {
	d := decision(t, policy.Request{Image: "alpine:3.20", Network: "bridge", Publish: []string{"8080:80", "0.0.0.0:9000:9000"}, Flags: []string{"publish", "network"}})
	req, err := Build(d, "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	b := req.HostConfig.PortBindings
	if len(b) != 2 || len(req.Config.ExposedPorts) != 2 {
		t.Fatalf("bindings %v exposed %v", b, req.Config.ExposedPorts)
	}
	if got := b[network.MustParsePort("80/tcp")]; len(got) != 1 || got[0].HostIP.String() != "127.0.0.1" || got[0].HostPort != "8080" {
		t.Errorf("80/tcp bound to %+v", got)
	}
	want := expect()
	want.AllowedPorts = ApprovedPorts(d)
	if err := guard.Check(req, want); err != nil {
		t.Fatalf("guard refused approved ports: %v", err)
	}
}

func TestStartErrorExitCodes(t *testing.T) {
	tests := []struct {
		msg, gpuDriver string
		code           int
		says           string
	}{
		{`Error response from daemon: could not select device driver "nvidia" with capabilities: [[gpu]]`, "nvidia", ExitLaunchFailed, `gpus_mode "nvidia"`},
		{`Error response from daemon: CDI device injection failed: unresolvable CDI devices nvidia.com/gpu=1`, "cdi", ExitLaunchFailed, `gpus_mode "cdi"`},
		{`OCI runtime create failed: runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH: unknown`, "", ExitCommandMissing, `"nope": executable file not found`},
		{`OCI runtime create failed: runc create failed: unable to start container process: exec: "/x": stat /x: no such file or directory: unknown`, "nvidia", ExitCommandMissing, "not found in the image"},
		{`OCI runtime create failed: runc create failed: unable to start container process: exec: "/etc/passwd": permission denied: unknown`, "", ExitCannotInvoke, "cannot be run"},
		{`failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown`, "", ExitLaunchFailed, "could not set the policy's ulimits"},
		{`Cannot connect to the Docker daemon`, "", ExitLaunchFailed, "starting the container failed"},
	}
	for _, tt := range tests {
		err := startError(errString(tt.msg), tt.gpuDriver)
		if e, ok := err.(*Error); !ok || e.Code != tt.code || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("startError(%q) = %v, want code %d saying %q", tt.msg, err, tt.code, tt.says)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestBuildAllocation(t *testing.T) {
	job := policy.Job{Scheduler: "slurm", ID: "7", Dir: "/home/bob/job", Node: "n1", CPUs: "2-3", MemoryBytes: 512 << 20,
		StepCgroup:   "/slurm/uid_1002/job_7/step_0",
		GPUs:         []policy.GPU{{ID: "GPU-aaaa", CDI: "nvidia.com/gpu=GPU-aaaa", Device: "/dev/nvidia1", Minor: 1}, {ID: "GPU-bbbb", CDI: "nvidia.com/gpu=GPU-bbbb", Device: "/dev/nvidia3", Minor: 3}},
		ControlFiles: []string{"/dev/nvidiactl"}}
	caller := policy.Caller{User: "bob", UID: 1002, GID: 1002, GroupNames: []string{"bob"}, Home: "/home/bob"}
	tests := []struct {
		settings string
		check    func(t *testing.T, r client.ContainerCreateOptions, e guard.Expect)
	}{
		{`gpus_mode = "devices"`, func(t *testing.T, r client.ContainerCreateOptions, e guard.Expect) {
			h := r.HostConfig
			if h.CpusetCpus != "2-3" || h.Memory != 512<<20 || h.MemorySwap != 512<<20 || h.CgroupParent != "" {
				t.Errorf("cpuset %q memory %d swap %d parent %q", h.CpusetCpus, h.Memory, h.MemorySwap, h.CgroupParent)
			}
			if len(h.Devices) != 3 || h.Devices[0].PathOnHost != "/dev/nvidia1" || h.Devices[1].PathOnHost != "/dev/nvidia3" || len(h.DeviceRequests) != 0 {
				t.Errorf("devices %+v requests %+v", h.Devices, h.DeviceRequests)
			}
			if !slices.Contains(r.Config.Env, "CUDA_VISIBLE_DEVICES=0,1") || !slices.Contains(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=void") {
				t.Errorf("env %v", r.Config.Env)
			}
			e.AllowedDevices = []string{"/dev/nvidia1", "/dev/nvidia3", "/dev/nvidiactl"}
			if err := guard.Check(r, e); err != nil {
				t.Errorf("guard: %v", err)
			}
			e.AllowedDevices = []string{"/dev/nvidia1"}
			if err := guard.Check(r, e); err == nil {
				t.Errorf("guard let /dev/nvidia3 through without it in the allocation")
			}
		}},
		{`gpus_mode = "nvidia"`, func(t *testing.T, r client.ContainerCreateOptions, e guard.Expect) {
			h := r.HostConfig
			if len(h.DeviceRequests) != 1 || h.DeviceRequests[0].Driver != "nvidia" || strings.Join(h.DeviceRequests[0].DeviceIDs, ",") != "GPU-aaaa,GPU-bbbb" || len(h.Devices) != 0 {
				t.Errorf("requests %+v devices %+v", h.DeviceRequests, h.Devices)
			}
			if !slices.Contains(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=GPU-aaaa,GPU-bbbb") || !slices.Contains(r.Config.Env, "CUDA_VISIBLE_DEVICES=0,1") {
				t.Errorf("env %v", r.Config.Env)
			}
			e.AllowedGPUIDs = []string{"GPU-aaaa", "GPU-bbbb"}
			if err := guard.Check(r, e); err != nil {
				t.Errorf("guard: %v", err)
			}
			e.AllowedGPUIDs = []string{"GPU-aaaa"}
			if err := guard.Check(r, e); err == nil {
				t.Errorf("guard let GPU-bbbb through without it in the allocation")
			}
		}},
		{`gpus_mode = "cdi"`, func(t *testing.T, r client.ContainerCreateOptions, _ guard.Expect) {
			h := r.HostConfig
			if len(h.DeviceRequests) != 1 || h.DeviceRequests[0].Driver != "cdi" || strings.Join(h.DeviceRequests[0].DeviceIDs, ",") != "nvidia.com/gpu=GPU-aaaa,nvidia.com/gpu=GPU-bbbb" {
				t.Errorf("requests %+v", h.DeviceRequests)
			}
		}},
		{`gpus_mode = "none"`, func(t *testing.T, r client.ContainerCreateOptions, _ guard.Expect) {
			if len(r.HostConfig.DeviceRequests)+len(r.HostConfig.Devices) != 0 || !slices.Contains(r.Config.Env, "NVIDIA_VISIBLE_DEVICES=void") {
				t.Errorf("GPUs given with gpus_mode none: %+v %v", r.HostConfig.Devices, r.Config.Env)
			}
		}},
		{"confine = \"cgroup-parent\"\ngpus_mode = \"none\"", func(t *testing.T, r client.ContainerCreateOptions, e guard.Expect) {
			if r.HostConfig.CgroupParent != "/slurm/uid_1002/job_7/step_0" {
				t.Errorf("cgroup parent %q", r.HostConfig.CgroupParent)
			}
			if err := guard.Check(r, e); err == nil {
				t.Errorf("guard accepted a cgroup parent it was not told of")
			}
		}},
		{"confine = \"none\"\ngpus_mode = \"none\"", func(t *testing.T, r client.ContainerCreateOptions, _ guard.Expect) {
			if r.HostConfig.CpusetCpus != "" || r.HostConfig.Memory != 0 {
				t.Errorf("confine none set limits: %q %d", r.HostConfig.CpusetCpus, r.HostConfig.Memory)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.settings, func(t *testing.T) {
			pol, err := policy.Parse("/p.toml", []byte("[settings]\n"+tt.settings+"\n"+buildPolicy))
			if err != nil {
				t.Fatal(err)
			}
			d, err := pol.Decide(policy.Request{Image: "alpine:3.20"}, caller, job)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Build(d, "sha256:abc")
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r, guard.Expect{UID: 1002, GID: 1002})
		})
	}
}

// TestImageEnvFirst: under pyxis' precedence a variable the image's ENV
// sets keeps the image's value unless the decision forced it or the user
// asked for the job's; other variables of the job pass.
func TestImageEnvFirst(t *testing.T) {
	d := &policy.Decision{ImageEnvWins: true, JobEnvNames: []string{"CUDA_VERSION", "NCCL_DEBUG", "MINE"}}
	env := []string{"CUDA_VERSION=12.0", "NCCL_DEBUG=INFO", "MINE=1", "SITE=x", "NVIDIA_VISIBLE_DEVICES=void"}
	image := []string{"PATH=/usr/bin", "CUDA_VERSION=11.8.0", "NCCL_DEBUG=WARN", "SITE=img", "NVIDIA_VISIBLE_DEVICES=all"}
	got := strings.Join(imageEnvFirst(d, env, image), " ")
	if got != "MINE=1 SITE=x NVIDIA_VISIBLE_DEVICES=void" {
		t.Errorf("env %q; want the image's CUDA_VERSION and NCCL_DEBUG, the job's MINE, the forced SITE and GPU variable", got)
	}
	d.ImageEnvWins = false
	if got := imageEnvFirst(d, env, image); len(got) != len(env) {
		t.Errorf("the wrapper form changed the env: %v", got)
	}
}

// TestExpectIsTheBoundsAndWhatTheLaunchAdded: the guard is told the
// node's bounds with what the launch itself added (its stage, its
// accounting cgroup, containerjob's own binds), and completing them
// changes nothing of the bounds one launch may share with another.
func TestExpectIsTheBoundsAndWhatTheLaunchAdded(t *testing.T) {
	opts := Options{Guard: guard.Expect{UID: 1002, GID: 1002, Own: map[string]string{"/usr/libexec/x": "/.x"}}}
	if want := opts.expect(); want.AccountingParent != "" || want.Staged != nil || len(want.Own) != 1 {
		t.Errorf("nothing added: %+v", want)
	}
	stage := &Stage{Sources: map[string]string{"/run/s/0": "/home/u"}, Generated: map[string]string{"/run/s/passwd": "/etc/passwd"}}
	opts.added.stage = stage
	opts.added.accounting = "/containerjob/uid_1002/7-abc"
	opts.added.bindOwn("/usr/libexec/containerjob/containerjob-init", "/.containerjob/init")
	want := opts.expect()
	if want.UID != 1002 || want.AccountingParent != "/containerjob/uid_1002/7-abc" || want.StageRoot != StageRoot {
		t.Errorf("expect = %+v", want)
	}
	stage.Generated["/run/s/group"] = "/etc/group"
	if want.Generated["/run/s/group"] != "/etc/group" || want.Staged["/run/s/0"] != "/home/u" {
		t.Errorf("the guard does not see the stage's own maps: %+v", want)
	}
	if want.Own["/usr/libexec/containerjob/containerjob-init"] != "/.containerjob/init" || want.Own["/usr/libexec/x"] != "/.x" {
		t.Errorf("own binds %v", want.Own)
	}
	if len(opts.Guard.Own) != 1 {
		t.Errorf("the bounds changed: %v", opts.Guard.Own)
	}
}
