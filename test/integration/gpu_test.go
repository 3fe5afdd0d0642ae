//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// TestGPURequestsReachTheEngine: in the nvidia and cdi modes the container
// the engine creates carries a device request for exactly the job's GPUs
// (inspected on the real engine, not the request we built), and on an engine
// without that GPU support the launch fails with one line that names the
// policy setting, leaving no container. The devices mode runs on the local
// Slurm cluster's fake GPUs (test/e2e TestTwoJobsConfinedToTheirAllocation).
func TestGPURequestsReachTheEngine(t *testing.T) {
	job := policy.Job{Scheduler: "slurm", ID: "gpu-it", Dir: alice.Home, Node: "n1",
		GPUs: []policy.GPU{{ID: "GPU-1111", CDI: "nvidia.com/gpu=GPU-1111", Device: "/dev/nvidia1", Minor: 1}, {ID: "GPU-3333", CDI: "nvidia.com/gpu=GPU-3333", Device: "/dev/nvidia3", Minor: 3}}}
	caller := policy.Caller{User: alice.Name, UID: alice.UID, GID: alice.GID, Groups: []uint32{alice.GID}, GroupNames: []string{alice.Name}, Home: alice.Home}
	tests := []struct {
		mode, driver string
		ids          []string
		env          []string
	}{
		{"nvidia", "nvidia", []string{"GPU-1111", "GPU-3333"}, []string{"NVIDIA_VISIBLE_DEVICES=GPU-1111,GPU-3333", "CUDA_VISIBLE_DEVICES=0,1"}},
		{"cdi", "cdi", []string{"nvidia.com/gpu=GPU-1111", "nvidia.com/gpu=GPU-3333"}, []string{"NVIDIA_VISIBLE_DEVICES=void", "CUDA_VISIBLE_DEVICES=0,1"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			pol, err := policy.Parse("/gpu-test.toml", []byte(`[settings]
gpus_mode = "`+tt.mode+`"
confine = "none"
[defaults]
images_allow = ["alpine:*"]
pull = ["never"]
networks_allow = ["none"]
`))
			if err != nil {
				t.Fatal(err)
			}
			d, err := pol.Decide(policy.Request{Image: "alpine:3.20", Cmd: []string{"true"}}, caller, job)
			if err != nil {
				t.Fatal(err)
			}
			var created string
			var inspected client.ContainerInspectResult
			var stderr bytes.Buffer
			_, err = launcher.Run(context.Background(), docker, d,
				launcher.IO{Stdout: &bytes.Buffer{}, Stderr: &stderr},
				launcher.Options{
					Guard: guard.Expect{UID: alice.UID, GID: alice.GID, Groups: []uint32{alice.GID}, AllowedGPUIDs: tt.ids},
					Created: func(id string) {
						created = id
						inspected, _ = docker.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
					},
				})
			if created == "" {
				t.Fatalf("no container was created: %v", err)
			}
			c := inspected.Container
			if c.HostConfig == nil || c.Config == nil {
				t.Fatalf("inspect of %s returned nothing", created)
			}
			reqs := c.HostConfig.DeviceRequests
			if len(reqs) != 1 || reqs[0].Driver != tt.driver || !slices.Equal(reqs[0].DeviceIDs, tt.ids) || reqs[0].Count != 0 {
				t.Errorf("the engine holds device requests %+v, want driver %s ids %v", reqs, tt.driver, tt.ids)
			}
			if len(c.HostConfig.Devices) != 0 {
				t.Errorf("device nodes %+v besides the request", c.HostConfig.Devices)
			}
			for _, kv := range tt.env {
				if !slices.Contains(c.Config.Env, kv) {
					t.Errorf("env %v lacks %s", c.Config.Env, kv)
				}
			}

			// The CI engine has neither nvidia-container-toolkit nor CDI: the
			// start fails, and says what to change.
			info, ierr := docker.Info(context.Background(), client.InfoOptions{})
			if ierr != nil {
				t.Fatal(ierr)
			}
			if _, ok := info.Info.Runtimes["nvidia"]; ok || len(info.Info.CDISpecDirs) > 0 {
				t.Logf("this engine has GPU support; the failed-start half does not apply")
				return
			}
			var lerr *launcher.Error
			if !errors.As(err, &lerr) || lerr.Code != 125 {
				t.Fatalf("launch on an engine without %s support: %v, want a launcher error with code 125", tt.mode, err)
			}
			if msg := err.Error(); !strings.Contains(msg, "gpus_mode") || !strings.Contains(msg, tt.mode) || strings.Contains(msg, "\n") {
				t.Errorf("error %q does not name gpus_mode %s in one line", msg, tt.mode)
			}
			if _, err := docker.ContainerInspect(context.Background(), created, client.ContainerInspectOptions{}); err == nil {
				t.Errorf("container %.12s left after the failed start", created)
				docker.ContainerRemove(context.Background(), created, client.ContainerRemoveOptions{Force: true})
			}
		})
	}
}
