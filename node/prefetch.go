package node

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// PrefetchEnv is where the Slurm prolog finds the job's image: the SPANK
// plugin sets it, from sbatch's or srun's --container-image, in the job
// control environment, which slurmd gives the prolog with a SPANK_ prefix.
// The user's own words, judged for the job's owner like any request.
const PrefetchEnv = "SPANK_CONTAINERJOB_IMAGE"

// PrefetchTimeout bounds a prolog's pull: a slow registry must not hold the
// node's prolog until Slurm gives up on it (and drains the node).
var PrefetchTimeout = 10 * time.Minute

// Prefetch makes a job's image available on this node before its first
// step, as its owner could (images_allow, the pull mode, the owner's own
// credentials, private registries) and pins it for the job (the step's
// launches then run that digest). It returns the pinned reference. The
// caller is the job's owner as Slurm records it; the prolog never fails on
// what this returns.
func Prefetch(ctx context.Context, n *Service, caller policy.Caller, job scheduler.Job, image string) (string, error) {
	eng, pol := n.Engine, n.Policy
	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	auth := CallerCredentials(id, caller.Home)
	ctx, cancel := context.WithTimeout(ctx, PrefetchTimeout)
	defer cancel()
	ref, _, err := pol.DecidePull(caller, image, DigestTags(ctx, eng, pol, caller, image, nil, "", false, auth))
	if err != nil {
		return "", err
	}
	req := policy.Request{Image: ref.String()}
	pinning, err := pinImage(job, &req)
	if err != nil {
		return "", err
	}
	pinned, err := policy.NormalizeImage(req.Image)
	if err != nil {
		return "", err
	}
	if pinned.String() != ref.String() {
		// Pinned already (a requeued job's prolog runs after its pins
		// were dropped, so this is another prolog of the same run).
		return pinned.String(), nil
	}
	// The prolog fetches what is missing, never refreshes: an image the
	// node has is taken without the pull lock, which a pull of it by
	// another launch may hold for long.
	d := &policy.Decision{Image: ref, Pull: "missing", PrivateRegistry: pol.PrivateRegistry(ref)}
	m := nodeMetrics{dir: pol.Settings.MetricsDir}
	img, err := launcher.Resolve(ctx, eng, d, launcher.Options{
		PinnedImage: pinning.PinnedID, ImageReady: pinning.Ready,
		RegistryAuth: auth,
		EngineSocket: pol.Settings.EngineSocket(),
		Notify: func(n launcher.Notice) {
			if n.Kind == launcher.NoticePulled {
				m.pull(n.Bytes)
			}
		},
	})
	if err != nil {
		return "", err
	}
	if p := PinOf(ref, img); p.Digest != "" {
		return p.Digest, nil
	}
	return fmt.Sprintf("%s (%.19s)", ref, img.ID), nil
}

// PrefetchForJob is the Slurm Prolog's pull of the job's image (the
// --container-image the SPANK plugin hands to the Prolog), for the job's
// owner, pinned for the job on this node. owner is the owner's uid as
// slurmd gave it to the Prolog (SLURM_JOB_UID, beside SLURM_JOB_ID in the
// environment slurmd builds for it: no user word reaches either); "" asks
// Slurm for the job's record instead (on Slurm 22.05 a failed scontrol
// --json and a squeue --json, about 50 ms of every image job's start).
// What it did is in the audit trail; it returns why it did not prefetch,
// for the node's log, and never fails the Prolog: the job's first step
// pulls for itself whatever this could not.
func (n *Service) PrefetchForJob(ctx context.Context, trail *audit.Log, job, node, image, owner string) error {
	rec := map[string]any{"job": job, "node": node, "image_requested": image}
	fail := func(err error) error {
		rec["error"] = err.Error()
		trail.Record("prefetch-failed", rec)
		return err
	}
	uid, err := jobOwner(ctx, slurmAt(n.Policy.Settings, node), job, owner)
	if err != nil {
		return fail(err)
	}
	u, err := identity.System.LookupID(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return fail(fmt.Errorf("the job's owner, uid %d: %w", uid, err))
	}
	caller, err := PolicyCallerOf(u)
	if err != nil {
		return fail(err)
	}
	rec["user"], rec["uid"] = caller.User, caller.UID
	pinned, err := Prefetch(ctx, n, caller, scheduler.Job{Scheduler: "slurm", ID: job, Node: node}, image)
	if err != nil {
		return fail(err)
	}
	rec["image"] = pinned
	trail.Record("prefetched", rec)
	return nil
}

// jobOwner is the uid of job's owner: owner (the Prolog's SLURM_JOB_UID)
// where it is a uid, else Slurm's record of the job.
func jobOwner(ctx context.Context, s jobShower, job, owner string) (uint32, error) {
	if owner != "" {
		uid, err := strconv.ParseUint(owner, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("the Prolog's SLURM_JOB_UID %q is not a uid", owner)
		}
		return uint32(uid), nil
	}
	sj, err := s.ShowJob(ctx, job)
	if err != nil {
		return 0, err
	}
	return sj.UID, nil
}

// jobShower asks the scheduler for a job's record (scheduler.Slurm).
type jobShower interface {
	ShowJob(ctx context.Context, id string) (scheduler.SlurmJob, error)
}
