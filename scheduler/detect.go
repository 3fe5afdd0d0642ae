package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/identity"
)

// Config is what Detect needs from the site: where the scheduler's tools
// and files are, and how GPUs are to be named. The launch fills it from
// the policy's settings; scheduler does not know the policy.
type Config struct {
	Scontrol       string // e.g. /usr/bin/scontrol
	SlurmConf      string // SLURM_CONF for Slurm's tools, "" for the default
	SlurmdSpoolDir string // where slurmd keeps batch scripts (%n: the node)
	TmpFS          string // slurm.conf's TmpFS (%n: the node), "" for /tmp
	Qstat          string // PBS's qstat
	QstatJSON      bool   // qstat -F json (OpenPBS, PBS Pro); false: Torque's text
	// GPUUUIDs: name each GPU by its UUID from the NVIDIA driver's own
	// records (gpus_mode "nvidia"). A GPU whose UUID cannot be read fails
	// detection: an index could name another job's GPU.
	GPUUUIDs bool
	// CDISpecDirs: name each GPU by the CDI spec's device that brings its
	// device file (gpus_mode "cdi"); nil otherwise.
	CDISpecDirs []string
	// Proc is procfs's root, "/proc" (tests pass recorded files).
	Proc string
}

// Caller is who asks, as identity established it: only the uid and the
// user name are compared with the scheduler's records.
type Caller struct {
	UID  uint32
	User string
}

// JobError is a job context that could not be verified: refused like a
// policy refusal, since the request cannot be attributed.
type JobError struct{ Msg string }

func (e *JobError) Error() string { return "job context refused: " + e.Msg }

// Detect finds the scheduler job the caller runs in, from the kernel's
// cgroup of this process (inherited from the job step through sudo) and
// the scheduler's own records. jobEnv, the job's environment as the caller
// passed it, gives hints only (SLURM_JOB_ID, PBS_JOBID). Outside a job the
// caller's own confinement still holds: the CPU affinity they run with
// (taskset) and their cgroup's memory limit (a login node's per-user
// slice) become the container's, and the job directory is cwd.
func Detect(ctx context.Context, cfg Config, caller Caller, jobEnv []string, cwd string) (Job, error) {
	cgroups, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Job{}, fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	hint := identity.EnvValue(jobEnv, "SLURM_JOB_ID")
	cg, inSlurm := ParseCgroup(cgroups)
	var job Job
	switch {
	case inSlurm:
		if err := trustCgroupPath(cg); err != nil {
			return Job{}, &JobError{err.Error()}
		}
		s := Slurm{Scontrol: cfg.Scontrol, SlurmConf: cfg.SlurmConf, Node: cg.NodeOrHost(), RecordDir: StepRecordDir}
		var sj SlurmJob
		if job, sj, err = s.VerifyStep(ctx, caller.UID, cg, hint); err != nil {
			return Job{}, &JobError{err.Error()}
		}
		if job.Alloc, err = s.Allocation(sj, cgroups); err != nil {
			return Job{}, &JobError{"the job's allocation on this node cannot be read: " + err.Error()}
		}
	case hint != "":
		return Job{}, &JobError{fmt.Sprintf("SLURM_JOB_ID=%q is set, but this process is not in a Slurm job step on this node; run it with srun inside the job", hint)}
	default:
		pbsHint := identity.EnvValue(jobEnv, "PBS_JOBID")
		if _, inPBSCgroup := PBSCgroupJob(cgroups); pbsHint != "" || inPBSCgroup {
			if job, err = detectPBS(ctx, cfg, caller, pbsHint, cgroups); err != nil {
				return Job{}, &JobError{err.Error()}
			}
		} else {
			job = Outside(cwd)
			if job.Alloc.CPUs, err = CPUsFromAffinity(); err != nil {
				return job, fmt.Errorf("reading the caller's CPU affinity: %w", err)
			}
			job.Alloc.MemoryBytes = MemoryLimit(cgroups, "/sys/fs/cgroup")
		}
	}
	if len(job.Alloc.GPUs) > 0 && cfg.GPUUUIDs {
		if err := nameGPUs(job.Alloc.GPUs, cfg.Proc); err != nil {
			return Job{}, err
		}
	}
	if len(job.Alloc.GPUs) > 0 && cfg.CDISpecDirs != nil {
		if err := nameCDI(job.Alloc.GPUs, cfg.CDISpecDirs); err != nil {
			return Job{}, err
		}
	}
	if job.Scheduler == "slurm" {
		if job.PMIxDirs, err = PMIxDirs(job, cfg.SlurmdSpoolDir, cfg.TmpFS, caller.UID); err != nil {
			return Job{}, &JobError{err.Error()}
		}
	}
	return job, nil
}

// detectPBS verifies a PBS job the same way: qstat's record, and the
// kernel's word that the caller is inside the job (its cgroup or session).
func detectPBS(ctx context.Context, cfg Config, caller Caller, hint string, cgroups []byte) (Job, error) {
	p := PBS{Qstat: cfg.Qstat, JSON: cfg.QstatJSON, Node: Node()}
	sid, err := unix.Getsid(0)
	if err != nil {
		return Job{}, err
	}
	job, _, err := p.VerifyPBS(ctx, caller.User, hint, cgroups, sid)
	if err != nil {
		return Job{}, err
	}
	if job.Alloc.CPUs, err = CPUsFromAffinity(); err != nil {
		return Job{}, err
	}
	job.Alloc.MemoryBytes = MemoryLimit(cgroups, "/sys/fs/cgroup")
	return job, nil
}

// nameGPUs sets each GPU's UUID from the driver's record of that very
// device minor, or fails naming what the admin checks.
func nameGPUs(gpus []GPU, proc string) error {
	if proc == "" {
		proc = "/proc"
	}
	uuids, err := NvidiaUUIDs(proc)
	if err != nil {
		return hint.Errorf(`the admin checks the NVIDIA driver on this node, or sets gpus_mode = "devices" or "cdi"`, "gpus_mode \"nvidia\" names GPUs by UUID, and %w", err)
	}
	for i, g := range gpus {
		u, ok := uuids[g.Minor]
		if !ok {
			return hint.Errorf("the admin checks gres.conf against /proc/driver/nvidia/gpus", "gpus_mode \"nvidia\": the NVIDIA driver has no GPU with device minor %d (%s, the job's)", g.Minor, g.Device)
		}
		gpus[i].UUID = u
	}
	return nil
}

// BatchScript is where slurmd keeps the batch script of a verified job's
// batch step, "" for any other step; it is mounted read-only so the script
// can run in the image.
func BatchScript(job Job, spoolDir string) string {
	if job.Scheduler != "slurm" || job.Step != "batch" {
		return ""
	}
	n, err := strconv.ParseUint(job.ID, 10, 32)
	if err != nil {
		return ""
	}
	return filepath.Join(SpoolDir(spoolDir, job.Node), fmt.Sprintf("job%05d", n), "slurm_script")
}

// PBSJobScript is where OpenPBS's MOM keeps a job's script, which the job's
// shell runs as `/bin/sh PBS_HOME/mom_priv/jobs/ID.SC`: a file of the job
// that a container running the job (the PBS hook) needs at that path.
func PBSJobScript(job Job, pbsHome string) string {
	if job.Scheduler != "pbs" || pbsHome == "" || job.ID == "" || strings.ContainsAny(job.ID, "/") || strings.Trim(job.ID, ".") == "" {
		return ""
	}
	return filepath.Join(pbsHome, "mom_priv", "jobs", job.ID+".SC")
}

// PBSHome is PBS_HOME from /etc/pbs.conf (root's; PBS's own tools read it
// the same way), or PBS's default.
func PBSHome(conf []byte) string {
	home := "/var/spool/pbs"
	for _, l := range strings.Split(string(conf), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "PBS_HOME="); ok && filepath.IsAbs(v) && filepath.Clean(v) == v {
			home = v
		}
	}
	return home
}

// SpoolDir is slurmd's spool directory for node: slurm.conf's
// SlurmdSpoolDir with %n (the node's name, for several slurmd on one
// host) expanded.
func SpoolDir(conf, node string) string { return strings.ReplaceAll(conf, "%n", node) }

// PMIxDirs are the directories that Slurm's mpi/pmix plugin makes for a
// step on this node: SlurmdSpoolDir/pmix.JOB.STEP (the server's, where
// PMIX_SERVER_TMPDIR points) and TmpFS/spmix_appdir_UID_JOB.STEP (the
// clients' PMIX_TMPDIR, where Open MPI puts its session directory). The
// step's tasks need both at their paths; none when the step has no PMIx.
// They are found from the verified job and step, never from the task's
// environment, and checked as root: real directories (no symlink on the
// way below the configured roots), owned by root or the job's owner.
func PMIxDirs(job Job, spoolDir, tmpFS string, owner uint32) ([]string, error) {
	if job.Scheduler != "slurm" {
		return nil, nil
	}
	if _, err := strconv.ParseUint(job.ID, 10, 32); err != nil {
		return nil, nil
	}
	if _, err := strconv.ParseUint(job.Step, 10, 32); err != nil {
		return nil, nil // batch, extern, interactive: no MPI step
	}
	if tmpFS == "" {
		tmpFS = "/tmp"
	}
	server := filepath.Join(SpoolDir(spoolDir, job.Node), "pmix."+job.ID+"."+job.Step)
	app := filepath.Join(SpoolDir(tmpFS, job.Node), fmt.Sprintf("spmix_appdir_%d_%s.%s", owner, job.ID, job.Step))
	ok, err := stepDir(server, owner)
	if err != nil || !ok {
		return nil, err
	}
	dirs := []string{server}
	if ok, err := stepDir(app, owner); err != nil {
		return nil, err
	} else if ok {
		dirs = append(dirs, app)
	}
	return dirs, nil
}

// stepDir checks one of a step's PMIx directories: absent (false), or a
// directory of root's or owner's that resolves to itself.
func stepDir(dir string, owner uint32) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return false, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false, fmt.Errorf("%s is not a directory; the step's PMIx directory cannot be bound", dir)
	}
	if st.Uid != 0 && st.Uid != owner {
		return false, fmt.Errorf("%s belongs to uid %d, neither root nor the job's owner", dir, st.Uid)
	}
	if real, err := filepath.EvalSymlinks(dir); err != nil || real != filepath.Clean(dir) {
		return false, fmt.Errorf("%s does not resolve to itself; the step's PMIx directory cannot be bound", dir)
	}
	return true, nil
}

// trustCgroupPath checks what a job claimed from the kernel's cgroup path
// rests on, on cgroup v2, where systemd delegates subtrees to users: the
// job's directories are slurmstepd's (root's), not a lookalike tree, and
// this process is in the very cgroup the path names as the node's
// cgroup2 mount shows it, which a path read in a cgroup namespace of the
// caller's making (relative to a root they chose) is not.
func trustCgroupPath(cg CgroupJob) error {
	if !cg.V2 {
		return nil
	}
	if err := VerifyV2Owner(cg, "/sys/fs/cgroup", DirOwner); err != nil {
		return err
	}
	return InCgroup("/sys/fs/cgroup", cg.Path, os.Getpid())
}

// InCgroup proves that pid is a member of the cgroup at path under the
// cgroup2 mount root.
func InCgroup(root, path string, pid int) error {
	data, err := os.ReadFile(filepath.Join(root, path, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("the calling process's cgroup %s cannot be read: %w", path, err)
	}
	want := strconv.Itoa(pid)
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == want {
			return nil
		}
	}
	return fmt.Errorf("this process is not in the cgroup %s its /proc/self/cgroup names (a cgroup namespace of its own?)", path)
}
