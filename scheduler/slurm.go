package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
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
}

// Slurm's cgroup layouts:
//
//	v1: /slurm/uid_U/job_J/step_S[/task_T] (or /slurm_NODE/... with several slurmd per host)
//	v2: /system.slice/slurmstepd.scope/job_J/step_S/user/task_T
//
// Slurm 26.05 may name job directories by SLUID (job_<sluid>) unless
// CgroupJobIdPaths=yes; the job component is taken as it is written.
var (
	cgroupV1RE = regexp.MustCompile(`^/slurm(?:_[^/]+)?/uid_(\d+)/job_([0-9A-Za-z]+)/step_([0-9A-Za-z_.]+)(?:/|$)`)
	cgroupV2RE = regexp.MustCompile(`/slurmstepd\.scope/job_([0-9A-Za-z]+)/step_([0-9A-Za-z_.]+)(?:/|$)`)
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
			uid, err := strconv.ParseUint(m[1], 10, 32)
			if err != nil {
				continue
			}
			cj := CgroupJob{UID: uint32(uid), Job: m[2], Step: m[3], Path: path}
			if !found || ctrls == "freezer" {
				best, found = cj, true
			}
			continue
		}
		if parts[0] == "0" && ctrls == "" {
			if m := cgroupV2RE.FindStringSubmatch(path); m != nil && !found {
				best, found = CgroupJob{Job: m[1], Step: m[2], Path: path}, true
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
	// Per node: the allocated CPU ids, memory (MB) and GPU indices.
	Nodes map[string]NodeAlloc
}

// NodeAlloc is the job's allocation on one node.
type NodeAlloc struct {
	CPUIDs string
	MemMB  int64
	GPUs   []int
}

var userIDRE = regexp.MustCompile(`^(.*)\((\d+)\)$`)

// ParseScontrolJob parses `scontrol show job -d --oneliner` output. Values
// never contain spaces except Command, Comment and friends, which are not
// read; node detail records ("Nodes=... CPU_IDs=... Mem=... GRES=...")
// follow the job's own fields.
func ParseScontrolJob(text string) (SlurmJob, error) {
	j := SlurmJob{Nodes: map[string]NodeAlloc{}}
	var curNodes []string
	for _, f := range strings.Fields(text) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "JobId":
			if j.ID == "" {
				j.ID = v
			}
		case "UserId":
			m := userIDRE.FindStringSubmatch(v)
			if m == nil {
				return j, fmt.Errorf("scontrol: unexpected UserId %q", v)
			}
			uid, err := strconv.ParseUint(m[2], 10, 32)
			if err != nil {
				return j, fmt.Errorf("scontrol: unexpected UserId %q", v)
			}
			j.User, j.UID = m[1], uint32(uid)
		case "JobState":
			j.State = v
		case "NodeList":
			j.NodeList = v
		case "WorkDir":
			j.WorkDir = v
		case "BatchHost":
			j.BatchHost = v
		case "Nodes":
			nodes, err := ExpandHostlist(v)
			if err != nil {
				return j, err
			}
			curNodes = nodes
			for _, n := range nodes {
				j.Nodes[n] = NodeAlloc{}
			}
		case "CPU_IDs", "Mem", "GRES":
			for _, n := range curNodes {
				a := j.Nodes[n]
				switch k {
				case "CPU_IDs":
					a.CPUIDs = v
				case "Mem":
					a.MemMB, _ = strconv.ParseInt(v, 10, 64)
				case "GRES":
					a.GPUs = parseGresIdx(v)
				}
				j.Nodes[n] = a
			}
		}
	}
	if j.ID == "" || j.State == "" {
		return j, fmt.Errorf("scontrol: no job record in the output")
	}
	return j, nil
}

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
			return nil, fmt.Errorf("hostlist %q: %v", s, err)
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
}

// ShowJob runs `scontrol show job -d --oneliner ID` with a clean
// environment.
func (s Slurm) ShowJob(ctx context.Context, id string) (SlurmJob, error) {
	if !regexp.MustCompile(`^[0-9]+(_[0-9]+)?$`).MatchString(id) {
		return SlurmJob{}, fmt.Errorf("job id %q is not a Slurm job id", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Scontrol, "show", "job", "-d", "--oneliner", id)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	if s.SlurmConf != "" {
		cmd.Env = append(cmd.Env, "SLURM_CONF="+s.SlurmConf)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return SlurmJob{}, fmt.Errorf("scontrol show job %s failed: %v: %s", id, err, strings.TrimSpace(errb.String()))
	}
	return ParseScontrolJob(out.String())
}

// VerifyStep checks the job that the kernel placed the caller in: it must
// belong to the caller, be running, and include this node. hint is the
// job id the caller's environment claims, if any; a mismatch is refused.
func (s Slurm) VerifyStep(ctx context.Context, uid uint32, cg CgroupJob, hint string) (Job, SlurmJob, error) {
	if cg.UID != 0 && cg.UID != uid {
		return Job{}, SlurmJob{}, fmt.Errorf("the calling process is in the cgroup of uid %d, not the caller's %d", cg.UID, uid)
	}
	if hint != "" && hint != cg.Job {
		return Job{}, SlurmJob{}, fmt.Errorf("SLURM_JOB_ID=%q does not match job %s that the calling process runs in", hint, cg.Job)
	}
	sj, err := s.ShowJob(ctx, cg.Job)
	if err != nil {
		return Job{}, SlurmJob{}, err
	}
	switch {
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

// Allocation reads the job's allocation on this node: CPUs from this
// process's affinity, memory from its cgroup path, GPUs from scontrol's
// indices mapped through gres.conf (next to slurm.conf).
func (s Slurm) Allocation(sj SlurmJob, procCgroup []byte) (Allocation, error) {
	var a Allocation
	var err error
	if a.CPUs, err = CPUsFromAffinity(); err != nil {
		return a, err
	}
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
	a.GPUs, err = GPUDevices(node.GPUs, gres, s.Node)
	return a, err
}
