package guard_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// The guard is tested against requests the launcher really builds from a
// policy decision, each broken in one way; every break must be refused.

const refusePolicy = `
[defaults]
images_allow = ["alpine:*"]
mounts_allow = ["$HOME"]
flags_allow = ["volume"]
`

func decision(t *testing.T, req policy.Request) *policy.Decision {
	t.Helper()
	pol, err := policy.Parse("/p.toml", []byte(refusePolicy))
	if err != nil {
		t.Fatal(err)
	}
	caller := policy.Caller{User: "bob", UID: 1002, GID: 1002, Groups: []uint32{3000, 3001}, GroupNames: []string{"bob"}, Home: "/home/bob"}
	d, err := pol.Decide(req, caller, policy.Job{Scheduler: "slurm", ID: "7", Dir: "/home/bob/job", Node: "n1"})
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

func expect() guard.Expect {
	return guard.Expect{UID: 1002, GID: 1002, Groups: []uint32{3000, 3001}}
}

func TestUnbrokenRequestPasses(t *testing.T) {
	req, err := launcher.Build(decision(t, policy.Request{Image: "alpine:3.20"}), "sha256:abc")
	if err != nil {
		t.Fatal(err)
	}
	if err := guard.Check(req, expect()); err != nil {
		t.Fatalf("the guard refuses a request built from a decision: %v", err)
	}
	if err := guard.Check(client.ContainerCreateOptions{}, expect()); err == nil {
		t.Fatalf("the guard accepts a request without config")
	}
}

func TestGuardRefuses(t *testing.T) {
	yes := true
	zero := int64(0)
	tests := []struct {
		name   string
		mutate func(*client.ContainerCreateOptions, *guard.Expect)
		want   string
	}{
		{"privileged", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.Privileged = true }, "privileged"},
		{"root user", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.Config.User = "0:0" }, `user "0:0"`},
		{"username instead of uid", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.Config.User = "root" }, "user"},
		{"expected root", func(r *client.ContainerCreateOptions, e *guard.Expect) { r.Config.User = "0:0"; e.UID, e.GID = 0, 0 }, "never run as uid or gid 0"},
		{"group 0 added", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.GroupAdd = append(r.HostConfig.GroupAdd, "0")
		}, "supplementary groups"},
		{"docker group added", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.GroupAdd = []string{"999"} }, "supplementary groups"},
		{"no-new-privileges missing", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.SecurityOpt = nil }, "no-new-privileges"},
		{"caps not dropped", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.CapDrop = nil }, "not all dropped"},
		{"cap add", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.CapAdd = []string{"SYS_ADMIN"} }, "SYS_ADMIN"},
		{"cap add all", func(r *client.ContainerCreateOptions, e *guard.Expect) {
			r.HostConfig.CapAdd = []string{"ALL"}
			e.AllowedCaps = []string{"ALL"}
		}, "ALL"},
		{"host pid", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.PidMode = "host" }, "pid namespace"},
		{"host ipc", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.IpcMode = "host" }, "ipc namespace"},
		{"host uts", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.UTSMode = "host" }, "uts namespace"},
		{"host userns", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.UsernsMode = "host" }, "user namespace"},
		{"host cgroupns", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.CgroupnsMode = "host" }, "cgroup namespace"},
		{"host network unallowed", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.NetworkMode = "host" }, "host network"},
		{"other container's netns", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.NetworkMode = "container:x" }, "network namespace"},
		{"docker0, the shared default bridge", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.NetworkMode = "bridge" }, "shared default bridge"},
		{"default network", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.NetworkMode = "default" }, "shared default bridge"},
		{"binds string", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.Binds = []string{"/:/host"} }, "binds"},
		{"volume driver", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.VolumeDriver = "local" }, "volume drivers"},
		{"volume mount", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Mounts = append(r.HostConfig.Mounts, mount.Mount{Type: mount.TypeVolume, Source: "v", Target: "/v"})
		}, `type "volume"`},
		{"forbidden source", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Mounts = append(r.HostConfig.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/", Target: "/host"})
		}, `mount source "/"`},
		{"docker socket", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Mounts = append(r.HostConfig.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/var/run/docker.sock", Target: "/s"})
		}, "docker.sock"},
		{"relative source", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Mounts = append(r.HostConfig.Mounts, mount.Mount{Type: mount.TypeBind, Source: "home/../etc", Target: "/s"})
		}, "absolute and clean"},
		{"shared propagation", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Mounts[0].BindOptions = &mount.BindOptions{Propagation: mount.PropagationRShared}
		}, "propagation"},
		{"device outside allocation", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Devices = []container.DeviceMapping{{PathOnHost: "/dev/nvidia3"}}
		}, "/dev/nvidia3"},
		{"device cgroup rule", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.DeviceCgroupRules = []string{"c *:* rwm"}
		}, "device cgroup"},
		{"gpus all", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", Count: -1}}
		}, "by count"},
		{"seccomp unconfined", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.SecurityOpt = append(r.HostConfig.SecurityOpt, "seccomp=unconfined")
		}, "seccomp=unconfined"},
		{"systempaths unconfined", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.SecurityOpt = append(r.HostConfig.SecurityOpt, "systempaths=unconfined")
		}, "systempaths"},
		{"sysctls", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.Sysctls = map[string]string{"kernel.x": "1"}
		}, "sysctls"},
		{"runtime", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.Runtime = "runc-debug" }, "runtime"},
		{"oom killer off", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.OomKillDisable = &yes }, "OOM"},
		{"no pids limit", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.PidsLimit = &zero }, "pids"},
		{"published ports", func(r *client.ContainerCreateOptions, _ *guard.Expect) { r.HostConfig.PublishAllPorts = true }, "ports"},
		{"unapproved port binding", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.HostConfig.NetworkMode = launcher.IsolatedBridge
			r.HostConfig.PortBindings = network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "8080"}}}
		}, "host binding 127.0.0.1:8080/tcp not approved"},
		{"binding on every address implicitly", func(r *client.ContainerCreateOptions, e *guard.Expect) {
			r.HostConfig.NetworkMode = launcher.IsolatedBridge
			r.HostConfig.PortBindings = network.PortMap{network.MustParsePort("80/tcp"): {{HostPort: "8080"}}}
			e.AllowedPorts = []string{"0.0.0.0:8080/tcp"}
		}, "without an explicit 0.0.0.0"},
		{"privileged host port even if approved", func(r *client.ContainerCreateOptions, e *guard.Expect) {
			r.HostConfig.NetworkMode = launcher.IsolatedBridge
			r.HostConfig.PortBindings = network.PortMap{network.MustParsePort("22/tcp"): {{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: "22"}}}
			e.AllowedPorts = []string{"0.0.0.0:22/tcp"}
		}, "not an unprivileged port"},
		{"ports on the host network", func(r *client.ContainerCreateOptions, e *guard.Expect) {
			r.HostConfig.NetworkMode, e.AllowHostNetwork = "host", true
			r.HostConfig.PortBindings = network.PortMap{network.MustParsePort("80/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "8080"}}}
			e.AllowedPorts = []string{"127.0.0.1:8080/tcp"}
		}, "port bindings on network"},
		{"spoofed uid label", func(r *client.ContainerCreateOptions, _ *guard.Expect) {
			r.Config.Labels["org.containerjob.uid"] = "1001"
		}, "uid label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := launcher.Build(decision(t, policy.Request{Image: "alpine:3.20"}), "sha256:abc")
			if err != nil {
				t.Fatal(err)
			}
			want := expect()
			tt.mutate(&req, &want)
			err = guard.Check(req, want)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("guard.Check after %q = %v, want a violation containing %q", tt.name, err, tt.want)
			}
		})
	}
}
