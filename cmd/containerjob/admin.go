package main

import (
	"context"
	"fmt"
	"log/syslog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// requireRoot: the scheduler hooks act on every user's containers.
func requireRoot(name string) error {
	inv, _, err := currentInvocation()
	if err != nil {
		return err
	}
	if inv != asRoot {
		return fmt.Errorf("%s is run by the scheduler as root, not by users", name)
	}
	return nil
}

// adminPolicy loads the policy for a root-only command.
func adminPolicy(flag string) (*policy.Policy, error) {
	path, err := policyPathFor(asRoot, flag)
	if err != nil {
		return nil, err
	}
	return loadPolicy(path)
}

// jobFromHookEnv is the job id a scheduler hook was started for. The hook
// runs as root, started by slurmd or pbs_mom, so its environment is theirs.
func jobFromHookEnv(sched string) string {
	switch sched {
	case "slurm":
		return os.Getenv("SLURM_JOB_ID")
	case "pbs":
		return os.Getenv("PBS_JOBID")
	}
	return ""
}

func newCleanupCmd(use, short string, prolog bool) *cobra.Command {
	var sched, job, step, nodeName, policyPath string
	var quiet bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `

Run by the scheduler as root (slurm.conf Prolog=/Epilog=, or the PBS hook):
it removes every container labelled with the job on this node, whatever its
state. Safe to run twice. When the engine cannot be reached it reports that
and exits 0 (nothing is known to be left); it exits 1 only when a container
could not be removed.`,
		Example: `  # slurm.conf
  Epilog=/usr/local/libexec/containerjob/slurm-epilog
  # by hand, for job 1234
  containerjob epilog --scheduler slurm --job 1234`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(cmd.Name()); err != nil {
				return err
			}
			if sched != "slurm" && sched != "pbs" {
				return usagef("--scheduler %q is not slurm or pbs", sched)
			}
			if job == "" {
				job = jobFromHookEnv(sched)
			}
			if job == "" {
				return usagef("no job id: pass --job, or run from the scheduler's hook environment")
			}
			// An admin's mistake in the policy (a typo, a wrong mode, a
			// file missing mid-edit) must not fail this hook: Slurm would
			// drain the node, and every node with it. Cleaning up needs only
			// the engine's address, so the hook goes on with the built-in
			// settings, says so, and exits 0; the job's container steps fail
			// instead, each with the policy's own error line.
			pol, err := adminPolicy(policyPath)
			if err != nil {
				pol = policy.BuiltinSettings()
				msg := fmt.Sprintf("%s for job %s: the policy cannot be used (%v); cleaning up with the built-in engine address %s", cmd.Name(), job, err, pol.Settings.DockerHost)
				warningf("%s", msg)
				toSyslog(syslog.LOG_WARNING, msg)
			}
			n, nerr := nodeFor(pol)
			if nerr != nil {
				return nerr
			}
			defer n.Close()
			trail, terr := n.Trail()
			if terr != nil {
				warningf("%s for job %s: %v; cleaning up without an audit trail", cmd.Name(), job, terr)
			}
			if err != nil {
				trail.Record(cmd.Name()+"-policy-unusable", map[string]any{"job": job, "scheduler": sched, "error": err.Error()})
			}
			cerr := cleanupJob(cmd, n, trail, sched, job, step, node.ForHook(nodeName), quiet, cmd.Name())
			if prolog && err == nil && sched == "slurm" {
				prefetchImage(n, trail, job, node.ForHook(nodeName))
			}
			return cerr
		},
	}
	cmd.Flags().StringVar(&step, "step", "", "only the containers this step of the job created, named ones excepted (the SPANK plugin, at the step's end)")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "print only errors")
	cmd.Flags().MarkHidden("step")
	cmd.Flags().MarkHidden("quiet")
	cmd.Flags().StringVar(&sched, "scheduler", "slurm", "slurm or pbs")
	cmd.Flags().StringVar(&job, "job", "", "job id (default: from the hook's environment)")
	cmd.Flags().StringVar(&nodeName, "node", "", "the node whose containers to remove (default: SLURMD_NODENAME from the hook's environment, else this host's name)")
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file")
	return cmd
}

func cleanupJob(cmd *cobra.Command, n *node.Service, trail *node.Trail, sched, job, step, nodeName string, quiet bool, hook string) error {
	res := n.CleanJob(context.Background(), trail, hook, sched, job, step, nodeName)
	for _, w := range res.Warnings {
		warningf("%s for job %s: %s", hook, job, w)
	}
	if res.EngineDown != nil {
		warningf("%s for job %s: the engine cannot be reached (%v); nothing was checked", hook, job, res.EngineDown)
		return nil
	}
	for _, c := range res.Containers {
		if err := res.Failed[c.ID]; err != nil {
			errorf("%s for job %s: %v", hook, job, err)
		} else if !quiet {
			fmt.Fprintf(cmd.ErrOrStderr(), "containerjob: %s: removed container %.12s (%s, user %s, was %s)\n", hook, c.ID, c.Name, c.User, c.State)
		}
	}
	if len(res.Failed) > 0 {
		return exitStatus(1)
	}
	return nil
}

func newGCCmd() *cobra.Command {
	var dryRun, images bool
	var grace time.Duration
	var policyPath, nodeName string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove containers whose job is no longer running on this node",
		Long: `Remove containers whose job is no longer running on this node: the
safety net behind the epilogue, for a cron job or systemd timer. A container
younger than --grace is left alone, so a launch in progress is never hit.
Containers started outside any job are removed once they have exited.
With --images it collects the engine's image store instead (see
image_store_high in containerjob-policy(5)).`,
		Example: `  containerjob gc --dry-run
  containerjob gc --images --dry-run
  # /etc/cron.d/containerjob
  */10 * * * * root ` + selfPath + ` gc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("gc"); err != nil {
				return err
			}
			pol, err := adminPolicy(policyPath)
			if err != nil {
				return err
			}
			n, err := nodeFor(pol)
			if err != nil {
				return err
			}
			defer n.Close()
			ctx := context.Background()
			if images {
				return collectImages(ctx, cmd, n, dryRun)
			}
			res, err := n.Collect(ctx, node.ForHook(nodeName), grace, dryRun)
			if err != nil {
				return err
			}
			for _, key := range slices.Sorted(maps.Keys(res.Kept)) {
				sched, job, _ := strings.Cut(key, "/")
				warningf("gc: keeping the containers of %s job %s: %v", sched, job, res.Kept[key])
			}
			verb := "removing"
			if dryRun {
				verb = "would remove"
			}
			for _, c := range res.Doomed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %.12s job=%q user=%s state=%s created=%s\n", verb, c.ID, c.Job, c.User, c.State, c.Created.Format(time.RFC3339))
			}
			for _, c := range res.Doomed {
				if err := res.Failed[c.ID]; err != nil {
					errorf("gc: %.12s: %v", c.ID, err)
				}
			}
			for _, key := range res.CommittedJobs {
				sched, job, _ := strings.Cut(key, "/")
				fmt.Fprintf(cmd.OutOrStdout(), "%s the committed images of %s job %s\n", verb, sched, job)
				if err := res.CommittedFailed[key]; err != nil {
					errorf("gc: %v", err)
				}
			}
			for _, w := range res.Warnings {
				warningf("gc: %s", w)
			}
			if len(res.Failed)+len(res.CommittedFailed) > 0 {
				return exitStatus(1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be removed")
	cmd.Flags().BoolVar(&images, "images", false, "collect the image store instead: above image_store_high, remove images containerjob pulled that no container uses, least recently used first, until below image_store_low")
	cmd.Flags().DurationVar(&grace, "grace", 5*time.Minute, "leave containers younger than this alone")
	cmd.Flags().StringVar(&nodeName, "node", "", "the node whose containers to judge (default: this host's name; nodes sharing an engine each run their own gc)")
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file")
	return cmd
}

// collectImages is gc --images: one line per image removed (the Node
// records each).
func collectImages(ctx context.Context, cmd *cobra.Command, n *node.Service, dryRun bool) error {
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	_, warnings, err := n.CollectImages(ctx, dryRun, func(r node.ImageRemoval) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s %.19s %s last used %s; engine data now %d of %d MiB\n", verb, r.ID, r.Ref, r.LastUse.Format(time.RFC3339), r.Used>>20, r.Total>>20)
	})
	if err != nil {
		return err
	}
	for _, w := range warnings {
		warningf("gc --images: %s", w)
	}
	return nil
}

// toSyslog tells the node's log (authpriv), where a scheduler hook's words
// outlive the hook; nothing when there is no syslog.
func toSyslog(prio syslog.Priority, msg string) {
	if w, err := syslog.New(syslog.LOG_AUTHPRIV|prio, "containerjob"); err == nil {
		w.Write([]byte(msg))
		w.Close()
	}
}

// prefetchImage is the Slurm prolog's pull of the job's image, when the
// SPANK plugin handed it one (node.PrefetchForJob); it never fails the
// prolog, and says in the node's log why it did not prefetch.
func prefetchImage(n *node.Service, trail *node.Trail, job, nodeName string) {
	image := os.Getenv(node.PrefetchEnv)
	if image == "" {
		return
	}
	// slurmd gives the Prolog the job's owner beside its id; a job named
	// by hand (--job) is looked up.
	owner := ""
	if job == os.Getenv("SLURM_JOB_ID") {
		owner = os.Getenv("SLURM_JOB_UID")
	}
	if err := n.PrefetchForJob(context.Background(), trail, job, nodeName, image, owner); err != nil {
		toSyslog(syslog.LOG_INFO, fmt.Sprintf("prolog for job %s: not prefetching %q: %v", job, image, err))
	}
}
