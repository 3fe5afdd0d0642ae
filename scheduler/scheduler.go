// Package scheduler answers "who is calling, for which job, with which
// allocation on this node". Environment variables are hints at most: every
// fact it reports comes from a source the caller cannot forge.
package scheduler

import (
	"os"
	"strings"
)

// Job is the scheduler context of one launch.
type Job struct {
	Scheduler string // "slurm", "pbs", or "" outside any job
	ID        string
	Step      string
	Dir       string // the job's working directory, unresolved
	Node      string
	Files     []string // scheduler files the step needs inside (batch script)
	Alloc     Allocation
	Cgroup    string // the step's cgroup path (v1 or v2), for cgroup-parent
	// PMIxDirs are the step's PMIx directories on this node (srun
	// --mpi=pmix), checked as root; none for other steps.
	PMIxDirs []string
}

// Node is this host's short name, as schedulers name nodes.
func Node() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	short, _, _ := strings.Cut(h, ".")
	return short
}

// NodeOf is the node a process with this /proc/PID/cgroup content runs
// on: the one its Slurm step's cgroup names (several slurmd per host;
// slurmstepd made the path, root's), else this host.
func NodeOf(procCgroup []byte) string {
	cg, _ := ParseCgroup(procCgroup)
	return cg.NodeOrHost()
}

// NodeOrHost is the node the step's cgroup names, else this host.
func (cg CgroupJob) NodeOrHost() string {
	if cg.Node != "" {
		return cg.Node
	}
	return Node()
}

// Outside is the context of a launch outside any scheduler job: the job
// directory is the caller's working directory.
func Outside(cwd string) Job {
	return Job{Dir: cwd, Node: Node()}
}
