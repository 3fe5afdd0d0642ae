package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CgroupJob is what the kernel says about the caller: the Slurm job and
// step whose cgroup holds the process. Users cannot move a process into
// another job's cgroup (slurmstepd creates them root-owned), so this is the
// trusted anchor; scontrol then confirms and details it.
type CgroupJob struct {
	UID  uint32
	Job  string
	Step string
	Path string // the cgroup path it was read from
	// Node is the node the path names where slurmd puts it there (several
	// slurmd per host: /slurm_NODE on v1, NODE_slurmstepd.scope on v2);
	// "" where the path does not say.
	Node string
	// V2: read from the unified hierarchy (cgroup v2), whose directories
	// a user may create in a delegated subtree: VerifyV2Owner checks them.
	V2 bool
}

// VerifyV2Owner proves that a v2 job cgroup is slurmstepd's: the scope,
// the job's and the step's directories under root (the cgroup2 mount)
// belong to root. A directory a user made (in a subtree systemd
// delegated to them) belongs to that user. owner returns a directory's
// owning uid (os.Stat's, tests pass their own).
func VerifyV2Owner(cg CgroupJob, root string, owner func(path string) (uint32, error)) error {
	if !cg.V2 {
		return nil
	}
	step := stepCgroup(cg)
	if step == "" {
		return fmt.Errorf("the calling process's cgroup %q names no step", cg.Path)
	}
	job := step[:strings.LastIndex(step, "/")]
	scope := job[:strings.LastIndex(job, "/")]
	for _, dir := range []string{scope, job, step} {
		uid, err := owner(filepath.Join(root, dir))
		if err != nil {
			return fmt.Errorf("the calling process's cgroup %s cannot be checked: %w", dir, err)
		}
		if uid != 0 {
			return fmt.Errorf("the calling process's cgroup %s belongs to uid %d, not root: it is not slurmstepd's", dir, uid)
		}
	}
	return nil
}

// DirOwner is the uid that owns path.
func DirOwner(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Uid, nil
}

// Slurm's cgroup layouts:
//
//	v1: /slurm/uid_U/job_J/step_S[/task_T] (or /slurm_NODE/... with several slurmd per host)
//	v2: /system.slice/slurmstepd.scope/job_J/step_S/user/task_T
//	    (NODE_slurmstepd.scope with several slurmd per host, as Debian builds it)
//
// Slurm 26.05 names a job's v2 directory by its SLUID alone
// (/system.slice/NODE_slurmstepd.scope/s875M97C5QX100/step_0/user/task_0,
// seen on the cgroup v2 lane) unless CgroupJobIdPaths=yes.
var (
	cgroupV1RE = regexp.MustCompile(`^/slurm(?:_([^/]+))?/uid_(\d+)/job_([0-9A-Za-z]+)/step_([0-9A-Za-z_.]+)(?:/|$)`)
	// Anchored: slurmstepd's scope sits under systemd's slices only
	// (system.slice, or the root where slurmd runs without systemd). A
	// user's delegated subtree (user@UID.service, which systemd gives
	// every user on a v2 node) is never a slice, so a lookalike made
	// there does not match; VerifyV2Owner then proves the directories are
	// root's.
	cgroupV2RE = regexp.MustCompile(`^/(?:[^/]+\.slice/)*(?:([^/]+)_)?slurmstepd\.scope/(?:job_([0-9A-Za-z]+)|(s[0-9A-Z]+))/step_([0-9A-Za-z_.]+)(?:/|$)`)
)

// ParseCgroup reads /proc/PID/cgroup content. The freezer controller is
// preferred on v1 (proctrack/cgroup puts every process of the step there).
func ParseCgroup(data []byte) (CgroupJob, bool) {
	var best CgroupJob
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := parts[1], parts[2]
		if m := cgroupV1RE.FindStringSubmatch(path); m != nil {
			uid, err := strconv.ParseUint(m[2], 10, 32)
			if err != nil {
				continue
			}
			cj := CgroupJob{UID: uint32(uid), Job: m[3], Step: m[4], Path: path, Node: m[1]}
			if !found || ctrls == "freezer" {
				best, found = cj, true
			}
			continue
		}
		if parts[0] == "0" && ctrls == "" {
			if m := cgroupV2RE.FindStringSubmatch(path); m != nil && !found {
				best, found = CgroupJob{Job: m[2] + m[3], Step: m[4], Path: path, Node: m[1], V2: true}, true
			}
		}
	}
	return best, found
}

// SlurmJob is what scontrol reports about a job, reduced to what matters.
type SlurmJob struct {
	ID        string
	UID       uint32
	User      string
	State     string
	NodeList  string
	WorkDir   string
	BatchHost string
	// SLUID is the job's Slurm-wide unique id (Slurm >= 26.05; "" before).
	SLUID string
	// Per node: the allocated CPU ids, memory (MB) and GPU indices.
	Nodes map[string]NodeAlloc
}

// NodeAlloc is the job's allocation on one node.
type NodeAlloc struct {
	MemMB int64
	GPUs  []int
}

// ParseJobJSON reads the record of job id from the JSON that
// `scontrol --json show job` (Slurm >= 23.02) or `squeue --json` (22.05,
// which lists every job) prints. Every value is read from its own field,
// so nothing a user chooses (the job's name, comment, output paths, work
// dir) can be taken for another field: the job's owner, state, nodes or
// GPUs. Both encodings Slurm has used are read: 0.0.38/39 (job_state a
// string, job_resources.allocated_nodes) and 0.0.40 and later (job_state a
// list of flags, job_resources.nodes.allocation, numbers possibly wrapped
// as {"set":true,"number":N}).
func ParseJobJSON(data []byte, id string) (SlurmJob, error) {
	var doc struct {
		Errors []struct {
			Error       string `json:"error"`
			Description string `json:"description"`
		} `json:"errors"`
		Jobs []jobJSON `json:"jobs"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return SlurmJob{}, fmt.Errorf("scontrol: the job record is not JSON: %w", err)
	}
	for _, rec := range doc.Jobs {
		jid, ok := rec.JobID.uint()
		if !ok || strconv.FormatUint(jid, 10) != id {
			continue
		}
		return rec.job(id)
	}
	for _, e := range doc.Errors {
		if e.Description != "" || e.Error != "" {
			return SlurmJob{}, fmt.Errorf("scontrol: job %s: %s %s", id, e.Error, e.Description)
		}
	}
	return SlurmJob{}, fmt.Errorf("scontrol: no record of job %s", id)
}

type jobJSON struct {
	JobID      jsonNumber      `json:"job_id"`
	UserID     jsonNumber      `json:"user_id"`
	UserName   string          `json:"user_name"`
	JobState   json.RawMessage `json:"job_state"`
	Nodes      string          `json:"nodes"`
	BatchHost  string          `json:"batch_host"`
	WorkDir    string          `json:"current_working_directory"`
	GresDetail []string        `json:"gres_detail"`
	// Slurm 26.05: the job's SLUID, which names its cgroup directory
	// unless CgroupJobIdPaths=yes.
	StepID struct {
		SLUID string `json:"sluid"`
	} `json:"step_id"`
	Resources struct {
		Nodes          json.RawMessage `json:"nodes"`
		AllocatedNodes []struct {
			Name   string     `json:"nodename"`
			Memory jsonNumber `json:"memory_allocated"`
		} `json:"allocated_nodes"`
	} `json:"job_resources"`
}

// job turns one record into a SlurmJob. gres_detail holds one entry per
// allocated node, in the order of the job's node list.
func (r jobJSON) job(id string) (SlurmJob, error) {
	uid, ok := r.UserID.uint()
	if !ok || uid > 1<<32-1 {
		return SlurmJob{}, fmt.Errorf("scontrol: job %s has no valid user_id", id)
	}
	state, err := jobState(r.JobState)
	if err != nil {
		return SlurmJob{}, fmt.Errorf("scontrol: job %s: %w", id, err)
	}
	j := SlurmJob{ID: id, UID: uint32(uid), User: r.UserName, State: state, NodeList: r.Nodes,
		WorkDir: r.WorkDir, BatchHost: r.BatchHost, SLUID: r.StepID.SLUID, Nodes: map[string]NodeAlloc{}}
	type alloc struct {
		name string
		mem  jsonNumber
	}
	var allocs []alloc
	for _, n := range r.Resources.AllocatedNodes {
		allocs = append(allocs, alloc{n.Name, n.Memory})
	}
	if len(r.Resources.Nodes) > 0 && r.Resources.Nodes[0] == '{' {
		var nodes struct {
			Allocation []struct {
				Name   string `json:"name"`
				Memory struct {
					Allocated jsonNumber `json:"allocated"`
				} `json:"memory"`
			} `json:"allocation"`
		}
		if err := json.Unmarshal(r.Resources.Nodes, &nodes); err != nil {
			return SlurmJob{}, fmt.Errorf("scontrol: job %s: job_resources.nodes: %w", id, err)
		}
		for _, n := range nodes.Allocation {
			allocs = append(allocs, alloc{n.Name, n.Memory.Allocated})
		}
	}
	order, err := ExpandHostlist(r.Nodes)
	if err != nil {
		return SlurmJob{}, err
	}
	if len(allocs) > 0 {
		order = order[:0]
		for _, a := range allocs {
			order = append(order, a.name)
		}
	}
	if len(r.GresDetail) > len(order) {
		return SlurmJob{}, fmt.Errorf("scontrol: job %s lists GRES for %d nodes but has %d", id, len(r.GresDetail), len(order))
	}
	for i, name := range order {
		a := NodeAlloc{}
		if i < len(allocs) {
			if mb, ok := allocs[i].mem.uint(); ok {
				a.MemMB = int64(mb)
			}
		}
		if i < len(r.GresDetail) {
			a.GPUs = parseGresIdx(r.GresDetail[i])
		}
		j.Nodes[name] = a
	}
	return j, nil
}

// jobState reads job_state: "RUNNING", or ["RUNNING", "COMPLETING", ...]
// where the first entry is the base state and the rest are flags; the
// base state is returned.
func jobState(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return s, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 && list[0] != "" {
		return list[0], nil
	}
	return "", fmt.Errorf("job_state %s is not a state", string(raw))
}

// jsonNumber is a number as Slurm prints it: plain, or {"set": true,
// "infinite": false, "number": N} from data_parser 0.0.40 on.
type jsonNumber struct {
	n   uint64
	set bool
}

func (v *jsonNumber) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var plain uint64
	if err := json.Unmarshal(b, &plain); err == nil {
		v.n, v.set = plain, true
		return nil
	}
	var wrapped struct {
		Set      bool   `json:"set"`
		Infinite bool   `json:"infinite"`
		Number   uint64 `json:"number"`
	}
	if err := json.Unmarshal(b, &wrapped); err != nil {
		return fmt.Errorf("%s is not a number", string(b))
	}
	v.n, v.set = wrapped.Number, wrapped.Set && !wrapped.Infinite
	return nil
}

func (v jsonNumber) uint() (uint64, bool) { return v.n, v.set }

var gresGPURE = regexp.MustCompile(`gpu(?::[^:(,]+)?:\d+\(IDX:([0-9,\-]+)\)`)

// parseGresIdx reads "gpu:2(IDX:0-1)" or "gpu:a100:1(IDX:3),gpu:v100:1(IDX:5)".
func parseGresIdx(v string) []int {
	var out []int
	for _, m := range gresGPURE.FindAllStringSubmatch(v, -1) {
		ids, err := expandRanges(m[1])
		if err != nil {
			continue
		}
		for _, s := range ids {
			n, _ := strconv.Atoi(s)
			out = append(out, n)
		}
	}
	return out
}

// ExpandHostlist expands Slurm's "n[01-03,7],login1" notation.
func ExpandHostlist(s string) ([]string, error) {
	var out []string
	for _, part := range splitTopLevel(s) {
		open := strings.IndexByte(part, '[')
		if open < 0 {
			if part != "" {
				out = append(out, part)
			}
			continue
		}
		closeIdx := strings.IndexByte(part, ']')
		if closeIdx < open {
			return nil, fmt.Errorf("hostlist %q is malformed", s)
		}
		prefix, suffix := part[:open], part[closeIdx+1:]
		ids, err := expandRanges(part[open+1 : closeIdx])
		if err != nil {
			return nil, fmt.Errorf("hostlist %q: %w", s, err)
		}
		for _, id := range ids {
			out = append(out, prefix+id+suffix)
		}
	}
	return out, nil
}

func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// expandRanges expands "0-2,5" into ["0","1","2","5"], keeping zero padding.
func expandRanges(r string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(r, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || b < a || b-a > 100000 {
			return nil, fmt.Errorf("range %q is malformed", part)
		}
		width := len(lo)
		for i := a; i <= b; i++ {
			out = append(out, fmt.Sprintf("%0*d", width, i))
		}
	}
	return out, nil
}

// Slurm looks jobs up with scontrol; both paths come from the policy.
type Slurm struct {
	Scontrol  string // e.g. /usr/bin/scontrol
	SlurmConf string // SLURM_CONF for scontrol, "" for Slurm's default
	Node      string // this node's name in Slurm
	// RecordDir keeps the steps' verified records (StepRecordDir); ""
	// asks Slurm for every task.
	RecordDir string
}

// jobIDRE is a Slurm job id (a SLUID is not one).
var jobIDRE = regexp.MustCompile(`^[0-9]+$`)

// ShowJob asks Slurm for the job's record as JSON, with a clean
// environment: `scontrol --json show job -d ID` where scontrol has --json
// (23.02 and later), else `squeue --json` (22.05), from which the job is
// picked by its id.

func (s Slurm) ShowJob(ctx context.Context, id string) (SlurmJob, error) {
	if !jobIDRE.MatchString(id) {
		return SlurmJob{}, fmt.Errorf("job id %q is not a Slurm job id", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, stderr, err := s.command(ctx, s.Scontrol, "--json", "show", "job", "-d", id)
	if err != nil && strings.Contains(stderr, "unrecognized option") {
		squeue := filepath.Join(filepath.Dir(s.Scontrol), "squeue")
		out, stderr, err = s.command(ctx, squeue, "--json")
	}
	if err != nil {
		return SlurmJob{}, goneOrUnreachable(id, err, stderr, ctx.Err() != nil)
	}
	j, err := ParseJobJSON(out, id)
	if err != nil && strings.Contains(err.Error(), "no record of job") {
		return SlurmJob{}, s.confirmGone(ctx, id)
	}
	return j, err
}

// confirmGone asks once more, without --json, when the JSON held no record
// of the job: Slurm 24.11's `scontrol --json show job` exits 0 with an empty
// job list and no error both for a job it does not know and when it could
// not reach slurmctld at all. Only scontrol's own "Invalid job id" (its
// exit status and error line; the record itself is not read) makes the
// job gone; anything else leaves it unknown, and callers that remove
// things keep them.
func (s Slurm) confirmGone(ctx context.Context, id string) error {
	_, stderr, err := s.command(ctx, s.Scontrol, "show", "job", id)
	return goneOrUnreachable(id, err, stderr, ctx.Err() != nil)
}

// goneOrUnreachable reads how a query of scontrol (or, on 22.05, squeue)
// about job id ended: only scontrol's "Invalid job id" makes the job gone.
func goneOrUnreachable(id string, err error, stderr string, timedOut bool) error {
	switch {
	case timedOut:
		return &UnreachableError{fmt.Sprintf("asking Slurm about job %s timed out", id)}
	case err == nil:
		return &UnreachableError{fmt.Sprintf("Slurm's JSON had no record of job %s, but scontrol shows it", id)}
	case strings.Contains(stderr, "Invalid job id"):
		return fmt.Errorf("scontrol: job %s: %w", id, ErrNoSuchJob)
	}
	return &UnreachableError{fmt.Sprintf("asking Slurm about job %s failed: %v: %s", id, err, strings.TrimSpace(stderr))}
}

// ErrNoSuchJob: the scheduler answered and does not know the job (it
// ended long enough ago to have left the server's memory).
var ErrNoSuchJob = errors.New("the scheduler has no such job")

// UnreachableError: Slurm could not be asked, so nothing is known about
// the job; callers that remove things must keep them.
type UnreachableError struct{ msg string }

func (e *UnreachableError) Error() string { return e.msg }

func (s Slurm) command(ctx context.Context, prog string, args ...string) ([]byte, string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	if s.SlurmConf != "" {
		cmd.Env = append(cmd.Env, "SLURM_CONF="+s.SlurmConf)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

// VerifyStep checks the job that the kernel placed the caller in: it must
// belong to the caller, be running, and include this node. hint is the
// job id the caller's environment claims, if any; a mismatch is refused.
func (s Slurm) VerifyStep(ctx context.Context, uid uint32, cg CgroupJob, hint string) (Job, SlurmJob, error) {
	if cg.UID != 0 && cg.UID != uid {
		return Job{}, SlurmJob{}, fmt.Errorf("the calling process is in the cgroup of uid %d, not the caller's %d", cg.UID, uid)
	}
	// Slurm 26.05 names a job's cgroup directory by its SLUID
	// (s2P5M97456T200) unless CgroupJobIdPaths=yes: the job is then
	// the one the caller's SLURM_JOB_ID names, and only if Slurm's own
	// record of it has that very SLUID (the path is root's; the variable
	// is the caller's).
	id, bySLUID := cg.Job, !jobIDRE.MatchString(cg.Job)
	if bySLUID {
		if hint == "" {
			return Job{}, SlurmJob{}, fmt.Errorf("the calling process runs in job %s (named by its SLUID), and SLURM_JOB_ID is not set to say which job that is", cg.Job)
		}
		id = hint
	}
	if hint != "" && hint != id {
		return Job{}, SlurmJob{}, fmt.Errorf("SLURM_JOB_ID=%q does not match job %s that the calling process runs in", hint, cg.Job)
	}
	sj, recorded := loadStepRecord(s.RecordDir, s.Node, id, cg, time.Now())
	if !recorded {
		// The step's tasks start together: one asks, the others wait
		// for its record.
		unlock := lockStepRecord(s.RecordDir, s.Node, id, cg)
		defer unlock()
		if sj, recorded = loadStepRecord(s.RecordDir, s.Node, id, cg, time.Now()); !recorded {
			var err error
			if sj, err = s.ShowJob(ctx, id); err != nil {
				if bySLUID && errors.Is(err, ErrNoSuchJob) {
					return Job{}, SlurmJob{}, fmt.Errorf("SLURM_JOB_ID=%q does not match job %s that the calling process runs in: Slurm has no job %s", hint, cg.Job, hint)
				}
				return Job{}, SlurmJob{}, err
			}
		}
	}
	switch {
	case bySLUID && sj.SLUID != cg.Job:
		return Job{}, sj, fmt.Errorf("SLURM_JOB_ID=%q names job %s, whose SLUID is %q, not %s that the calling process runs in", hint, sj.ID, sj.SLUID, cg.Job)
	case sj.UID != uid:
		return Job{}, sj, fmt.Errorf("job %s belongs to uid %d, not the caller's %d", sj.ID, sj.UID, uid)
	case sj.State != "RUNNING":
		return Job{}, sj, fmt.Errorf("job %s is %s, not RUNNING", sj.ID, sj.State)
	}
	nodes, err := ExpandHostlist(sj.NodeList)
	if err != nil {
		return Job{}, sj, err
	}
	onNode := false
	for _, n := range nodes {
		if n == s.Node {
			onNode = true
		}
	}
	if !onNode {
		return Job{}, sj, fmt.Errorf("node %q is not in job %s's node list %s", s.Node, sj.ID, sj.NodeList)
	}
	if !recorded {
		saveStepRecord(s.RecordDir, s.Node, cg, sj, time.Now())
	}
	return Job{Scheduler: "slurm", ID: sj.ID, Step: cg.Step, Dir: sj.WorkDir, Node: s.Node, Cgroup: stepCgroup(cg)}, sj, nil
}

// stepCgroup trims a task-level cgroup path to the step's.
func stepCgroup(cg CgroupJob) string {
	i := strings.Index(cg.Path, "/step_"+cg.Step)
	if i < 0 {
		return ""
	}
	return cg.Path[:i+len("/step_"+cg.Step)]
}

// Allocation reads the step's allocation on this node: CPUs from this
// process's affinity, memory from its cgroup path, GPUs from scontrol's
// indices mapped through gres.conf (next to slurm.conf), narrowed to those
// the step's device controller lets it open (StepGPUs).
func (s Slurm) Allocation(sj SlurmJob, procCgroup []byte) (Allocation, error) {
	var a Allocation
	var err error
	if a.CPUs, err = CPUsFromAffinity(); err != nil {
		return a, err
	}
	a.StepCPUs = StepCPUs(procCgroup, "/sys/fs/cgroup")
	a.MemoryBytes = MemoryLimit(procCgroup, "/sys/fs/cgroup")
	node := sj.Nodes[s.Node]
	if len(node.GPUs) == 0 {
		return a, nil
	}
	conf := s.SlurmConf
	if conf == "" {
		conf = "/etc/slurm/slurm.conf"
	}
	gres, _ := os.ReadFile(filepath.Join(filepath.Dir(conf), "gres.conf"))
	if a.GPUs, err = GPUDevices(node.GPUs, gres, s.Node); err != nil {
		return a, err
	}
	a.GPUs, err = StepGPUs(a.GPUs, DeviceAccess)
	return a, err
}
