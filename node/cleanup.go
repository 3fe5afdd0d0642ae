package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/internal/metrics"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/scheduler"
)

// JobCleanup is what a scheduler hook's cleanup of one job on this node
// did, for the CLI to say; the audit trail has it already.
type JobCleanup struct {
	// Containers are the job's containers on the node that were to go,
	// Failed those of them that could not be removed, and why.
	Containers []launcher.Managed
	Failed     map[string]error
	// EngineDown: the engine could not be reached, nothing was checked.
	EngineDown error
	// Warnings went wrong without failing the hook (pins, marks, records,
	// committed images, metrics).
	Warnings []string
}

// CleanJob removes the job's containers on node, whatever their state: a
// step's own alone when step is set (not the job's named containers,
// which later steps run in), and otherwise with them the job's committed
// images, its image pins, its step records and its mark on the node.
// Another node's containers are not this hook's, even on one engine. Each
// removal is recorded under the hook's name.
func (n *Service) CleanJob(ctx context.Context, trail *audit.Log, hook, sched, job, step, node string) JobCleanup {
	var out JobCleanup
	warn := func(format string, args ...any) { out.Warnings = append(out.Warnings, fmt.Sprintf(format, args...)) }
	if step == "" {
		// The job's image pins on this node go with it, engine or not.
		if err := DropPins(sched, node, job); err != nil {
			warn("removing the job's image pins: %v", err)
		}
	}
	cs, err := launcher.ListManaged(ctx, n.Engine, sched, job)
	if err != nil {
		out.EngineDown = err
		trail.Record(hook, map[string]any{"job": job, "scheduler": sched, "error": err.Error()})
		return out
	}
	cs = slices.DeleteFunc(cs, func(c launcher.Managed) bool { return !c.OnNode(node) })
	if step != "" {
		cs = slices.DeleteFunc(cs, func(c launcher.Managed) bool { return c.Step != step || c.ShortName != "" })
	}
	out.Containers = cs
	errs := launcher.RemoveAll(ctx, n.Engine, cs)
	if step == "" {
		launcher.CleanStale()
		// The job's named containers recreated for a step kept their
		// files in images of the job's; they go with it.
		removed, err := launcher.RemoveCommitted(ctx, n.Engine, sched, job, node)
		if err != nil {
			warn("%v", err)
		}
		for _, id := range removed {
			trail.Record(hook+"-removed", map[string]any{"job": job, "scheduler": sched, "image": id})
		}
	}
	out.Failed = map[string]error{}
	for _, c := range cs {
		rec := map[string]any{"job": job, "step": c.Step, "scheduler": sched, "container": c.ID, "user": c.User, "uid": c.UID, "state": c.State}
		if err := errs[c.ID]; err != nil {
			out.Failed[c.ID] = err
			rec["error"] = err.Error()
		}
		trail.Record(hook+"-removed", rec)
	}
	n.metricsFor(func(w string) { warn("%s", w) }).update(func(s *metrics.State) { s.RemovedBy(hook, len(cs)-len(out.Failed)) })
	if len(out.Failed) > 0 || step != "" {
		return out
	}
	// Clean on this node: its Epilog need not start containerjob for
	// this job again.
	if err := launcher.DropJobMark(sched, job, node); err != nil {
		warn("%v", err)
	}
	if sched == "slurm" {
		if err := scheduler.DropStepRecords(job); err != nil {
			warn("%v", err)
		}
	}
	return out
}
