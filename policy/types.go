package policy

import (
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
	// Limits are the resource limits the caller runs with (nproc, nofile,
	// stack, core, memlock; -1 unlimited): the container gets them,
	// lowered where the policy's ulimits are lower, as a task of the
	// caller's would have them. None known: the policy's alone.
	Limits []Ulimit
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
	// StepTasks is how many tasks the step has in all (Slurm's
	// SLURM_STEP_NUM_TASKS, a hint: it only chooses between a shared and
	// a per-task container, both within the policy); 0 unknown.
	StepTasks int
	// MPIDirs are the step's PMIx server directories on this node, found
	// and checked as root by the scheduler package; bound at their path.
	MPIDirs []string
	// MPIType is the step's srun --mpi (SLURM_MPI_TYPE, a hint: it only
	// turns a launch that cannot work into a refusal that says why).
	MPIType string
	// FabricDevices are the policy's fabric_devices that this node has.
	FabricDevices []string
	// PidMax is the node's pid_max (/proc/sys/kernel/pid_max), which the
	// default per-user process cap is a fraction of; 0 when unknown.
	PidMax int64
	// StepCPUs are all of the step's CPUs on this node, of which CPUs (the
	// task's binding) is a part; a container the step's tasks share gets
	// these. "" unknown.
	StepCPUs string
}

// GPU is one allocated GPU: ID is what the engine is asked for (a UUID
// where known, else the device minor), CDI its qualified CDI name under
// gpus_mode "cdi", Device its node.
type GPU struct {
	ID     string
	CDI    string
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
	// DefaultMounts is the caller's answer to Policy.DefaultMounts: that
	// list, in its order, each entry's Source set to where its path
	// resolves on this node as the caller, or "" where the caller cannot
	// reach it (it is left out). Decide holds it to the policy's list.
	DefaultMounts []DefaultMount
	// NoDefaultMounts are the default mounts the user opted out of, by
	// path, or "all".
	NoDefaultMounts []string
	Flags           []string // long names of the flags the user set
	// ImageTags, for a digest-pinned Image, are the tags of its repository
	// that the engine or the registry confirmed resolve to it (the launch
	// fills them; never the caller's words). Nil: none known.
	ImageTags *DigestTags
	// ImageFirst asks for pyxis' precedence (the SPANK form): the image's
	// ENV wins over the job's environment for every variable it sets,
	// except those Env names (--container-env), and without a working
	// directory the container starts in the image's WORKDIR (or /), not
	// the job directory.
	ImageFirst bool
	// PyxisEntrypoint asks for pyxis' entrypoint (the SPANK form): the
	// image's entrypoint runs first and is handed a starter for the
	// command, never the command's own words; its output is kept aside
	// ("quiet": shown only when it ends before the command starts) or
	// shown ("log", --container-entrypoint-log). Empty: Docker's, the
	// command is the entrypoint's arguments.
	PyxisEntrypoint string
}

// Request.PyxisEntrypoint's values.
const (
	EntrypointQuiet = "quiet"
	EntrypointLog   = "log"
)

// Decision is the container the policy approved, in runtime-neutral terms
// where the runtime spec has them.
type Decision struct {
	Image ImageRef
	// ImageEnvWins: the image's ENV wins over the job's environment for
	// every variable it sets, except those not in JobEnvNames (forced by
	// the policy or containerjob, or asked for with --container-env); the
	// launcher drops those from the container's environment once it knows
	// the image's.
	ImageEnvWins bool
	// PyxisEntrypoint is Request.PyxisEntrypoint (launcher/entrypoint.go).
	PyxisEntrypoint string
	JobEnvNames     []string
	// PrivateRegistry: the image's registry is one of private_registries;
	// the launcher runs it only after the registry accepts the caller's
	// own credentials for it.
	PrivateRegistry bool
	Pull            string
	Name            string // engine-wide container name, "" for none
	Network         string
	Ports           []Port
	Tty             bool
	Interactive     bool
	ReadOnlyRoot    bool
	ShmSize         int64
	Entrypoint      []string // nil: the image's; empty: none
	Cmd             []string
	// Persist: a named container inside a job lives until the job's
	// epilogue; later steps with the same name run in it.
	Persist bool
	// StepShared: the container is this step's on this node (Name), made
	// by its first task; every task of the step on the node runs in it,
	// and the last one to end removes it (step_containers = "shared").
	StepShared bool
	Hostname   string
	LogDriver  string
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
	// Node is the node counted (its LabelNode): nodes that share one
	// engine each have their own budget. "" counts every container.
	Node string
}

// Applied records which rule allowed, forced or refused an item.
type Applied struct {
	Item   string
	Action string // "allowed", "forced", "refused"
	Rule   Origin
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
	// LabelOutput is "direct" on a container whose command writes to the
	// job's output itself (launcher/handoff.go): the engine has none of it
	// to attach to.
	LabelOutput = "org.containerjob.output"
	// LabelAlloc identifies the allocation a named container was made
	// with (CPUs, memory, devices, GPUs): a step with another may not
	// exec into it.
	LabelAlloc = "org.containerjob.alloc"
	// LabelImageID is the image a named container's decision approved;
	// the container's own image differs once it has been recreated
	// from its committed filesystem (LabelCommitted images).
	LabelImageID = "org.containerjob.image-id"
	// LabelCommitted marks an image containerjob committed from a job's
	// named container to recreate it; the job's epilogue removes it.
	LabelCommitted = "org.containerjob.committed"
	LabelGPUs      = "org.containerjob.gpus"
)

func builtin(rule string) Origin { return Origin{Table: "built-in", Key: rule} }
