// Package launcher turns an approved policy.Decision into a container and
// runs it through the Docker Engine API. It never re-decides policy: what it
// builds is checked by the guard package, then sent as is.
package launcher

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerjob/containerjob/policy"
)

// Version is recorded on every container; set by the linker.
var Version = "dev"

// Build translates a decision into the engine's create request. This is the
// only place where runtime-spec terms become Docker API terms. imageID pins
// the image that was checked, so a tag moved in between cannot change what
// runs.
func Build(d *policy.Decision, imageID string) (client.ContainerCreateOptions, error) {
	p := d.Spec.Process
	if p == nil {
		return client.ContainerCreateOptions{}, fmt.Errorf("decision has no process")
	}
	cfg := buildConfig(d, p, imageID)
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(engineNetwork(d.Network)),
		ReadonlyRootfs: d.ReadOnlyRoot,
		ShmSize:        d.ShmSize,
		CapDrop:        []string{"ALL"},
		LogConfig:      container.LogConfig{Type: d.LogDriver},
	}
	hc.CgroupParent = d.CgroupParent
	if p.NoNewPrivileges {
		hc.SecurityOpt = append(hc.SecurityOpt, "no-new-privileges")
	}
	if p.Capabilities != nil {
		hc.CapAdd = append(hc.CapAdd, p.Capabilities.Effective...)
	}
	for _, g := range p.User.AdditionalGids {
		hc.GroupAdd = append(hc.GroupAdd, strconv.FormatUint(uint64(g), 10))
	}
	buildResources(hc, d)
	if d.Init {
		yes := true
		hc.Init = &yes
	}
	for _, rl := range p.Rlimits {
		hc.Ulimits = append(hc.Ulimits, &container.Ulimit{Name: strings.ToLower(strings.TrimPrefix(rl.Type, "RLIMIT_")), Soft: int64(rl.Soft), Hard: int64(rl.Hard)})
	}
	var err error
	if hc.Mounts, err = buildMounts(d.Spec.Mounts); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	if err := buildPorts(cfg, hc, d.Ports); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	return client.ContainerCreateOptions{
		Name:             d.Name,
		Config:           cfg,
		HostConfig:       hc,
		NetworkingConfig: &network.NetworkingConfig{},
	}, nil
}

// buildConfig is the container's own configuration: who runs what,
// where, with which labels and streams.
func buildConfig(d *policy.Decision, p *specs.Process, imageID string) *container.Config {
	labels := make(map[string]string, len(d.Labels)+1)
	for k, v := range d.Labels {
		labels[k] = v
	}
	labels[policy.LabelVersion] = Version
	cfg := &container.Config{
		Image:        imageID,
		User:         strconv.FormatUint(uint64(p.User.UID), 10) + ":" + strconv.FormatUint(uint64(p.User.GID), 10),
		Env:          p.Env,
		Cmd:          d.Cmd,
		WorkingDir:   p.Cwd,
		Labels:       labels,
		Tty:          d.Tty,
		Hostname:     d.Hostname,
		AttachStdout: true,
		AttachStderr: true,
	}
	if d.Entrypoint != nil {
		// An empty, non-nil slice clears the image's entrypoint.
		cfg.Entrypoint = d.Entrypoint
		if len(d.Entrypoint) == 0 {
			cfg.Entrypoint = []string{""}
		}
	}
	if d.Interactive {
		cfg.AttachStdin, cfg.OpenStdin, cfg.StdinOnce = true, true, true
	}
	return cfg
}

// buildResources: the decision's pids, CPUs, memory and devices, and its
// GPUs for the engine's device driver.
func buildResources(hc *container.HostConfig, d *policy.Decision) {
	if l := d.Spec.Linux; l != nil {
		if r := l.Resources; r != nil {
			if r.Pids != nil && r.Pids.Limit != nil {
				v := *r.Pids.Limit
				hc.PidsLimit = &v
			}
			if r.CPU != nil {
				hc.CpusetCpus = r.CPU.Cpus
			}
			if r.Memory != nil && r.Memory.Limit != nil {
				hc.Memory = *r.Memory.Limit
				// Memory and swap together: the job's memory is the cap.
				hc.MemorySwap = *r.Memory.Limit
				if r.Memory.Swap != nil {
					hc.MemorySwap = *r.Memory.Swap
				}
			}
		}
		for _, dev := range l.Devices {
			hc.Devices = append(hc.Devices, container.DeviceMapping{PathOnHost: dev.Path, PathInContainer: dev.Path, CgroupPermissions: "rwm"})
		}
	}
	if d.GPUDriver != "" {
		req := container.DeviceRequest{Driver: d.GPUDriver, DeviceIDs: d.GPUDeviceIDs}
		if d.GPUDriver == "nvidia" {
			req.Capabilities = [][]string{{"gpu"}}
		}
		hc.DeviceRequests = []container.DeviceRequest{req}
	}
}

// buildMounts: the decision's bind mounts, private in propagation; no
// other kind is built.
func buildMounts(mounts []specs.Mount) ([]mount.Mount, error) {
	var out []mount.Mount
	for _, m := range mounts {
		if m.Type != "bind" {
			return nil, fmt.Errorf("mount type %q is not supported", m.Type)
		}
		out = append(out, mount.Mount{
			Type:        mount.TypeBind,
			Source:      m.Source,
			Target:      m.Destination,
			ReadOnly:    slices.Contains(m.Options, "ro"),
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate},
		})
	}
	return out, nil
}

// buildPorts publishes the decision's ports.
func buildPorts(cfg *container.Config, hc *container.HostConfig, ports []policy.Port) error {
	for _, pt := range ports {
		port, ok := network.PortFrom(pt.ContainerPort, network.IPProtocol(pt.Proto))
		if !ok {
			return fmt.Errorf("port %s has no protocol", pt)
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts, hc.PortBindings = network.PortSet{}, network.PortMap{}
		}
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = append(hc.PortBindings[port], network.PortBinding{HostIP: pt.HostIP, HostPort: strconv.Itoa(int(pt.HostPort))})
	}
	return nil
}

// ApprovedPorts lists the decision's host bindings in the guard's terms.
func ApprovedPorts(d *policy.Decision) []string {
	var out []string
	for _, p := range d.Ports {
		out = append(out, p.HostBinding())
	}
	return out
}

// IsolatedBridge is the network a container asking for "bridge" joins:
// containerjob's own bridge, created with inter-container traffic off
// (enable_icc=false), so that no container reaches another's ports over
// it, be they another user's or one's own; only published ports, from the
// host, reach a container. Docker's default bridge (docker0) lets every
// container reach every other one's unpublished ports.
const IsolatedBridge = "containerjob-isolated"

// isolatedBridgeOptions are the options IsolatedBridge is created with and
// must still have when found.
var isolatedBridgeOptions = map[string]string{"com.docker.network.bridge.enable_icc": "false"}

func engineNetwork(n string) string {
	if n == "bridge" {
		return IsolatedBridge
	}
	return n
}

// imageEnvFirst applies pyxis' precedence to a container's environment:
// a variable the image's ENV sets keeps the image's value, unless the
// decision forced it or the user asked for the job's (--container-env),
// which JobEnvNames leaves out. env is NAME=VALUE as the decision made it.
func imageEnvFirst(d *policy.Decision, env, imageEnv []string) []string {
	if !d.ImageEnvWins || len(d.JobEnvNames) == 0 || len(imageEnv) == 0 {
		return env
	}
	fromJob := map[string]bool{}
	for _, n := range d.JobEnvNames {
		fromJob[n] = true
	}
	inImage := map[string]bool{}
	for _, kv := range imageEnv {
		name, _, _ := strings.Cut(kv, "=")
		inImage[name] = true
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if fromJob[name] && inImage[name] {
			continue // the image's value holds
		}
		out = append(out, kv)
	}
	return out
}
