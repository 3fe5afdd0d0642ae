package node

import (
	"fmt"
	"os"
	"slices"

	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// resolveRequest completes req for the verified job: the job's environment
// and files, and every host path in it resolved as the caller (symlinks
// followed with the caller's rights, never root's): the working directory,
// the job directory, home, each mount source, the opt-outs, and the
// answer to the policy's default mounts.
func resolveRequest(req *policy.Request, job *scheduler.Job, caller *policy.Caller, pol *policy.Policy, in Input) error {
	if job.ID != "" {
		req.JobEnv = in.JobEnv
	}
	if script := scheduler.BatchScript(*job, pol.Settings.SlurmdSpoolDir); script != "" && len(req.Cmd) > 0 && req.Cmd[0] == script {
		job.Files = append(job.Files, script)
	}
	// The PBS hook runs a job's shell in the image with the job's stdin,
	// on which OpenPBS's MOM sends the path of the job's script
	// (PBS_HOME/mom_priv/jobs/ID.SC, 23.06): the container needs that
	// file of the job at that path.
	if job.Scheduler == "pbs" && req.Interactive {
		conf, _ := os.ReadFile("/etc/pbs.conf")
		if script := scheduler.PBSJobScript(*job, scheduler.PBSHome(conf)); script != "" {
			if _, err := os.Stat(script); err == nil {
				job.Files = append(job.Files, script)
			}
		}
	}
	cwd := in.Cwd
	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	return userfs.As(id, func() error {
		real, err := userfs.Resolve(cwd, "/")
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		req.Cwd = real
		if job.Dir == "" {
			job.Dir = real
		} else if job.Dir, err = userfs.Resolve(job.Dir, "/"); err != nil {
			return fmt.Errorf("job directory: %w", err)
		}
		if h, err := userfs.Resolve(caller.Home, "/"); err == nil {
			caller.Home = h
		}
		for i, m := range req.Mounts {
			src, err := userfs.Resolve(m.Given, cwd)
			if err != nil {
				return err
			}
			req.Mounts[i].Source = src
		}
		// Opt-outs name paths as the user sees them; the defaults are
		// expanded from resolved paths (home may be a symlink).
		for i, p := range req.NoDefaultMounts {
			if real, err := userfs.Resolve(p, cwd); err == nil && p != "all" {
				req.NoDefaultMounts[i] = real
			}
		}
		// The policy lists the default mounts; each is resolved here, and
		// one the caller cannot reach (no scratch directory on this node)
		// is answered as absent, left out rather than created by the engine.
		req.DefaultMounts = pol.DefaultMounts(*caller, policy.Job{Dir: job.Dir, ID: job.ID})
		for i, dm := range req.DefaultMounts {
			if src, err := userfs.Resolve(dm.Path, "/"); err == nil {
				req.DefaultMounts[i].Source = src
			}
		}
		if in.MountHome {
			addHome(req, caller.Home)
		}
		return nil
	})
}

// addHome is --mount-home: a no-op where a default mount (not opted out
// of) shows home already, as pyxis treats a home enroot mounts; else a
// mount the policy judges like any -v.
func addHome(req *policy.Request, home string) {
	shown := slices.ContainsFunc(req.DefaultMounts, func(m policy.DefaultMount) bool {
		return m.Path == home && m.Source != "" && !slices.Contains(req.NoDefaultMounts, m.Path) && !slices.Contains(req.NoDefaultMounts, "all")
	})
	if shown {
		return
	}
	if !slices.Contains(req.Flags, "volume") {
		req.Flags = append(req.Flags, "volume")
	}
	req.Mounts = append(req.Mounts, policy.MountRequest{Given: home, Source: home, Target: home})
}
