package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

type runFlags struct {
	env         []string
	volumes     []string
	workdir     string
	entrypoint  string
	tty         bool
	interactive bool
	name        string
	readOnly    bool
	shmSize     string
	network     string
	pull        string
	jobEnvFD    int
	dryRun      bool
	timings     bool
	capAdd      []string
	publish     []string
	noDefault   []string
	existing    bool
	localOnly   bool
	mountHome   bool
	stepStdin   bool
	quiet       bool
	// root only
	policyPath string
	asUser     string
}

func newRunCmd() *cobra.Command { return newRunCmdWith(&runFlags{}) }

func newRunCmdWith(f *runFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run a command in a new container, as yourself, under the site's policy",
		Long: `Run a command in a new container as your own uid and gids, with your job
directory mounted and as working directory, under the policy the admins
wrote in /etc/containerjob/policy.toml. Output goes to your stdout and stderr,
signals reach the container, the exit status is the command's, and the
container is removed when it ends. "run" may be omitted.

Flags go before the image; everything after it is the command.`,
		Example: `  containerjob run alpine:3.20 sh -c 'id; pwd'
  srun containerjob alpine:3.20 hostname
  containerjob -v /scratch/$USER/data:/data:ro -e OMP_NUM_THREADS=4 alpine:3.20 ./analyse /data`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMain(cmd, f, args)
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass yours)")
	fl.StringArrayVarP(&f.volumes, "volume", "v", nil, "bind mount a host directory: SRC:DST[:ro]")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint (\"\" clears it)")
	fl.BoolVarP(&f.tty, "tty", "t", false, "allocate a terminal")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "keep stdin open and pass it to the container")
	fl.StringVar(&f.name, "name", "", "name the container (namespaced by your uid and job)")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount the container's root filesystem read-only")
	fl.StringVar(&f.shmSize, "shm-size", "", "size of /dev/shm, e.g. 1g")
	fl.StringVar(&f.network, "network", "", "network: none, bridge, or a name the policy allows")
	fl.StringVar(&f.pull, "pull", "", "pull the image: never, missing or always (as the policy allows)")
	fl.StringArrayVar(&f.capAdd, "cap-add", nil, "add a capability the policy allows (capabilities_allow)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: [IP:]HOSTPORT:CONTAINERPORT[/udp] (IP defaults to 127.0.0.1; ports_allow)")
	fl.StringArrayVar(&f.noDefault, "no-default-mount", nil, "leave out a default mount (mounts_default) by its path, or \"all\"")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the container the policy would create (JSON), create nothing")
	fl.BoolVar(&f.timings, "timings", false, "print how long each phase of the launch took, on one stderr line (for make bench)")
	fl.MarkHidden("timings")
	fl.BoolVar(&f.localOnly, "local-only", false, "use the image on this node only, never pull it (pyxis dockerd://)")
	fl.MarkHidden("local-only")
	fl.BoolVar(&f.mountHome, "mount-home", false, "bind your home directory at its path, unless a default mount already does (pyxis --container-mount-home)")
	fl.MarkHidden("mount-home")
	fl.BoolVar(&f.stepStdin, "step-stdin", false, "pass stdin as srun does, with a terminal when it is one (the SPANK plugin's steps, as pyxis does)")
	fl.MarkHidden("step-stdin")
	fl.BoolVar(&f.quiet, "quiet-refusals", false, "leave refusals the request alone decides to the step's first task on the node (the SPANK plugin's other tasks)")
	fl.MarkHidden("quiet-refusals")
	fl.BoolVar(&f.existing, "existing", false, "run in the job's existing container named by --name, with its image (no IMAGE argument)")
	fl.MarkHidden("existing")
	fl.IntVar(&f.jobEnvFD, "job-env-fd", -1, "internal: descriptor carrying the job's environment")
	fl.MarkHidden("job-env-fd")
	fl.StringVar(&f.policyPath, "policy", "", "policy file (root only)")
	fl.StringVar(&f.asUser, "as-user", "", "run for this user (root only, for scheduler hooks)")
	return cmd
}

// rebuildArgs serialises the parsed flags for the privileged re-execution.
// The -e values are not among them: they travel on jobEnvFD (passedEnv),
// resolved here from the caller's own environment for "-e NAME", because
// sudo resets the environment and argv is world-readable.
func rebuildArgs(fl *pflag.FlagSet, f *runFlags, args []string) ([]string, *passedEnv) {
	out := []string{"run"}
	var pass *passedEnv
	for _, e := range f.env {
		if !strings.Contains(e, "=") {
			v, ok := os.LookupEnv(e)
			if !ok {
				continue
			}
			e = e + "=" + v
		}
		if pass == nil {
			pass = &passedEnv{}
		}
		pass.Env = append(pass.Env, e)
	}
	if inJobHint() {
		if pass == nil {
			pass = &passedEnv{}
		}
		pass.Environ = os.Environ()
	}
	for _, v := range f.volumes {
		out = append(out, "--volume="+v)
	}
	for _, c := range f.capAdd {
		out = append(out, "--cap-add="+c)
	}
	for _, p := range f.publish {
		out = append(out, "--publish="+p)
	}
	for _, p := range f.noDefault {
		out = append(out, "--no-default-mount="+p)
	}
	for _, name := range []string{"workdir", "entrypoint", "name", "shm-size", "network", "pull"} {
		if fl.Changed(name) {
			out = append(out, "--"+name+"="+fl.Lookup(name).Value.String())
		}
	}
	for _, name := range []string{"tty", "interactive", "read-only", "dry-run", "timings", "existing", "local-only", "mount-home", "step-stdin", "quiet-refusals"} {
		if fl.Changed(name) {
			out = append(out, "--"+name+"="+fl.Lookup(name).Value.String())
		}
	}
	out = append(out, "--")
	return append(out, args...), pass
}

func runMain(cmd *cobra.Command, f *runFlags, args []string) error {
	fl := cmd.Flags()
	quietRefusals = f.quiet
	inv, sudoUID, err := currentInvocation()
	if err != nil {
		return err
	}
	if inv == viaSudo && resourceErr != nil {
		return resourceErr
	}
	if inv == asUser {
		if fl.Changed("policy") || fl.Changed("as-user") {
			return usagef("--policy and --as-user are for root only")
		}
		argv, pass := rebuildArgs(fl, f, args)
		return escalate(argv, pass)
	}
	if inv == viaSudo && (fl.Changed("policy") || os.Getenv("CONTAINERJOB_POLICY") != "") {
		return usagef("--policy and CONTAINERJOB_POLICY are for root only")
	}
	var jobEnv []string
	if f.jobEnvFD >= 0 {
		pass, err := readPassedEnv(f.jobEnvFD)
		if err != nil {
			return err
		}
		jobEnv = pass.Environ
		for _, e := range pass.Env {
			if err := fl.Set("env", e); err != nil {
				return err
			}
		}
	}
	clock := &phaseClock{on: f.timings, last: mainStart}
	defer clock.print(os.Stderr)
	caller, err := privilegedCaller(inv, sudoUID, f.asUser)
	if err != nil {
		return err
	}
	clock.mark("identity")

	policyPath := policy.DefaultPath
	if inv == asRoot {
		if v := os.Getenv("CONTAINERJOB_POLICY"); v != "" {
			policyPath = v
		}
		if f.policyPath != "" {
			policyPath = f.policyPath
		}
	}
	pol, err := policy.Load(policyPath)
	if err != nil {
		return err
	}
	clock.mark("policy")
	trail, err := audit.Open(pol.Settings.AuditLog, pol.Settings.AuditSyslog)
	if err != nil {
		return fmt.Errorf("%v; refusing to run without an audit trail", err)
	}
	defer trail.Close()

	if f.existing {
		// A step with --container-name and no image (pyxis): the
		// command runs in the job's container of that name, whose image
		// stands in for the image argument; without one, it is refused,
		// never run on the host.
		if f.name == "" {
			return usagef("--existing needs --name")
		}
		args = append([]string{existingImage}, args...)
	}
	req, job, err := buildRequest(fl, f, args, jobEnv, &caller, pol)
	if err == nil && f.existing {
		req.Image, err = existingNamedImage(pol, caller, job, f.name)
	}
	clock.mark("request")
	record := map[string]any{
		"user": caller.User, "uid": caller.UID, "gid": caller.GID, "invocation": inv.String(),
		"job": job.ID, "step": job.Step, "node": job.Node, "image": req.Image, "command": req.Cmd,
	}
	if err != nil {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		return err
	}
	pjob, gpuIDs, devices, err := policyJob(job, pol.Settings.GPUsMode)
	if err != nil {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		return err
	}
	dec, err := pol.Decide(req, caller, pjob)
	if err != nil {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		return err
	}
	var mounts []string
	for _, m := range dec.Spec.Mounts {
		mounts = append(mounts, m.Source+":"+m.Destination+":"+strings.Join(m.Options, ","))
	}
	record["decision"], record["image"], record["mounts"] = "allowed", dec.Image.String(), mounts
	if err := trail.Record("decision", record); err != nil {
		return fmt.Errorf("%v; refusing to run a container that the audit trail does not record", err)
	}
	clock.mark("decision")

	eng, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		return err
	}
	defer eng.Close()
	// What the guard holds the final request to; a dry run is guarded alike.
	want := guard.Expect{
		UID: caller.UID, GID: caller.GID, Groups: caller.Groups,
		AllowHostNetwork:  dec.Network == "host",
		AllowedCaps:       dec.CapsAllowed,
		AllowedDevices:    devices,
		AllowedGPUIDs:     gpuIDs,
		CgroupParent:      dec.CgroupParent,
		AllowedPorts:      launcher.ApprovedPorts(dec),
		AllowNestedMounts: dec.NestedMounts,
	}
	if f.dryRun {
		return printDryRun(cmd, eng, dec, want)
	}
	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	want.CallerCanAccess = func(path string) error {
		return userfs.As(id, func() error {
			real, err := userfs.Resolve(path, "/")
			if err == nil && real != path {
				err = fmt.Errorf("it now resolves to %q", real)
			}
			return err
		})
	}
	stdio := launcher.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if (f.tty || f.stepStdin) && isTerminal(os.Stdin) {
		stdio.Terminal = os.Stdin
	}
	res, err := launcher.Run(context.Background(), eng, dec, stdio, launcher.Options{
		Caller:       id,
		StopGrace:    time.Duration(pol.Settings.StopGraceSeconds) * time.Second,
		ProbeTimeout: time.Duration(pol.Settings.MountProbeSeconds) * time.Second,
		Guard:        want,
		Phase:        clock.mark,
		EngineSocket: strings.TrimPrefix(pol.Settings.DockerHost, "unix://"),
		Account:      containerAccount(caller),
		Interpreter:  scriptInterpreter(job, pol.Settings, dec.Cmd),
	})
	end := map[string]any{
		"user": caller.User, "uid": caller.UID, "job": job.ID, "node": job.Node,
		"image": dec.Image.String(), "image_id": res.ImageID, "container": res.ContainerID,
	}
	if err != nil {
		end["error"] = err.Error()
		trail.Record("container-failed", end)
		return err
	}
	end["exit_code"] = res.ExitCode
	end["duration_s"] = res.Ended.Sub(res.Started).Seconds()
	if res.Usage.Sampled {
		end["cpu_s"] = res.Usage.CPU.Seconds()
		end["peak_memory_bytes"] = res.Usage.PeakMemory
		if pol.Settings.ReportUsage {
			fmt.Fprintf(os.Stderr, "containerjob: usage: cpu %.2f s, peak memory %.1f MiB, wall %.2f s, exit %d\n",
				res.Usage.CPU.Seconds(), float64(res.Usage.PeakMemory)/(1<<20), res.Ended.Sub(res.Started).Seconds(), res.ExitCode)
		}
	}
	if err := trail.Record("container-end", end); err != nil {
		warningf("the container's end was not recorded: %v", err)
	}
	clock.mark("audit")
	return exitStatus(res.ExitCode)
}

// mainStart is when main's package was initialised: the runtime and every
// imported package are ready, which the bench measures on its own.
var mainStart = time.Now()

// phaseClock records how long each phase of one launch took, for --timings:
// the figures behind docs/benchmarks.md's "inside a launch" table.
type phaseClock struct {
	on    bool
	last  time.Time
	total time.Duration
	parts []string
}

func (c *phaseClock) mark(name string) {
	if !c.on {
		return
	}
	now := time.Now()
	d := now.Sub(c.last)
	c.last, c.total = now, c.total+d
	c.parts = append(c.parts, fmt.Sprintf("%s %.1f", name, float64(d.Microseconds())/1000))
}

func (c *phaseClock) print(w io.Writer) {
	if c.on && len(c.parts) > 0 {
		fmt.Fprintf(w, "containerjob: timings (ms): %s, total %.1f\n", strings.Join(c.parts, ", "), float64(c.total.Microseconds())/1000)
	}
}

// volumeSpec is one -v as written.
type volumeSpec struct {
	given, target string
	ro            bool
}

// requestFromFlags turns the parsed command line into a policy request,
// host paths as written (not yet resolved).
func requestFromFlags(fl *pflag.FlagSet, f *runFlags, args []string) (policy.Request, []volumeSpec, error) {
	req := policy.Request{
		Image:       args[0],
		Cmd:         args[1:],
		Workdir:     f.workdir,
		Tty:         f.tty,
		Interactive: f.interactive,
		Name:        f.name,
		ReadOnly:    f.readOnly,
		Network:     f.network,
		Pull:        f.pull,
		CapAdd:      f.capAdd,
		Publish:     f.publish,
	}
	for _, p := range f.noDefault {
		if p != "all" {
			p = filepath.Clean(p)
		}
		req.NoDefaultMounts = append(req.NoDefaultMounts, p)
	}
	for _, name := range policy.UserFlags {
		if fl.Changed(name) {
			req.Flags = append(req.Flags, name)
		}
	}
	if fl.Changed("entrypoint") {
		req.Entrypoint = &f.entrypoint
	}
	// A Slurm step's tasks read their stdin (srun forwards it to task 0,
	// the others get /dev/null) and, under srun --pty, a terminal: a
	// containerized step does the same, as under pyxis. Not a user flag:
	// nothing of the container's confinement depends on it.
	if f.stepStdin {
		req.Interactive = true
		req.Tty = req.Tty || isTerminal(os.Stdin)
	}
	if f.localOnly {
		if f.pull != "" && f.pull != "never" {
			return req, nil, usagef("--pull %s contradicts the image's dockerd:// (never pull)", f.pull)
		}
		req.Pull = "never"
	}
	for _, e := range f.env {
		if !strings.Contains(e, "=") {
			// Under sudo the unprivileged side already turned NAME into
			// NAME=VALUE; a bare NAME here is root's own variable, or unset.
			v, ok := os.LookupEnv(e)
			if !ok || os.Getenv("SUDO_UID") != "" {
				continue
			}
			e += "=" + v
		}
		req.Env = append(req.Env, e)
	}
	if f.shmSize != "" {
		n, err := units.RAMInBytes(f.shmSize)
		if err != nil {
			return req, nil, usagef("--shm-size %q is not a size such as 64m or 1g", f.shmSize)
		}
		req.ShmSize = n
	}
	var vols []volumeSpec
	for _, v := range f.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return req, nil, usagef("--volume %q is not SRC:DST[:ro]", v)
		}
		src := parts[0]
		if !strings.HasPrefix(src, "/") && !strings.HasPrefix(src, ".") {
			return req, nil, usagef("--volume %q names a volume; only host directories can be mounted, by path", v)
		}
		p := volumeSpec{given: src, target: parts[1]}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				p.ro = true
			case "rw":
			default:
				return req, nil, usagef("--volume %q: option %q is not ro or rw", v, parts[2])
			}
		}
		vols = append(vols, p)
		req.Mounts = append(req.Mounts, policy.MountRequest{Given: src, Source: filepath.Clean(src), Target: p.target, ReadOnly: p.ro})
	}
	return req, vols, nil
}

// buildRequest parses the command line into a policy request and resolves,
// as the caller, every host path in it: the working directory, the job
// directory, home, and each mount source.
func buildRequest(fl *pflag.FlagSet, f *runFlags, args, jobEnv []string, caller *policy.Caller, pol *policy.Policy) (policy.Request, scheduler.Job, error) {
	settings := pol.Settings
	req, vols, err := requestFromFlags(fl, f, args)
	if err != nil {
		return req, scheduler.Job{}, err
	}
	req.Mounts = nil
	cwd, err := unix.Getwd()
	if err != nil {
		return req, scheduler.Job{}, fmt.Errorf("working directory cannot be read: %v", err)
	}
	job, err := detectJob(*caller, jobEnv, cwd, settings)
	if err != nil {
		return req, job, err
	}
	if job.ID != "" {
		req.JobEnv = jobEnv
	}
	if script := batchScript(job, settings); script != "" && len(req.Cmd) > 0 && req.Cmd[0] == script {
		job.Files = append(job.Files, script)
	}

	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	err = userfs.As(id, func() error {
		real, err := userfs.Resolve(cwd, "/")
		if err != nil {
			return fmt.Errorf("working directory: %v", err)
		}
		req.Cwd = real
		if job.Dir == "" {
			job.Dir = real
		} else if job.Dir, err = userfs.Resolve(job.Dir, "/"); err != nil {
			return fmt.Errorf("job directory: %v", err)
		}
		if h, err := userfs.Resolve(caller.Home, "/"); err == nil {
			caller.Home = h
		}
		for _, v := range vols {
			src, err := userfs.Resolve(v.given, cwd)
			if err != nil {
				return err
			}
			req.Mounts = append(req.Mounts, policy.MountRequest{Given: v.given, Source: src, Target: v.target, ReadOnly: v.ro})
		}
		// Opt-outs name paths as the user sees them; the defaults are
		// expanded from resolved paths (home may be a symlink).
		for i, p := range req.NoDefaultMounts {
			if real, err := userfs.Resolve(p, cwd); err == nil && p != "all" {
				req.NoDefaultMounts[i] = real
			}
		}
		// Default mounts the caller cannot reach (no scratch directory on
		// this node) are left out rather than created by the engine.
		for _, dm := range pol.DefaultMounts(*caller, policy.Job{Dir: job.Dir, ID: job.ID}) {
			if src, err := userfs.Resolve(dm.Path, "/"); err == nil {
				req.DefaultMounts = append(req.DefaultMounts, policy.MountRequest{Given: dm.Path, Source: src, Target: dm.Path, ReadOnly: dm.ReadOnly})
			}
		}
		// --mount-home: a no-op where a default mount (not opted out of)
		// shows home already, as pyxis treats a home enroot mounts.
		if f.mountHome && !slices.ContainsFunc(req.DefaultMounts, func(m policy.MountRequest) bool {
			return m.Target == caller.Home && !slices.Contains(req.NoDefaultMounts, m.Target) && !slices.Contains(req.NoDefaultMounts, "all")
		}) {
			if !slices.Contains(req.Flags, "volume") {
				req.Flags = append(req.Flags, "volume")
			}
			req.Mounts = append(req.Mounts, policy.MountRequest{Given: caller.Home, Source: caller.Home, Target: caller.Home})
		}
		return nil
	})
	return req, job, err
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// detectJob finds the scheduler job the caller runs in, from the kernel's
// cgroup of this process (inherited from the job step through sudo) and
// the scheduler's own records. The environment's job id is only a hint.
func detectJob(caller policy.Caller, jobEnv []string, cwd string, settings policy.Settings) (scheduler.Job, error) {
	cgroups, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return scheduler.Job{}, fmt.Errorf("reading /proc/self/cgroup: %v", err)
	}
	hint := envValue(jobEnv, "SLURM_JOB_ID")
	cg, inSlurm := scheduler.ParseCgroup(cgroups)
	if !inSlurm {
		if hint != "" {
			return scheduler.Job{}, &jobError{fmt.Sprintf("SLURM_JOB_ID=%q is set, but this process is not in a Slurm job step on this node; run it with srun inside the job", hint)}
		}
		pbsHint := envValue(jobEnv, "PBS_JOBID")
		if _, inPBSCgroup := scheduler.PBSCgroupJob(cgroups); pbsHint != "" || inPBSCgroup {
			return detectPBSJob(caller, pbsHint, cgroups, settings)
		}
		// Outside a job the caller's own confinement still holds: the CPU
		// affinity they run with (taskset) and their cgroup's memory limit
		// (a login node's per-user slice) become the container's.
		job := scheduler.Outside(cwd)
		if job.Alloc.CPUs, err = scheduler.CPUsFromAffinity(); err != nil {
			return job, fmt.Errorf("reading the caller's CPU affinity: %v", err)
		}
		job.Alloc.MemoryBytes = scheduler.MemoryLimit(cgroups, "/sys/fs/cgroup")
		return job, nil
	}
	s := scheduler.Slurm{Scontrol: settings.Scontrol, SlurmConf: settings.SlurmConf, Node: scheduler.Node()}
	job, sj, err := s.VerifyStep(context.Background(), caller.UID, cg, hint)
	if err != nil {
		return scheduler.Job{}, &jobError{err.Error()}
	}
	if job.Alloc, err = s.Allocation(sj, cgroups); err != nil {
		return scheduler.Job{}, &jobError{"the job's allocation on this node cannot be read: " + err.Error()}
	}
	return job, nil
}

// jobError is a job context that could not be verified: refused like a
// policy refusal, since the request cannot be attributed.
type jobError struct{ msg string }

func (e *jobError) Error() string { return "job context refused: " + e.msg }

// batchScript is where slurmd keeps the batch script of a verified job's
// batch step; it is mounted read-only so the script can run in the image.
func batchScript(job scheduler.Job, settings policy.Settings) string {
	if job.Scheduler != "slurm" || job.Step != "batch" {
		return ""
	}
	n, err := strconv.ParseUint(job.ID, 10, 32)
	if err != nil {
		return ""
	}
	return filepath.Join(settings.SlurmdSpoolDir, fmt.Sprintf("job%05d", n), "slurm_script")
}

// gpuControlFiles are the NVIDIA devices every GPU process needs besides
// its GPUs'; passed in "devices" mode when present on the node.
var gpuControlFiles = []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}

// policyJob turns the verified job into the policy's terms, and returns
// what the guard independently allows: GPU ids in every form a device
// request may use, and device files. In gpus_mode "nvidia" each GPU is
// named to the engine by its UUID, read from the driver's record of that
// very device; a GPU whose UUID cannot be established fails the launch
// (an index could name another job's GPU).
func policyJob(job scheduler.Job, gpusMode string) (policy.Job, []string, []string, error) {
	pj := policy.Job{
		Scheduler: job.Scheduler, ID: job.ID, Step: job.Step, Dir: job.Dir, Node: job.Node, Files: job.Files,
		CPUs: job.Alloc.CPUs, MemoryBytes: job.Alloc.MemoryBytes, StepCgroup: job.Cgroup,
	}
	var ids, devices []string
	var uuids map[int]string
	if len(job.Alloc.GPUs) > 0 && gpusMode == "nvidia" {
		var err error
		if uuids, err = scheduler.NvidiaUUIDs("/proc"); err != nil {
			return pj, nil, nil, fmt.Errorf("gpus_mode \"nvidia\" names GPUs by UUID, and %v; the admin checks the NVIDIA driver on this node, or sets gpus_mode = \"devices\" or \"cdi\"", err)
		}
	}
	for _, g := range job.Alloc.GPUs {
		id := strconv.Itoa(g.Minor)
		if uuids != nil {
			u, ok := uuids[g.Minor]
			if !ok {
				return pj, nil, nil, fmt.Errorf("gpus_mode \"nvidia\": the NVIDIA driver has no GPU with device minor %d (%s, the job's); the admin checks gres.conf against /proc/driver/nvidia/gpus", g.Minor, g.Device)
			}
			id = u
		}
		pj.GPUs = append(pj.GPUs, policy.GPU{ID: id, Device: g.Device, Minor: int64(g.Minor)})
		ids = append(ids, id, "nvidia.com/gpu="+strconv.Itoa(g.Minor))
		devices = append(devices, g.Device)
	}
	if len(pj.GPUs) > 0 {
		for _, f := range gpuControlFiles {
			if _, err := os.Stat(f); err == nil {
				pj.ControlFiles = append(pj.ControlFiles, f)
				devices = append(devices, f)
			}
		}
	}
	return pj, ids, devices, nil
}

// detectPBSJob verifies a PBS job the same way: qstat's record, and the
// kernel's word that the caller is inside the job (its cgroup or session).
func detectPBSJob(caller policy.Caller, hint string, cgroups []byte, settings policy.Settings) (scheduler.Job, error) {
	p := scheduler.PBS{Qstat: settings.Qstat, JSON: settings.QstatFormat == "json", Node: scheduler.Node()}
	sid, err := unix.Getsid(0)
	if err != nil {
		return scheduler.Job{}, err
	}
	job, _, err := p.VerifyPBS(context.Background(), caller.User, hint, cgroups, sid)
	if err != nil {
		return scheduler.Job{}, &jobError{err.Error()}
	}
	if job.Alloc.CPUs, err = scheduler.CPUsFromAffinity(); err != nil {
		return scheduler.Job{}, &jobError{err.Error()}
	}
	job.Alloc.MemoryBytes = scheduler.MemoryLimit(cgroups, "/sys/fs/cgroup")
	return job, nil
}

// printDryRun shows the create request exactly as it would be sent (after
// the guard), and the rules behind it.
func printDryRun(cmd *cobra.Command, eng launcher.Engine, dec *policy.Decision, want guard.Expect) error {
	req, err := launcher.DryRun(context.Background(), eng, dec, want)
	if err != nil {
		return err
	}
	type rule struct{ Item, Action, Rule string }
	var trail []rule
	for _, a := range dec.Trail {
		trail = append(trail, rule{a.Item, a.Action, a.Rule.String()})
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"name": req.Name, "config": req.Config, "host_config": req.HostConfig, "rules": trail})
}

// existingImage stands for the image argument of a --existing run until
// the named container's own image is known; it is never judged or run.
const existingImage = "containerjob.invalid/existing:named"

// existingNamedImage is the image of the caller's container called name in
// the verified job on this node, as the policy approved it when the
// container was created (the policy judges it again now).
func existingNamedImage(pol *policy.Policy, caller policy.Caller, job scheduler.Job, name string) (string, error) {
	refuse := func(why string) error {
		return &policy.Refusal{Item: fmt.Sprintf("--container-name %q without --container-image (%s)", name, why),
			Reason: "is refused", Rule: policy.Origin{Table: "built-in", Key: "named-container"}, Hint: "name the image (--container-image) on the step that creates the container"}
	}
	if job.ID == "" {
		return "", refuse("outside a job there are no named containers")
	}
	eng, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		return "", err
	}
	defer eng.Close()
	cs, err := launcher.ListManaged(context.Background(), eng, job.Scheduler, job.ID)
	if err != nil {
		return "", fmt.Errorf("looking up container %q: %v", name, err)
	}
	uid := strconv.FormatUint(uint64(caller.UID), 10)
	for _, c := range cs {
		if c.UID == uid && c.ShortName == name && c.Image != "" && (c.Node == "" || c.Node == job.Node) {
			return c.Image, nil
		}
	}
	return "", refuse(fmt.Sprintf("job %s has no container of that name on this node", job.ID))
}

// containerAccount is the caller's entry for the container's /etc/passwd
// and /etc/group, from the host's user database; nil (no entries added)
// where it cannot be written as lines. Groups without a name are left out.
func containerAccount(caller policy.Caller) *launcher.Account {
	a := &launcher.Account{Name: caller.User, UID: caller.UID, GID: caller.GID, Home: caller.Home, LoginShell: identity.LoginShell(caller.UID)}
	for _, gid := range append([]uint32{caller.GID}, caller.Groups...) {
		if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
			a.Groups = append(a.Groups, launcher.Group{Name: g.Name, GID: gid})
		}
	}
	if launcher.ValidAccount(*a) != nil {
		return nil
	}
	return a
}

// scriptInterpreter is the absolute #! interpreter of the job's batch
// script when that is what the container runs, "" otherwise. The script
// is slurmd's copy (root's), read as root, its first line only.
func scriptInterpreter(job scheduler.Job, settings policy.Settings, cmd []string) string {
	script := batchScript(job, settings)
	if script == "" || len(cmd) == 0 || cmd[0] != script {
		return ""
	}
	f, err := os.OpenFile(script, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	return shebangInterpreter(buf[:n])
}

// shebangInterpreter returns the interpreter a "#!" first line names, if
// it is an absolute, clean path; "" otherwise.
func shebangInterpreter(head []byte) string {
	line, _, _ := strings.Cut(string(head), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) || filepath.Clean(fields[0]) != fields[0] {
		return ""
	}
	return fields[0]
}
