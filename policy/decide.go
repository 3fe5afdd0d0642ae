package policy

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DecideExec decides a command run in one of the caller's existing
// containers: the container already holds everything else the policy
// decided, so only the flags of exec are judged, as run's are.
func (p *Policy) DecideExec(caller Caller, flags []string) error {
	eff := p.Effective(caller)
	for _, f := range flags {
		if !slices.Contains(ExecFlags, f) {
			return &Refusal{Item: fmt.Sprintf("flag --%s", truncate(f, 32)), Reason: "is not a flag of exec", Rule: builtin("exec-flags")}
		}
		if _, ok := eff.FlagsAllow.find(f); !ok {
			return &Refusal{Item: fmt.Sprintf("flag --%s", f), Reason: "is not allowed", Rule: eff.FlagsAllow.missing("flags_allow")}
		}
	}
	return nil
}

// JudgeSubmission is the early answer at submission (sbatch, srun,
// salloc on a login node): what the compute node would refuse whatever
// the node and the job, judged as there: each flag, and the image when it
// is named by tag. A digest is left to the node, which knows its tags. A
// nil error promises nothing: the node still decides everything.
func (p *Policy) JudgeSubmission(caller Caller, image string, flags []string) error {
	eff := p.Effective(caller)
	for _, f := range flags {
		if _, ok := eff.FlagsAllow.find(f); !ok {
			return &Refusal{Item: fmt.Sprintf("flag --%s", truncate(f, 32)), Reason: "is not allowed", Rule: eff.FlagsAllow.missing("flags_allow")}
		}
	}
	if image == "" {
		return nil
	}
	if ref, err := NormalizeImage(image); err == nil && ref.Digest != "" {
		return nil
	}
	_, _, err := p.judgeImage(eff, image, nil)
	return err
}

var (
	nameRE      = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	networkRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	userLabelRE = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)
)

func parsePull(v string) (string, error) {
	switch v {
	case "never", "missing", "always":
		return v, nil
	default:
		return "", fmt.Errorf("pull mode %q is not one of never, missing, always", v)
	}
}

func validNetworkName(n string) error {
	switch {
	case n == "none", n == "bridge", n == "host":
		return nil
	case strings.HasPrefix(n, "container:"):
		return fmt.Errorf("network %q joins another container's network namespace and is never allowed", n)
	case !networkRE.MatchString(n):
		return fmt.Errorf("network %q is not a valid network name", n)
	}
	return nil
}

// Decide judges req for caller in job. It does no I/O: mount sources and the
// job directory arrive resolved. A refusal is returned as *Refusal.
//
// The decision is made in steps, one per topic, in this order; a later step
// may read what an earlier one decided (the environment drops HOME unless
// a mount shows it; a bare -p picks a network that forwards).
func (p *Policy) Decide(req Request, caller Caller, job Job) (*Decision, error) {
	s := &decider{p: p, req: req, caller: caller, job: job, eff: p.Effective(caller), env: newEnvList(),
		d: &Decision{Labels: map[string]string{}, LogDriver: p.Settings.ContainerLogs, UserEntries: p.Settings.UserEntries != "off"}}
	for _, step := range []func() error{
		s.outsideJobs, s.flags, s.image, s.pull, s.mounts, s.identity, s.environment, s.capabilities,
		s.gpus, s.fabric, s.workdir, s.command, s.shm, s.network, s.mpi, s.ports, s.name, s.resources, s.limits, s.labels,
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return s.d, nil
}

// decider is one decision under way: the request, who asks in which job,
// the rules that apply to them, and what is decided so far.
type decider struct {
	p      *Policy
	req    Request
	caller Caller
	job    Job
	eff    *Effective
	d      *Decision
	proc   *specs.Process
	env    *envList
}

func (s *decider) trail(item, action string, o Origin) {
	s.d.Trail = append(s.d.Trail, Applied{Item: item, Action: action, Rule: o})
}

// outsideJobs: a launch outside a job needs outside_jobs.
func (s *decider) outsideJobs() error {
	if s.job.ID == "" && !s.eff.OutsideJobs.Value {
		return &Refusal{Item: "a launch outside a scheduler job", Reason: "is not allowed", Rule: s.eff.OutsideJobs.Origin, Hint: "run it in a job: srun containerjob ..., or #SBATCH --container-image"}
	}
	return nil
}

// flags: each flag the user set must be in flags_allow.
func (s *decider) flags() error {
	for _, f := range s.req.Flags {
		o, ok := s.eff.FlagsAllow.find(f)
		if !ok {
			return &Refusal{Item: fmt.Sprintf("flag --%s", f), Reason: "is not allowed", Rule: s.eff.FlagsAllow.missing("flags_allow")}
		}
		s.trail("flag --"+f, "allowed", o)
	}
	return nil
}

// image: the image must be allowed.
func (s *decider) image() error {
	ref, o, err := s.p.judgeImage(s.eff, s.req.Image, s.req.ImageTags)
	if err != nil {
		return err
	}
	s.trail("image "+ref.String(), "allowed", o)
	s.d.Image = ref
	if s.p.PrivateRegistry(ref) {
		s.d.PrivateRegistry = true
		s.trail("registry "+ref.Registry()+": the caller's own credentials", "forced", Origin{Table: "settings", Key: "private_registries"})
	}
	return nil
}

// pull: the pull mode: the request's if allowed, else the policy's.
func (s *decider) pull() error {
	s.d.Pull = s.req.Pull
	if s.eff.LocalOnly.Value {
		if s.d.Pull != "" && s.d.Pull != "never" {
			return &Refusal{Item: fmt.Sprintf("pull mode %q", s.d.Pull), Reason: "is not allowed", Rule: s.eff.LocalOnly.Origin, Hint: "only images already on this node may run here; leave out --pull"}
		}
		s.d.Pull = "never"
		s.trail("pull never", "forced", s.eff.LocalOnly.Origin)
	} else if s.d.Pull == "" {
		s.d.Pull = "never"
		if _, ok := s.eff.Pull.find("missing"); ok {
			s.d.Pull = "missing"
		}
	} else {
		if _, err := parsePull(s.d.Pull); err != nil {
			return &Refusal{Item: err.Error(), Rule: builtin("pull-mode")}
		}
		o, ok := s.eff.Pull.find(s.d.Pull)
		if !ok && s.d.Pull != "never" {
			return &Refusal{Item: fmt.Sprintf("pull mode %q", s.d.Pull), Reason: "is not allowed", Rule: s.eff.Pull.missing("pull")}
		}
		s.trail("pull "+s.d.Pull, "allowed", o)
	}
	return nil
}

// mounts: job directory, job files, forced, default and requested mounts.
func (s *decider) mounts() error {
	if err := s.p.decideMounts(s.d, s.req, s.caller, s.job, s.eff); err != nil {
		return err
	}
	if err := s.p.decideNesting(s.d); err != nil {
		return err
	}
	return nil
}

// identity: the caller's uid, gid and groups, forced.
func (s *decider) identity() error {
	s.d.Spec.Linux = &specs.Linux{Resources: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &s.eff.PidsLimit.Value}}}

	// Process: identity is forced, never requested.
	s.proc = &specs.Process{
		User:            specs.User{UID: s.caller.UID, GID: s.caller.GID, AdditionalGids: slices.Clone(s.caller.Groups)},
		NoNewPrivileges: true,
		Capabilities:    &specs.LinuxCapabilities{},
		Terminal:        s.req.Tty,
	}
	s.trail(fmt.Sprintf("user %d:%d", s.caller.UID, s.caller.GID), "forced", builtin("caller-identity"))
	return nil
}

// environment: the job's environment, -e, env_force.
func (s *decider) environment() error {
	for _, kv := range s.req.JobEnv {
		// The job's environment arrives whole; what would break the image
		// or is containerjob's to set is dropped, not refused.
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(name) || !utf8.ValidString(value) || strings.ContainsRune(value, 0) || reservedEnv[name] || hostOnlyEnv(name, s.caller, s.d.Spec.Mounts) {
			continue
		}
		s.env.setFromJob(name, value)
	}
	s.d.ImageEnvWins = s.req.ImageFirst
	for _, kv := range s.req.Env {
		name, value, _ := strings.Cut(kv, "=")
		if !envNameRE.MatchString(name) || !utf8.ValidString(value) || strings.ContainsRune(value, 0) {
			return &Refusal{Item: fmt.Sprintf("environment variable %q", truncate(name, 64)), Reason: "is malformed", Rule: builtin("env-syntax")}
		}
		if reservedEnv[name] {
			return &Refusal{Item: fmt.Sprintf("environment variable %s", name), Reason: "is set only from the job's GPU allocation", Rule: builtin("reserved-env"), Hint: "ask for GPUs with srun --gpus (or --gres=gpu:N); the container sees exactly those"}
		}
		s.env.set(name, value)
	}
	for _, e := range s.eff.EnvForce {
		name, value, _ := strings.Cut(e.Value, "=")
		s.env.set(name, value)
		s.trail("env "+name, "forced", e.Origin)
	}
	s.pmixStore()
	return nil
}

// pmixGDS is the PMIx data store a --mpi=pmix step's ranks use unless the
// job, -e or the admin chose one.
const pmixGDS = "hash"

// pmixStore: the ranks of a --mpi=pmix step read the job's data from the
// step's PMIx server by messages (gds hash) rather than from its
// shared-memory store (ds21, ds12). Measured on the test cluster's two
// nodes under load (four busy loops on two CPUs, 2 ranks per node): with
// the store, ranks segfaulted (address 0, before their first output) in
// about one job of ten, both ranks of a node at once, and the other node's
// ranks waited in MPI_Allreduce until the job's end; with hash, none did,
// and ranks on the host never did. Why is not proven; likely the store's
// process-shared locks, which the server takes in the node's PID namespace
// and the ranks in the container's (pyxis' containers share the node's).
// It is a default like the job's own variables (the image's ENV may set it
// where the image's environment wins): the results are the same, only how
// the ranks learn each other's addresses differs.
func (s *decider) pmixStore() {
	if len(s.job.MPIDirs) == 0 { // the step's PMIx server's directories
		return
	}
	if _, set := s.env.vals["PMIX_MCA_gds"]; set {
		return
	}
	s.env.setFromJob("PMIX_MCA_gds", pmixGDS)
	s.trail("env PMIX_MCA_gds="+pmixGDS+" (the PMIx server's shared-memory store does not cross the container's PID namespace)", "forced", builtin("pmix"))
}

// capabilities: capabilities and ulimits.
func (s *decider) capabilities() error {
	for _, c := range s.eff.CapsAllow {
		s.d.CapsAllowed = append(s.d.CapsAllowed, c.Value)
	}
	for _, c := range s.req.CapAdd {
		name := strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		o, ok := s.eff.CapsAllow.find(name)
		if !ok || name == "ALL" {
			return &Refusal{Item: fmt.Sprintf("capability %s", truncate(name, 32)), Reason: "is not allowed", Rule: s.eff.CapsAllow.missing("capabilities_allow")}
		}
		s.proc.Capabilities.Effective = append(s.proc.Capabilities.Effective, name)
		s.trail("capability "+name, "allowed", o)
	}
	var limits []Ulimit
	for _, u := range s.eff.Ulimits {
		l, _ := ParseUlimit(u.Value)
		limits = setUlimit(limits, l)
		s.trail("ulimit "+u.Value, "forced", u.Origin)
	}
	for _, c := range s.caller.Limits {
		if i := slices.IndexFunc(limits, func(l Ulimit) bool { return l.Name == c.Name }); i >= 0 {
			limits[i] = Ulimit{Name: c.Name, Soft: lowerLimit(limits[i].Soft, c.Soft), Hard: lowerLimit(limits[i].Hard, c.Hard)}
			if limits[i].Hard != -1 && (limits[i].Soft == -1 || limits[i].Soft > limits[i].Hard) {
				limits[i].Soft = limits[i].Hard
			}
			continue
		}
		limits = append(limits, c)
	}
	for _, l := range limits {
		s.proc.Rlimits = append(s.proc.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_" + strings.ToUpper(l.Name), Soft: uint64(l.Soft), Hard: uint64(l.Hard)})
	}
	if len(s.caller.Limits) > 0 {
		s.trail("your own resource limits (nproc, nofile, stack, core, memlock), within the policy's ulimits", "forced", builtin("caller-limits"))
	}
	return nil
}

// setUlimit replaces or adds l by name: the last policy line for a name
// holds, as the engine would take it.
func setUlimit(ls []Ulimit, l Ulimit) []Ulimit {
	if i := slices.IndexFunc(ls, func(x Ulimit) bool { return x.Name == l.Name }); i >= 0 {
		ls[i] = l
		return ls
	}
	return append(ls, l)
}

// lowerLimit is the lower of two limits, -1 being unlimited.
func lowerLimit(a, b int64) int64 {
	switch {
	case a == -1:
		return b
	case b == -1:
		return a
	}
	return min(a, b)
}

// gpus: exactly the job's GPUs.
func (s *decider) gpus() error {
	// Whatever the image's environment asks the NVIDIA hook for: "void"
	// means none.
	visible := "void"
	switch mode := s.p.Settings.GPUsMode; {
	case len(s.job.GPUs) == 0 || mode == "none":
	case mode == "devices":
		for _, g := range s.job.GPUs {
			s.d.Spec.Linux.Devices = append(s.d.Spec.Linux.Devices, specs.LinuxDevice{Path: g.Device, Type: "c", Major: 195, Minor: g.Minor})
		}
		for _, f := range s.job.ControlFiles {
			s.d.Spec.Linux.Devices = append(s.d.Spec.Linux.Devices, specs.LinuxDevice{Path: f, Type: "c"})
		}
	case mode == "nvidia":
		s.d.GPUDriver = "nvidia"
		for _, g := range s.job.GPUs {
			s.d.GPUDeviceIDs = append(s.d.GPUDeviceIDs, g.ID)
		}
		visible = strings.Join(s.d.GPUDeviceIDs, ",")
	case mode == "cdi":
		s.d.GPUDriver = "cdi"
		for _, g := range s.job.GPUs {
			if g.CDI == "" {
				return fmt.Errorf("gpus_mode \"cdi\": GPU %s has no CDI name", g.Device)
			}
			s.d.GPUDeviceIDs = append(s.d.GPUDeviceIDs, g.CDI)
		}
	}
	if len(s.job.GPUs) > 0 && s.p.Settings.GPUsMode != "none" {
		// In every mode only the allocated GPUs exist inside, so CUDA
		// numbers them 0..n-1, as Slurm's ConstrainDevices does on the host.
		ordinals := make([]string, len(s.job.GPUs))
		for i := range ordinals {
			ordinals[i] = strconv.Itoa(i)
		}
		cuda := strings.Join(ordinals, ",")
		s.env.set("CUDA_VISIBLE_DEVICES", cuda)
		s.trail("CUDA_VISIBLE_DEVICES="+cuda, "forced", builtin("gpu-allocation"))
	}
	s.env.set("NVIDIA_VISIBLE_DEVICES", visible)
	for _, g := range s.job.GPUs {
		s.d.Labels[LabelGPUs] = strings.TrimPrefix(s.d.Labels[LabelGPUs]+","+g.Device, ",")
	}
	s.trail("NVIDIA_VISIBLE_DEVICES="+visible, "forced", builtin("gpu-allocation"))
	s.proc.Env = s.env.list()
	if s.d.ImageEnvWins {
		s.d.JobEnvNames = s.env.jobNames()
	}
	return nil
}

// workdir: the working directory.
func (s *decider) workdir() error {
	if w := s.eff.WorkdirForce; w.Value != "" {
		if s.req.Workdir != "" && s.req.Workdir != w.Value {
			return &Refusal{Item: fmt.Sprintf("working directory %q", truncate(s.req.Workdir, 256)), Reason: "cannot be chosen; it is " + strconv.Quote(w.Value), Rule: w.Origin, Hint: "leave out --workdir"}
		}
		s.req.Workdir = w.Value
	}
	switch {
	case s.req.Workdir != "":
		if !filepath.IsAbs(s.req.Workdir) || filepath.Clean(s.req.Workdir) != s.req.Workdir || strings.ContainsRune(s.req.Workdir, 0) {
			return &Refusal{Item: fmt.Sprintf("working directory %q", truncate(s.req.Workdir, 256)), Reason: "must be an absolute, clean path", Rule: builtin("workdir-syntax")}
		}
		s.proc.Cwd = s.req.Workdir
	case s.req.ImageFirst:
		// pyxis: the image's WORKDIR (the engine's default, "/" where
		// the image sets none).
		s.proc.Cwd = ""
		s.trail("working directory: the image's", "allowed", builtin("pyxis-semantics"))
	case s.req.Cwd != "" && underAnyMount(s.req.Cwd, s.d.Spec.Mounts):
		s.proc.Cwd = s.req.Cwd
	case s.job.Dir != "" && s.eff.MountJobDir.Value:
		s.proc.Cwd = s.job.Dir
	}
	s.d.Spec.Process = s.proc
	return nil
}

// command: entrypoint, command, terminal, read-only root, init.
func (s *decider) command() error {
	if s.req.Entrypoint != nil {
		if *s.req.Entrypoint == "" {
			s.d.Entrypoint = []string{}
		} else {
			s.d.Entrypoint = []string{*s.req.Entrypoint}
		}
	}
	s.d.Cmd = s.req.Cmd
	switch s.req.PyxisEntrypoint {
	case "", EntrypointQuiet, EntrypointLog:
		s.d.PyxisEntrypoint = s.req.PyxisEntrypoint
	default:
		return &Refusal{Item: "entrypoint mode " + truncate(s.req.PyxisEntrypoint, 32), Reason: "is not quiet or log", Rule: builtin("pyxis-options")}
	}
	for _, a := range append(slices.Clone(s.req.Cmd), s.d.Entrypoint...) {
		if strings.ContainsRune(a, 0) {
			return &Refusal{Item: "a command argument with a NUL byte", Reason: "is refused", Rule: builtin("argv-syntax")}
		}
	}
	s.d.Tty, s.d.Interactive, s.d.ReadOnlyRoot = s.req.Tty, s.req.Interactive, s.req.ReadOnly || s.eff.ReadOnlyRoot.Value
	if s.eff.ReadOnlyRoot.Value {
		s.trail("read-only root filesystem", "forced", s.eff.ReadOnlyRoot.Origin)
	}
	if s.d.Init = s.eff.Init.Value; s.d.Init {
		s.trail("init", "forced", s.eff.Init.Origin)
	}
	return nil
}

// shm: /dev/shm's size.
func (s *decider) shm() error {
	if s.req.ShmSize < 0 {
		return &Refusal{Item: "a negative --shm-size", Reason: "is refused", Rule: builtin("shm-size")}
	}
	if max := s.eff.ShmSizeMax.Value; max > 0 && s.req.ShmSize > max {
		return &Refusal{Item: fmt.Sprintf("--shm-size of %d bytes", s.req.ShmSize), Reason: fmt.Sprintf("is above the %d allowed", max), Rule: s.eff.ShmSizeMax.Origin}
	}
	s.d.ShmSize = s.req.ShmSize
	return nil
}

// network: the network.
func (s *decider) network() error {
	s.d.Network = s.req.Network
	if s.d.Network == "" {
		s.d.Network = "none"
		if len(s.eff.NetworksAllow) > 0 {
			s.d.Network = s.eff.NetworksAllow[0].Value
		}
		// Publishing needs a network that forwards: the first allowed one,
		// as docker run would use its bridge.
		if len(s.req.Publish) > 0 {
			if i := slices.IndexFunc(s.eff.NetworksAllow, func(e Entry) bool { return e.Value != "none" && e.Value != "host" }); i >= 0 {
				s.d.Network = s.eff.NetworksAllow[i].Value
			}
		}
		// An MPI step's tasks reach the node's PMIx server on the node's
		// loopback: the host network, where the policy allows it (pyxis
		// steps always share the host's network).
		if len(s.job.MPIDirs) > 0 {
			if _, ok := s.eff.NetworksAllow.find("host"); ok {
				s.d.Network = "host"
			}
		}
	}
	if err := validNetworkName(s.d.Network); err != nil {
		return &Refusal{Item: err.Error(), Rule: builtin("network-name")}
	}
	if s.d.Network != "none" {
		o, ok := s.eff.NetworksAllow.find(s.d.Network)
		if !ok {
			return &Refusal{Item: fmt.Sprintf("network %q", s.d.Network), Reason: "is not allowed", Rule: s.eff.NetworksAllow.missing("networks_allow")}
		}
		s.trail("network "+s.d.Network, "allowed", o)
	}
	return nil
}

// ports: published ports.
func (s *decider) ports() error {
	if err := s.p.decidePorts(s.d, s.req, s.eff); err != nil {
		return err
	}
	return nil
}

// mpi: what srun --mpi sets up must be able to reach the container.
// PMI-2 hands each task an inherited descriptor (PMI_FD), which cannot
// cross the engine; PMIx's server listens on the node's loopback, which
// only the host network reaches.
func (s *decider) mpi() error {
	if s.job.ID == "" {
		return nil
	}
	switch s.job.MPIType {
	case "pmi2", "pmi1", "mpich1_p4", "mpich1_shmem", "mvapich", "lam", "mpichmx", "mpichgm":
		return &Refusal{Item: fmt.Sprintf("srun --mpi=%s", truncate(s.job.MPIType, 16)), Reason: "cannot reach a container (PMI over a descriptor the engine cannot pass)", Rule: builtin("mpi"),
			Hint: "use srun --mpi=pmix; the step's PMIx server is bound into the container"}
	}
	if len(s.job.MPIDirs) > 0 && s.d.Network != "host" {
		return &Refusal{Item: fmt.Sprintf("srun --mpi=pmix on network %q", s.d.Network), Reason: "cannot reach the node's PMIx server, which listens on the node's 127.0.0.1", Rule: builtin("mpi"),
			Hint: "MPI steps need the host network: the admin adds \"host\" to networks_allow (then MPI steps use it by default), or pass --network host"}
	}
	return nil
}

// fabric: the node's RDMA devices that fabric_devices lists, for every
// container of a job.
func (s *decider) fabric() error {
	if s.job.ID == "" {
		return nil
	}
	for _, dev := range s.job.FabricDevices {
		if !slices.Contains(s.p.Settings.FabricDevices, dev) {
			return &Refusal{Item: fmt.Sprintf("fabric device %q", dev), Reason: "is not in fabric_devices", Rule: Origin{Table: "settings", Key: "fabric_devices"}}
		}
		s.d.Spec.Linux.Devices = append(s.d.Spec.Linux.Devices, specs.LinuxDevice{Path: dev, Type: "c"})
		s.trail("device "+dev, "forced", Origin{Table: "settings", Key: "fabric_devices"})
	}
	return nil
}

// sharedStep: a Slurm step of several tasks runs, per node, in one
// container of the step (step_containers = "shared"); the batch step and
// the extern step have one task each.
func (s *decider) sharedStep() bool {
	switch s.job.Step {
	case "", "batch", "extern", "interactive":
		return false
	}
	return s.job.Scheduler == "slurm" && s.job.StepTasks > 1 && s.p.Settings.StepContainers == "shared" && s.req.Name == ""
}

// name: the container's name and hostname.
func (s *decider) name() error {
	if s.sharedStep() {
		s.d.Name = StepContainerName(s.caller, s.job)
		s.d.StepShared = true
		s.trail("one container for step "+s.job.Step+" on node "+s.job.Node, "forced", Origin{Table: "settings", Key: "step_containers"})
	}
	if s.req.Name != "" {
		if !nameRE.MatchString(s.req.Name) {
			return &Refusal{Item: fmt.Sprintf("container name %q", truncate(s.req.Name, 64)), Reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", Rule: builtin("container-name")}
		}
		// Names are engine-wide: prefixing the caller's identity keeps one
		// user from squatting a name another user (or job) relies on.
		s.d.Name = ContainerName(s.caller, s.job, s.req.Name)
		s.d.Persist = s.job.ID != ""
		s.d.Labels[LabelName] = s.req.Name
	}
	// Inside a job the container answers to the node's name, as the step's
	// processes would without a container (MPI and logs rely on it).
	if s.job.ID != "" {
		s.d.Hostname = s.job.Node
	}
	return nil
}

// resources: pids, CPUs, memory, cgroup parent.
func (s *decider) resources() error {
	s.trail("pids limit "+strconv.FormatInt(s.eff.PidsLimit.Value, 10), "forced", s.eff.PidsLimit.Origin)
	res := s.d.Spec.Linux.Resources
	switch s.p.Settings.Confine {
	case "limits", "cgroup-parent":
		switch {
		case s.d.StepShared && s.job.StepCPUs != "":
			// One container for the step's tasks on the node: all of
			// the step's CPUs, not the first task's binding (its other
			// ranks would all run on the first one's).
			res.CPU = &specs.LinuxCPU{Cpus: s.job.StepCPUs}
			s.trail("cpus "+s.job.StepCPUs+" (the step's, for its tasks' shared container)", "forced", builtin("job-allocation"))
		case s.job.CPUs != "":
			res.CPU = &specs.LinuxCPU{Cpus: s.job.CPUs}
			s.trail("cpus "+s.job.CPUs, "forced", builtin("job-allocation"))
		}
		if s.job.MemoryBytes > 0 {
			m := s.job.MemoryBytes
			res.Memory = &specs.LinuxMemory{Limit: &m, Swap: &m}
			s.trail("memory "+strconv.FormatInt(m, 10), "forced", builtin("job-allocation"))
		}
		if s.p.Settings.Confine == "cgroup-parent" && s.job.StepCgroup != "" {
			s.d.CgroupParent = s.job.StepCgroup
			s.trail("cgroup parent "+s.job.StepCgroup, "forced", builtin("job-allocation"))
		}
	}
	return nil
}

// limits: how many containers and processes may exist.
func (s *decider) limits() error {
	if n := s.eff.MaxPerUser.Value; n > 0 {
		s.d.Limits = append(s.d.Limits, CountLimit{Label: LabelUID, Value: strconv.FormatUint(uint64(s.caller.UID), 10), Max: n, Rule: s.eff.MaxPerUser.Origin, Node: s.job.Node})
	}
	n := s.eff.PidsPerUser.Value
	if n == defaultPidsPerUser {
		n = PidsPerUserDefault(s.job.PidMax)
	}
	if n > 0 {
		s.d.PidsPerUser = CountLimit{Label: LabelUID, Value: strconv.FormatUint(uint64(s.caller.UID), 10), Max: n, Rule: s.eff.PidsPerUser.Origin}
		s.trail("pids limit per user "+strconv.FormatInt(n, 10), "forced", s.eff.PidsPerUser.Origin)
	}
	if n := s.eff.MaxPerJob.Value; n > 0 && s.job.ID != "" {
		s.d.Limits = append(s.d.Limits, CountLimit{Label: LabelJob, Value: s.job.ID, Max: n, Rule: s.eff.MaxPerJob.Origin, Node: s.job.Node})
	}
	return nil
}

// labels: the labels containerjob finds its containers by.
func (s *decider) labels() error {
	s.d.Labels[LabelManaged] = "1"
	s.d.Labels[LabelUser] = s.caller.User
	s.d.Labels[LabelUID] = strconv.FormatUint(uint64(s.caller.UID), 10)
	s.d.Labels[LabelJob] = s.job.ID
	s.d.Labels[LabelStep] = s.job.Step
	s.d.Labels[LabelNode] = s.job.Node
	s.d.Labels[LabelScheduler] = s.job.Scheduler
	s.d.Labels[LabelImage] = s.d.Image.String()
	return nil
}

// ContainerName is the engine-wide name of a user-named container: the uid
// and job make it impossible for one user to take another's name, and the
// node keeps the nodes of a job that share one engine apart.
func ContainerName(caller Caller, job Job, name string) string {
	if job.ID == "" {
		return fmt.Sprintf("cj-%d-nojob-%s", caller.UID, name)
	}
	return fmt.Sprintf("cj-%d-%s-%s-%s", caller.UID, userLabelRE.ReplaceAllString(job.ID, "_"), userLabelRE.ReplaceAllString(job.Node, "_"), name)
}

// StepContainerName is the engine-wide name of a step's shared container
// on a node. The engine settles the race between the node's tasks, which
// all start at once: the first create by this name wins, the others find
// it. "_step." cannot end a user's name part (it must start alphanumeric
// after the node's "-").
func StepContainerName(caller Caller, job Job) string {
	return fmt.Sprintf("cj-%d-%s-%s_step.%s", caller.UID, userLabelRE.ReplaceAllString(job.ID, "_"), userLabelRE.ReplaceAllString(job.Node, "_"), userLabelRE.ReplaceAllString(job.Step, "_"))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
