package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/containerjob/containerjob/internal/metrics"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/scheduler"
)

// Collection is what gc found on the node and did, for the CLI to say.
type Collection struct {
	// Doomed are the containers whose job is over (or, outside any job,
	// that have exited), oldest first; Failed those that could not be
	// removed, and why.
	Doomed []launcher.Managed
	Failed map[string]error
	// Kept names the jobs ("slurm/123") whose containers stay because the
	// scheduler could not be asked about them, and why.
	Kept map[string]error
	// CommittedJobs are the jobs ("slurm/123") whose committed images
	// went (or would go), CommittedFailed those whose removal failed.
	CommittedJobs   []string
	CommittedFailed map[string]error
	Warnings        []string
}

// Collect is gc: it removes (unless dryRun) the containers on node whose
// job the scheduler says is over, and containers outside any job once
// they have exited, none younger than grace; then the committed images of
// jobs that are over. A job the scheduler cannot be asked about keeps
// everything: a slurmctld that is restarting must not cost running jobs
// their containers.
func (n *Service) Collect(ctx context.Context, node string, grace time.Duration, dryRun bool) (Collection, error) {
	out := Collection{Failed: map[string]error{}, Kept: map[string]error{}, CommittedFailed: map[string]error{}}
	if !dryRun {
		launcher.CleanStale()
		scheduler.PruneStepRecords(time.Hour, time.Now())
	}
	cs, err := launcher.ListManaged(ctx, n.Engine, "", "")
	if err != nil {
		return out, fmt.Errorf("listing containers: %v", err)
	}
	pol := n.Policy
	s := slurmAt(pol.Settings, node)
	pbs := scheduler.PBS{Qstat: pol.Settings.Qstat, JSON: pol.Settings.QstatFormat == "json", Node: node}
	verdicts := map[string]JobState{}
	verdict := func(sched, job string) JobState {
		key := sched + "/" + job
		v, seen := verdicts[key]
		if !seen {
			v = JobVerdict(ctx, s, pbs, sched, job)
			verdicts[key] = v
		}
		return v
	}
	for _, c := range cs {
		if time.Since(c.Created) < grace || !c.OnNode(node) {
			continue
		}
		switch {
		case c.Job == "":
			if c.State != "exited" && c.State != "dead" && c.State != "created" {
				continue
			}
		case c.Scheduler == "slurm" || c.Scheduler == "pbs":
			v := verdict(c.Scheduler, c.Job)
			if v.Unknown != nil {
				out.Kept[c.Scheduler+"/"+c.Job] = v.Unknown
			}
			if v.Running || v.Unknown != nil {
				continue
			}
		default:
			continue
		}
		out.Doomed = append(out.Doomed, c)
	}
	sort.Slice(out.Doomed, func(i, j int) bool { return out.Doomed[i].Created.Before(out.Doomed[j].Created) })
	if !dryRun {
		for id, err := range launcher.RemoveAll(ctx, n.Engine, out.Doomed) {
			if err != nil {
				out.Failed[id] = err
			}
		}
		removed := len(out.Doomed) - len(out.Failed)
		n.metricsFor(func(w string) { out.Warnings = append(out.Warnings, w) }).update(func(s *metrics.State) { s.RemovedBy("gc", removed) })
	}
	n.collectCommitted(ctx, &out, node, grace, dryRun, verdict)
	return out, nil
}

// collectCommitted removes the images a job's recreated named containers
// left, where its epilogue could not remove them: once the job is over.
func (n *Service) collectCommitted(ctx context.Context, out *Collection, node string, grace time.Duration, dryRun bool, verdict func(sched, job string) JobState) {
	committed, err := launcher.ListCommitted(ctx, n.Engine, node)
	if err != nil {
		out.Warnings = append(out.Warnings, fmt.Sprintf("listing committed images: %v", err))
	}
	for _, img := range committed {
		key := img.Scheduler + "/" + img.Job
		if slices.Contains(out.CommittedJobs, key) || time.Since(img.Created) < grace || (img.Scheduler != "slurm" && img.Scheduler != "pbs") || img.Job == "" {
			continue
		}
		if v := verdict(img.Scheduler, img.Job); v.Running || v.Unknown != nil {
			continue
		}
		out.CommittedJobs = append(out.CommittedJobs, key)
		if dryRun {
			continue
		}
		if _, err := launcher.RemoveCommitted(ctx, n.Engine, img.Scheduler, img.Job, node); err != nil {
			out.CommittedFailed[key] = err
		}
	}
}

// JobState is what gc learned of a job: running here, over, or unknown
// (the scheduler could not be asked). Only "over" lets gc remove.
type JobState struct {
	Running bool
	Unknown error
}

// JobVerdict asks the scheduler about a job. A job it no longer knows, or
// knows as not running on this node, is over; any failure to ask is
// unknown, never taken for "over".
func JobVerdict(ctx context.Context, s scheduler.Slurm, pbs scheduler.PBS, sched, job string) JobState {
	var running bool
	var err error
	if sched == "slurm" {
		var sj scheduler.SlurmJob
		sj, err = s.ShowJob(ctx, job)
		_, here := sj.Nodes[s.Node]
		running = sj.State == "RUNNING" && (here || len(sj.Nodes) == 0)
	} else {
		var pj scheduler.PBSJob
		pj, err = pbs.ShowJob(ctx, job)
		running = pj.State == "R" && slices.Contains(pj.Hosts, pbs.Node)
	}
	switch {
	case errors.Is(err, scheduler.ErrNoSuchJob):
		return JobState{}
	case err != nil:
		return JobState{Unknown: err}
	}
	return JobState{Running: running}
}
