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

// Caller is who asks, as established by the trusted invocation path (sudo or
// the scheduler), never as the user described themselves.
type Caller struct {
	User   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary group ids, primary excluded
	// GroupNames are the names of all the caller's groups, primary included;
	// they select [group.NAME] tables.
	GroupNames []string
	Home       string // resolved home directory
}

// Job is the scheduler context of the launch; ID is empty outside any job.
type Job struct {
	Scheduler string // "slurm", "pbs", or "" outside a job
	ID        string
	Step      string
	Dir       string // resolved job directory, mounted into every container
	Node      string
	// Files the scheduler gives the step, mounted read-only at their own
	// path (the batch script). containerjob computes them; users cannot.
	Files []string
	// The allocation on this node, from trusted sources (kernel, scontrol).
	CPUs         string
	MemoryBytes  int64
	GPUs         []GPU
	StepCgroup   string
	ControlFiles []string // /dev/nvidiactl, /dev/nvidia-uvm...: present on the node
}

// GPU is one allocated GPU: ID is what the engine is asked for (a UUID
// where known, else the NVIDIA index), Device its node.
type GPU struct {
	ID     string
	Device string
	Minor  int64
}

// MountRequest is a bind mount the user asked for. Source is already
// resolved (symlinks followed, as the caller) by the time policy sees it.
type MountRequest struct {
	Given    string // as the user wrote it, for messages
	Source   string
	Target   string
	ReadOnly bool
}

// Request is what the user asked for, parsed but not yet judged.
type Request struct {
	Image       string
	Cmd         []string
	Entrypoint  *string
	Env         []string // NAME=VALUE, from -e: the user asked for these
	JobEnv      []string // NAME=VALUE, the job step's environment (inside a job only)
	Mounts      []MountRequest
	Workdir     string
	Cwd         string // the caller's resolved working directory
	Tty         bool
	Interactive bool
	Name        string
	ReadOnly    bool
	ShmSize     int64
	Network     string
	Pull        string
	CapAdd      []string
	Publish     []string // -p as written: [IP:]HOSTPORT:CONTAINERPORT[/PROTO]
	// DefaultMounts are the policy's mounts_default (see DefaultMounts),
	// resolved as the caller; one absent from the node is left out.
	DefaultMounts []MountRequest
	// NoDefaultMounts are the default mounts the user opted out of, by
	// path, or "all".
	NoDefaultMounts []string
	Flags           []string // long names of the flags the user set
}

// Decision is the container the policy approved, in runtime-neutral terms
// where the runtime spec has them.
type Decision struct {
	Image        ImageRef
	Pull         string
	Name         string // engine-wide container name, "" for none
	Network      string
	Ports        []Port
	Tty          bool
	Interactive  bool
	ReadOnlyRoot bool
	ShmSize      int64
	Entrypoint   []string // nil: the image's; empty: none
	Cmd          []string
	// Persist: a named container inside a job lives until the job's
	// epilogue; later steps with the same name run in it.
	Persist   bool
	Hostname  string
	LogDriver string
	// StageSources are the bind sources the caller or the job decides
	// (user mounts, the job directory, job files): the launcher binds
	// exactly what it checked. Admin mounts_always are trusted as written.
	StageSources []string
	// GPUs for the engine's device requests (modes nvidia and cdi).
	GPUDriver    string
	GPUDeviceIDs []string
	CgroupParent string
	Init         bool
	// CapsAllowed is every capability the caller's policy allows adding,
	// requested or not: the guard's bound on the final request.
	CapsAllowed []string
	// NestedMounts: the guard lets a bind target lie inside another
	// (nested_mounts = "allow").
	NestedMounts bool
	// UserEntries: the launcher adds the caller to the container's
	// /etc/passwd and /etc/group (user_entries = "add").
	UserEntries bool
	// Limits on how many containers may exist, checked by the launcher
	// against the engine right before create.
	Limits []CountLimit
	// PidsPerUser caps the processes all of the caller's containers on
	// the node may hold together (pids_limit_per_user); Max 0: no cap.
	// The kernel enforces it, on a cgroup of the caller's that is the
	// parent of all their containers (launcher/acct.go).
	PidsPerUser CountLimit
	Spec        specs.Spec
	Labels      map[string]string
	Trail       []Applied
}

// CountLimit caps the containers carrying Label=Value on this node.
type CountLimit struct {
	Label, Value string
	Max          int64
	Rule         Origin
}

// Applied records which rule allowed, forced or refused an item.
type Applied struct {
	Item   string
	Action string // "allowed", "forced", "refused"
	Rule   Origin
}

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

// Refusal is a request the policy does not allow. Its message is the single
// line the user sees.
type Refusal struct {
	Item   string // what was asked: `image "ubuntu:14.04"`
	Reason string // why not, as a predicate: "is denied", "must be an absolute, clean path"; "" when Item says it
	Rule   Origin // the rule that decided
	Hint   string // what the user can do instead, printed on a line of its own; "" when the rule says it
}

// Error is the refusal's one line: ITEM REASON, says RULE.
func (r *Refusal) Error() string {
	if r.Reason == "" {
		return r.Item + ", says " + r.Rule.String()
	}
	return r.Item + " " + r.Reason + ", says " + r.Rule.String()
}

// Labels containerjob sets, and the only labels it trusts when it looks for
// its containers; users cannot set labels at all.
const (
	LabelManaged   = "org.containerjob.managed"
	LabelUser      = "org.containerjob.user"
	LabelUID       = "org.containerjob.uid"
	LabelJob       = "org.containerjob.job"
	LabelStep      = "org.containerjob.step"
	LabelNode      = "org.containerjob.node"
	LabelScheduler = "org.containerjob.scheduler"
	LabelVersion   = "org.containerjob.version"
	LabelImage     = "org.containerjob.image"
	LabelName      = "org.containerjob.name"
	LabelMounts    = "org.containerjob.mounts"
	LabelGPUs      = "org.containerjob.gpus"
)

func builtin(rule string) Origin { return Origin{Table: "built-in", Key: rule} }

var (
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
	nameRE      = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)
	networkRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	userLabelRE = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)
)

// Variables the GPU runtime hooks read as instructions; only containerjob
// sets them, from the job's allocation.
var reservedEnv = map[string]bool{
	"NVIDIA_VISIBLE_DEVICES":     true,
	"NVIDIA_DRIVER_CAPABILITIES": true,
	"NVIDIA_MIG_CONFIG_DEVICES":  true,
	"NVIDIA_MIG_MONITOR_DEVICES": true,
	"NVIDIA_IMEX_CHANNELS":       true,
}

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
func (p *Policy) Decide(req Request, caller Caller, job Job) (*Decision, error) {
	eff := p.Effective(caller)
	d := &Decision{Labels: map[string]string{}, LogDriver: p.Settings.ContainerLogs, UserEntries: p.Settings.UserEntries != "off"}
	trail := func(item, action string, o Origin) {
		d.Trail = append(d.Trail, Applied{Item: item, Action: action, Rule: o})
	}

	if job.ID == "" && !eff.OutsideJobs.Value {
		return nil, &Refusal{Item: "a launch outside a scheduler job", Reason: "is not allowed", Rule: eff.OutsideJobs.Origin, Hint: "run it in a job: srun containerjob ..., or #SBATCH --container-image"}
	}

	for _, f := range req.Flags {
		o, ok := eff.FlagsAllow.find(f)
		if !ok {
			return nil, &Refusal{Item: fmt.Sprintf("flag --%s", f), Reason: "is not allowed", Rule: eff.FlagsAllow.missing("flags_allow")}
		}
		trail("flag --"+f, "allowed", o)
	}

	ref, o, err := p.judgeImage(eff, req.Image)
	if err != nil {
		return nil, err
	}
	trail("image "+ref.String(), "allowed", o)
	d.Image = ref

	d.Pull = req.Pull
	if eff.LocalOnly.Value {
		if d.Pull != "" && d.Pull != "never" {
			return nil, &Refusal{Item: fmt.Sprintf("pull mode %q", d.Pull), Reason: "is not allowed", Rule: eff.LocalOnly.Origin, Hint: "only images already on this node may run here; leave out --pull"}
		}
		d.Pull = "never"
		trail("pull never", "forced", eff.LocalOnly.Origin)
	} else if d.Pull == "" {
		d.Pull = "never"
		if _, ok := eff.Pull.find("missing"); ok {
			d.Pull = "missing"
		}
	} else {
		if _, err := parsePull(d.Pull); err != nil {
			return nil, &Refusal{Item: err.Error(), Rule: builtin("pull-mode")}
		}
		o, ok := eff.Pull.find(d.Pull)
		if !ok && d.Pull != "never" {
			return nil, &Refusal{Item: fmt.Sprintf("pull mode %q", d.Pull), Reason: "is not allowed", Rule: eff.Pull.missing("pull")}
		}
		trail("pull "+d.Pull, "allowed", o)
	}

	if err := p.decideMounts(d, req, caller, job, eff); err != nil {
		return nil, err
	}
	if err := p.decideNesting(d); err != nil {
		return nil, err
	}

	d.Spec.Linux = &specs.Linux{Resources: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &eff.PidsLimit.Value}}}

	// Process: identity is forced, never requested.
	proc := &specs.Process{
		User:            specs.User{UID: caller.UID, GID: caller.GID, AdditionalGids: slices.Clone(caller.Groups)},
		NoNewPrivileges: true,
		Capabilities:    &specs.LinuxCapabilities{},
		Terminal:        req.Tty,
	}
	trail(fmt.Sprintf("user %d:%d", caller.UID, caller.GID), "forced", builtin("caller-identity"))
	env := newEnvList()
	for _, kv := range req.JobEnv {
		// The job's environment arrives whole; what would break the image
		// or is containerjob's to set is dropped, not refused.
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(name) || !utf8.ValidString(value) || strings.ContainsRune(value, 0) || reservedEnv[name] || hostOnlyEnv(name, caller, d.Spec.Mounts) {
			continue
		}
		env.set(name, value)
	}
	for _, kv := range req.Env {
		name, value, _ := strings.Cut(kv, "=")
		if !envNameRE.MatchString(name) || !utf8.ValidString(value) || strings.ContainsRune(value, 0) {
			return nil, &Refusal{Item: fmt.Sprintf("environment variable %q", truncate(name, 64)), Reason: "is malformed", Rule: builtin("env-syntax")}
		}
		if reservedEnv[name] {
			return nil, &Refusal{Item: fmt.Sprintf("environment variable %s", name), Reason: "is set only from the job's GPU allocation", Rule: builtin("reserved-env"), Hint: "ask for GPUs with srun --gpus (or --gres=gpu:N); the container sees exactly those"}
		}
		env.set(name, value)
	}
	for _, e := range eff.EnvForce {
		name, value, _ := strings.Cut(e.Value, "=")
		env.set(name, value)
		trail("env "+name, "forced", e.Origin)
	}
	for _, c := range eff.CapsAllow {
		d.CapsAllowed = append(d.CapsAllowed, c.Value)
	}
	for _, c := range req.CapAdd {
		name := strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		o, ok := eff.CapsAllow.find(name)
		if !ok || name == "ALL" {
			return nil, &Refusal{Item: fmt.Sprintf("capability %s", truncate(name, 32)), Reason: "is not allowed", Rule: eff.CapsAllow.missing("capabilities_allow")}
		}
		proc.Capabilities.Effective = append(proc.Capabilities.Effective, name)
		trail("capability "+name, "allowed", o)
	}
	for _, u := range eff.Ulimits {
		l, _ := ParseUlimit(u.Value)
		proc.Rlimits = append(proc.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_" + strings.ToUpper(l.Name), Soft: uint64(l.Soft), Hard: uint64(l.Hard)})
		trail("ulimit "+u.Value, "forced", u.Origin)
	}

	// GPUs: exactly the job's, whatever the image's environment asks the
	// NVIDIA hook for ("void" means none).
	visible := "void"
	switch mode := p.Settings.GPUsMode; {
	case len(job.GPUs) == 0 || mode == "none":
	case mode == "devices":
		for _, g := range job.GPUs {
			d.Spec.Linux.Devices = append(d.Spec.Linux.Devices, specs.LinuxDevice{Path: g.Device, Type: "c", Major: 195, Minor: g.Minor})
		}
		for _, f := range job.ControlFiles {
			d.Spec.Linux.Devices = append(d.Spec.Linux.Devices, specs.LinuxDevice{Path: f, Type: "c"})
		}
	case mode == "nvidia":
		d.GPUDriver = "nvidia"
		for _, g := range job.GPUs {
			d.GPUDeviceIDs = append(d.GPUDeviceIDs, g.ID)
		}
		visible = strings.Join(d.GPUDeviceIDs, ",")
	case mode == "cdi":
		d.GPUDriver = "cdi"
		for _, g := range job.GPUs {
			d.GPUDeviceIDs = append(d.GPUDeviceIDs, "nvidia.com/gpu="+strconv.FormatInt(g.Minor, 10))
		}
	}
	if len(job.GPUs) > 0 && p.Settings.GPUsMode != "none" {
		// In every mode only the allocated GPUs exist inside, so CUDA
		// numbers them 0..n-1, as Slurm's ConstrainDevices does on the host.
		ordinals := make([]string, len(job.GPUs))
		for i := range ordinals {
			ordinals[i] = strconv.Itoa(i)
		}
		cuda := strings.Join(ordinals, ",")
		env.set("CUDA_VISIBLE_DEVICES", cuda)
		trail("CUDA_VISIBLE_DEVICES="+cuda, "forced", builtin("gpu-allocation"))
	}
	env.set("NVIDIA_VISIBLE_DEVICES", visible)
	for _, g := range job.GPUs {
		d.Labels[LabelGPUs] = strings.TrimPrefix(d.Labels[LabelGPUs]+","+g.Device, ",")
	}
	trail("NVIDIA_VISIBLE_DEVICES="+visible, "forced", builtin("gpu-allocation"))
	proc.Env = env.list()

	if w := eff.WorkdirForce; w.Value != "" {
		if req.Workdir != "" && req.Workdir != w.Value {
			return nil, &Refusal{Item: fmt.Sprintf("working directory %q", truncate(req.Workdir, 256)), Reason: "cannot be chosen; it is " + strconv.Quote(w.Value), Rule: w.Origin, Hint: "leave out --workdir"}
		}
		req.Workdir = w.Value
	}
	switch {
	case req.Workdir != "":
		if !filepath.IsAbs(req.Workdir) || filepath.Clean(req.Workdir) != req.Workdir || strings.ContainsRune(req.Workdir, 0) {
			return nil, &Refusal{Item: fmt.Sprintf("working directory %q", truncate(req.Workdir, 256)), Reason: "must be an absolute, clean path", Rule: builtin("workdir-syntax")}
		}
		proc.Cwd = req.Workdir
	case req.Cwd != "" && underAnyMount(req.Cwd, d.Spec.Mounts):
		proc.Cwd = req.Cwd
	case job.Dir != "" && eff.MountJobDir.Value:
		proc.Cwd = job.Dir
	}
	d.Spec.Process = proc

	if req.Entrypoint != nil {
		if *req.Entrypoint == "" {
			d.Entrypoint = []string{}
		} else {
			d.Entrypoint = []string{*req.Entrypoint}
		}
	}
	d.Cmd = req.Cmd
	for _, a := range append(slices.Clone(req.Cmd), d.Entrypoint...) {
		if strings.ContainsRune(a, 0) {
			return nil, &Refusal{Item: "a command argument with a NUL byte", Reason: "is refused", Rule: builtin("argv-syntax")}
		}
	}
	d.Tty, d.Interactive, d.ReadOnlyRoot = req.Tty, req.Interactive, req.ReadOnly || eff.ReadOnlyRoot.Value
	if eff.ReadOnlyRoot.Value {
		trail("read-only root filesystem", "forced", eff.ReadOnlyRoot.Origin)
	}
	if d.Init = eff.Init.Value; d.Init {
		trail("init", "forced", eff.Init.Origin)
	}

	if req.ShmSize < 0 {
		return nil, &Refusal{Item: "a negative --shm-size", Reason: "is refused", Rule: builtin("shm-size")}
	}
	if max := eff.ShmSizeMax.Value; max > 0 && req.ShmSize > max {
		return nil, &Refusal{Item: fmt.Sprintf("--shm-size of %d bytes", req.ShmSize), Reason: fmt.Sprintf("is above the %d allowed", max), Rule: eff.ShmSizeMax.Origin}
	}
	d.ShmSize = req.ShmSize

	d.Network = req.Network
	if d.Network == "" {
		d.Network = "none"
		if len(eff.NetworksAllow) > 0 {
			d.Network = eff.NetworksAllow[0].Value
		}
		// Publishing needs a network that forwards: the first allowed one,
		// as docker run would use its bridge.
		if len(req.Publish) > 0 {
			if i := slices.IndexFunc(eff.NetworksAllow, func(e Entry) bool { return e.Value != "none" && e.Value != "host" }); i >= 0 {
				d.Network = eff.NetworksAllow[i].Value
			}
		}
	}
	if err := validNetworkName(d.Network); err != nil {
		return nil, &Refusal{Item: err.Error(), Rule: builtin("network-name")}
	}
	if d.Network != "none" {
		o, ok := eff.NetworksAllow.find(d.Network)
		if !ok {
			return nil, &Refusal{Item: fmt.Sprintf("network %q", d.Network), Reason: "is not allowed", Rule: eff.NetworksAllow.missing("networks_allow")}
		}
		trail("network "+d.Network, "allowed", o)
	}

	if err := p.decidePorts(d, req, eff); err != nil {
		return nil, err
	}

	if req.Name != "" {
		if !nameRE.MatchString(req.Name) {
			return nil, &Refusal{Item: fmt.Sprintf("container name %q", truncate(req.Name, 64)), Reason: "must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", Rule: builtin("container-name")}
		}
		// Names are engine-wide: prefixing the caller's identity keeps one
		// user from squatting a name another user (or job) relies on.
		d.Name = ContainerName(caller, job, req.Name)
		d.Persist = job.ID != ""
		d.Labels[LabelName] = req.Name
	}
	// Inside a job the container answers to the node's name, as the step's
	// processes would without a container (MPI and logs rely on it).
	if job.ID != "" {
		d.Hostname = job.Node
	}

	trail("pids limit "+strconv.FormatInt(eff.PidsLimit.Value, 10), "forced", eff.PidsLimit.Origin)
	res := d.Spec.Linux.Resources
	switch p.Settings.Confine {
	case "limits", "cgroup-parent":
		if job.CPUs != "" {
			res.CPU = &specs.LinuxCPU{Cpus: job.CPUs}
			trail("cpus "+job.CPUs, "forced", builtin("job-allocation"))
		}
		if job.MemoryBytes > 0 {
			m := job.MemoryBytes
			res.Memory = &specs.LinuxMemory{Limit: &m, Swap: &m}
			trail("memory "+strconv.FormatInt(m, 10), "forced", builtin("job-allocation"))
		}
		if p.Settings.Confine == "cgroup-parent" && job.StepCgroup != "" {
			d.CgroupParent = job.StepCgroup
			trail("cgroup parent "+job.StepCgroup, "forced", builtin("job-allocation"))
		}
	}

	if n := eff.MaxPerUser.Value; n > 0 {
		d.Limits = append(d.Limits, CountLimit{Label: LabelUID, Value: strconv.FormatUint(uint64(caller.UID), 10), Max: n, Rule: eff.MaxPerUser.Origin})
	}
	if n := eff.PidsPerUser.Value; n > 0 {
		d.PidsPerUser = CountLimit{Label: LabelUID, Value: strconv.FormatUint(uint64(caller.UID), 10), Max: n, Rule: eff.PidsPerUser.Origin}
		trail("pids limit per user "+strconv.FormatInt(n, 10), "forced", eff.PidsPerUser.Origin)
	}
	if n := eff.MaxPerJob.Value; n > 0 && job.ID != "" {
		d.Limits = append(d.Limits, CountLimit{Label: LabelJob, Value: job.ID, Max: n, Rule: eff.MaxPerJob.Origin})
	}
	d.Labels[LabelManaged] = "1"
	d.Labels[LabelUser] = caller.User
	d.Labels[LabelUID] = strconv.FormatUint(uint64(caller.UID), 10)
	d.Labels[LabelJob] = job.ID
	d.Labels[LabelStep] = job.Step
	d.Labels[LabelNode] = job.Node
	d.Labels[LabelScheduler] = job.Scheduler
	d.Labels[LabelImage] = ref.String()
	return d, nil
}

// envList keeps the last value of each name, in first-seen order.
type envList struct {
	order []string
	vals  map[string]string
}

func newEnvList() *envList { return &envList{vals: map[string]string{}} }

func (e *envList) set(name, value string) {
	if _, ok := e.vals[name]; !ok {
		e.order = append(e.order, name)
	}
	e.vals[name] = value
}

func (e *envList) list() []string {
	out := make([]string, 0, len(e.order))
	for _, n := range e.order {
		out = append(out, n+"="+e.vals[n])
	}
	return out
}

// hostOnlyEnv names variables of the job's environment that describe the
// host, not the job: passing them would override the image's own (PATH,
// library paths) or point at things the container does not have. HOME is
// kept only when the home directory is mounted at the same path.
func hostOnlyEnv(name string, caller Caller, mounts []specs.Mount) bool {
	switch name {
	case "PATH", "HOSTNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "_", "MAIL", "TMPDIR",
		"MODULEPATH", "MODULESHOME", "LOADEDMODULES", "_LMFILES_", "MANPATH", "INFOPATH",
		"CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
		"SLURM_CONF", "DISPLAY", "XAUTHORITY", "KRB5CCNAME", "SSH_AUTH_SOCK",
		"PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE":
		return true
	case "HOME":
		return caller.Home == "" || !underAnyMount(caller.Home, mounts)
	}
	for _, p := range []string{"LD_", "BASH_FUNC_", "XDG_", "DBUS_", "SSH_", "SUDO_", "CONTAINERJOB_", "LMOD", "__LMOD", "CONDA_", "VIRTUAL_ENV"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ContainerName is the engine-wide name of a user-named container: the uid
// and job make it impossible for one user to take another's name.
func ContainerName(caller Caller, job Job, name string) string {
	j := job.ID
	if j == "" {
		j = "nojob"
	}
	return fmt.Sprintf("cj-%d-%s-%s", caller.UID, userLabelRE.ReplaceAllString(j, "_"), name)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// mountVars expands $HOME, $USER and $JOB_DIR in mount rules (the only
// variables splitMountRule accepts).
type mountVars struct{ home, user, jobDir string }

func (v mountVars) Replace(s string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	s = strings.ReplaceAll(s, "$JOB_DIR", v.jobDir)
	s = strings.ReplaceAll(s, "$HOME", v.home)
	return strings.ReplaceAll(s, "$USER", v.user)
}

// Paths no policy can make mountable: they hand out the node.
var neverMount = []string{"/proc", "/sys", "/dev"}

// ForbiddenMountSource reports why a resolved host path can never be bind
// mounted, or "" if it may be.
func ForbiddenMountSource(src string) string {
	switch src {
	case "/":
		return "the host's root directory"
	case "/etc":
		return "the host's /etc"
	}
	for _, p := range neverMount {
		if within(src, p) {
			return "under " + p
		}
	}
	for _, sock := range []string{"/var/run/docker.sock", "/run/docker.sock"} {
		if within(sock, src) {
			return "the Docker socket or a directory holding it"
		}
	}
	if within(src, "/run/containerd") || within(src, "/var/lib/docker") {
		return "the container engine's state"
	}
	return ""
}

// within reports whether path is dir or below it; both must be clean.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func underAnyMount(path string, mounts []specs.Mount) bool {
	for _, m := range mounts {
		if within(path, m.Destination) {
			return true
		}
	}
	return false
}

func (p *Policy) decideMounts(d *Decision, req Request, caller Caller, job Job, eff *Effective) error {
	vars := mountVars{home: caller.Home, user: caller.User, jobDir: job.Dir}
	targets := map[string]bool{}
	add := func(src, dst string, ro bool) {
		opts := []string{"rbind", "rprivate"}
		if ro {
			opts = append(opts, "ro")
		}
		d.Spec.Mounts = append(d.Spec.Mounts, specs.Mount{Type: "bind", Source: src, Destination: dst, Options: opts})
		targets[dst] = true
	}
	if eff.MountJobDir.Value && job.Dir != "" {
		if why := ForbiddenMountSource(job.Dir); why != "" {
			return &Refusal{Item: fmt.Sprintf("job directory %q (%s)", job.Dir, why), Reason: "cannot be mounted", Rule: builtin("never-mount"), Hint: "submit the job from a directory of your own (sbatch -D DIR)"}
		}
		add(job.Dir, job.Dir, false)
		d.StageSources = append(d.StageSources, job.Dir)
		d.Trail = append(d.Trail, Applied{Item: "mount " + job.Dir + " (job directory)", Action: "forced", Rule: eff.MountJobDir.Origin})
	}
	for _, f := range job.Files {
		if !targets[f] {
			add(f, f, true)
			d.StageSources = append(d.StageSources, f)
			d.Trail = append(d.Trail, Applied{Item: "mount " + f + " (job file)", Action: "forced", Rule: builtin("job-files")})
		}
	}
	for _, e := range eff.MountsAlways {
		raw, ro, _ := splitMountRule(e.Value)
		path := filepath.Clean(vars.Replace(raw))
		if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
			continue
		}
		if targets[path] {
			continue
		}
		add(path, path, ro)
		if strings.Contains(raw, "$") {
			// A path under the user's name may be theirs to replace (a
			// symlink in a world-writable parent): open it as they would.
			d.StageSources = append(d.StageSources, path)
		}
		d.Trail = append(d.Trail, Applied{Item: "mount " + path, Action: "forced", Rule: e.Origin})
	}
	for _, dm := range defaultMounts(eff, vars, job) {
		given := slices.IndexFunc(req.DefaultMounts, func(m MountRequest) bool { return m.Given == dm.Path })
		switch {
		case slices.Contains(req.NoDefaultMounts, dm.Path) || slices.Contains(req.NoDefaultMounts, "all"):
			d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "skipped, opted out", Rule: dm.Origin})
			continue
		case given < 0:
			d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "skipped, absent", Rule: dm.Origin})
			continue
		case targets[dm.Path]:
			continue
		}
		src := req.DefaultMounts[given].Source
		if why := ForbiddenMountSource(src); why != "" {
			return &Refusal{Item: fmt.Sprintf("default mount %q resolves to %q (%s) and", dm.Path, src, why), Reason: "can never be mounted", Rule: dm.Origin, Hint: "opt out with --no-default-mount=" + dm.Path + ", or ask the admin about the rule"}
		}
		add(src, dm.Path, dm.ReadOnly)
		d.StageSources = append(d.StageSources, src)
		d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "allowed", Rule: dm.Origin})
	}
	for _, m := range req.Mounts {
		if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) != m.Target || m.Target == "/" || strings.ContainsRune(m.Target, 0) {
			return &Refusal{Item: fmt.Sprintf("mount target %q", truncate(m.Target, 256)), Reason: "must be an absolute, clean path other than /", Rule: builtin("mount-target")}
		}
		if targets[m.Target] {
			return &Refusal{Item: fmt.Sprintf("mount target %q", m.Target), Reason: "is already taken by a mount the admin forces", Rule: builtin("mount-target"), Hint: "mount it at another path"}
		}
		if why := ForbiddenMountSource(m.Source); why != "" {
			return &Refusal{Item: fmt.Sprintf("mount source %q (%s)", m.Given, why), Reason: "can never be mounted", Rule: builtin("never-mount")}
		}
		// The longest allowed prefix decides, so an admin can allow /data
		// read-only and /data/$USER read-write.
		best, bestLen, bestRO := Origin{}, -1, false
		for _, e := range eff.MountsAllow {
			raw, ro, _ := splitMountRule(e.Value)
			prefix := filepath.Clean(vars.Replace(raw))
			if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
				continue
			}
			if within(m.Source, prefix) && len(prefix) > bestLen {
				best, bestLen, bestRO = e.Origin, len(prefix), ro
			}
		}
		if bestLen < 0 {
			return &Refusal{Item: fmt.Sprintf("mount source %q", m.Given), Reason: "is not under any path allowed", Rule: eff.MountsAllow.missing("mounts_allow")}
		}
		ro := m.ReadOnly || bestRO
		add(m.Source, m.Target, ro)
		d.StageSources = append(d.StageSources, m.Source)
		action := "allowed"
		if bestRO && !m.ReadOnly {
			action = "forced read-only"
		}
		d.Trail = append(d.Trail, Applied{Item: "mount " + m.Source + ":" + m.Target, Action: action, Rule: best})
	}
	return nil
}

// decideNesting drops the bind mounts that another one already shows at
// the same place (the job directory inside a default $HOME mount) and
// refuses any other bind target inside a bind mount: the engine's runc
// would create that mountpoint through a host path the caller may swap
// for a symlink while the container starts (CVE-2024-45310, fixed in runc
// 1.1.14). nested_mounts = "allow" lifts the refusal.
func (p *Policy) decideNesting(d *Decision) error {
	d.NestedMounts = p.Settings.NestedMounts == "allow"
	mounts := d.Spec.Mounts
	var kept []specs.Mount
	for i, m := range mounts {
		if m.Type != "bind" {
			kept = append(kept, m)
			continue
		}
		covered := false
		var outer *specs.Mount
		for j := range mounts {
			o := &mounts[j]
			if j == i || o.Type != "bind" || o.Destination == m.Destination || !within(m.Destination, o.Destination) {
				continue
			}
			rel := strings.TrimPrefix(m.Destination, o.Destination)
			if o.Destination == "/" {
				rel = m.Destination
			}
			if filepath.Clean(o.Source+rel) == m.Source && (isReadOnly(m) || !isReadOnly(*o)) {
				covered = true
				break
			}
			outer = o
		}
		switch {
		case covered:
			d.Trail = append(d.Trail, Applied{Item: "mount " + m.Source + ":" + m.Destination, Action: "already shown by an enclosing mount; not mounted again", Rule: builtin("nested-mount")})
		case outer != nil && !d.NestedMounts:
			return &Refusal{
				Item:   fmt.Sprintf("mount target %q lies inside the mount of %q, a host directory whose contents the caller may change while the container starts, and", m.Destination, outer.Destination),
				Reason: "is refused (runc before 1.1.14 can be raced into creating it outside the container, CVE-2024-45310)", Rule: Origin{Table: "settings", Key: "nested_mounts"},
				Hint: "mount it outside " + outer.Destination + ", e.g. under /mnt"}
		default:
			kept = append(kept, m)
		}
	}
	d.Spec.Mounts = kept
	// A dropped mount's source is not staged either, unless a kept one uses it.
	d.StageSources = slices.DeleteFunc(d.StageSources, func(src string) bool {
		return !slices.ContainsFunc(kept, func(m specs.Mount) bool { return m.Source == src })
	})
	return nil
}

func isReadOnly(m specs.Mount) bool { return slices.Contains(m.Options, "ro") }

// DefaultMount is one mounts_default entry as it applies to a caller and job.
type DefaultMount struct {
	Path     string // host path and container path, variables expanded
	ReadOnly bool
	Origin   Origin
}

// DefaultMounts lists the caller's default mounts (mounts_default), for the
// launcher to resolve as the caller before Decide. Entries naming $JOB_DIR
// are left out outside a job.
func (p *Policy) DefaultMounts(caller Caller, job Job) []DefaultMount {
	return defaultMounts(p.Effective(caller), mountVars{home: caller.Home, user: caller.User, jobDir: job.Dir}, job)
}

func defaultMounts(eff *Effective, vars mountVars, job Job) []DefaultMount {
	var out []DefaultMount
	for _, e := range eff.MountsDefault {
		raw, ro, _ := splitMountRule(e.Value)
		if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
			continue
		}
		path := filepath.Clean(vars.Replace(raw))
		if !slices.ContainsFunc(out, func(m DefaultMount) bool { return m.Path == path }) {
			out = append(out, DefaultMount{Path: path, ReadOnly: ro, Origin: e.Origin})
		}
	}
	return out
}

// decidePorts judges -p: each host address, port and protocol must be
// covered by a ports_allow rule, on a network that can publish.
func (p *Policy) decidePorts(d *Decision, req Request, eff *Effective) error {
	for _, s := range req.Publish {
		pt, err := ParsePublish(s)
		if err != nil {
			return &Refusal{Item: truncate(err.Error(), 256), Rule: builtin("publish-syntax")}
		}
		if d.Network == "none" || d.Network == "host" {
			return &Refusal{Item: fmt.Sprintf("--publish %s on network %q", pt, d.Network), Reason: "has nothing to forward", Rule: builtin("publish-network"), Hint: "use --network bridge or a named network"}
		}
		if slices.ContainsFunc(d.Ports, func(q Port) bool { return q.HostIP == pt.HostIP && q.HostPort == pt.HostPort && q.Proto == pt.Proto }) {
			return &Refusal{Item: fmt.Sprintf("--publish %s", pt), Reason: "publishes the same host port twice", Rule: builtin("publish-syntax")}
		}
		found := -1
		for i, e := range eff.PortsAllow {
			if r, ok := p.ports[e.Value]; ok && r.allows(pt) {
				found = i
				break
			}
		}
		if found < 0 {
			return &Refusal{Item: fmt.Sprintf("publishing host port %s", pt), Reason: "is not allowed", Rule: eff.PortsAllow.missing("ports_allow")}
		}
		d.Ports = append(d.Ports, pt)
		d.Trail = append(d.Trail, Applied{Item: "publish " + pt.String(), Action: "allowed", Rule: eff.PortsAllow[found].Origin})
	}
	return nil
}
