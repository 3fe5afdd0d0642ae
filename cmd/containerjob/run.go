package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
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
	resolve     bool
	timings     bool
	capAdd      []string
	publish     []string
	noDefault   []string
	existing    bool
	localOnly   bool
	mountHome   bool
	stepStdin   bool
	imageFirst  bool
	pyxisEntry  string
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
	fl.BoolVar(&f.resolve, "resolve", false, "inside a job: print the image this job's steps on this node run for IMAGE (its digest), resolving it now if none has, and run nothing")
	fl.BoolVar(&f.timings, "timings", false, "print how long each phase of the launch took, on one stderr line (for make bench)")
	fl.MarkHidden("timings")
	fl.BoolVar(&f.localOnly, "local-only", false, "use the image on this node only, never pull it (pyxis dockerd://)")
	fl.MarkHidden("local-only")
	fl.BoolVar(&f.mountHome, "mount-home", false, "bind your home directory at its path, unless a default mount already does (pyxis --container-mount-home)")
	fl.MarkHidden("mount-home")
	fl.BoolVar(&f.stepStdin, "step-stdin", false, "pass stdin as srun does, with a terminal when it is one (the SPANK plugin's steps, as pyxis does)")
	fl.MarkHidden("step-stdin")
	fl.StringVar(&f.pyxisEntry, "pyxis-entrypoint", "", "pyxis' entrypoint (the SPANK plugin's steps): it runs first, handed a starter for the command; quiet: its output is shown only when it ends before the command starts; log: always")
	fl.MarkHidden("pyxis-entrypoint")
	fl.BoolVar(&f.imageFirst, "image-first", false, "pyxis' precedence (the SPANK plugin's steps): the image's ENV wins over the job's environment except for --env names, and without --workdir the container starts in the image's WORKDIR")
	fl.MarkHidden("image-first")
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
	for _, name := range []string{"workdir", "entrypoint", "name", "shm-size", "network", "pull", "pyxis-entrypoint"} {
		if fl.Changed(name) {
			out = append(out, "--"+name+"="+fl.Lookup(name).Value.String())
		}
	}
	for _, name := range []string{"tty", "interactive", "read-only", "dry-run", "resolve", "timings", "existing", "local-only", "mount-home", "step-stdin", "image-first", "quiet-refusals"} {
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
	policyPath, err := policyPathFor(inv, f.policyPath)
	if err != nil {
		return err
	}
	if f.existing && f.name == "" {
		return usagef("--existing needs --name")
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

	pol, err := loadPolicy(policyPath)
	if err != nil {
		return err
	}
	if f.existing {
		// The named container's image stands in for the image argument.
		args = append([]string{node.ExistingImage}, args...)
	}
	req, err := requestFromFlags(fl, f, args)
	if err != nil {
		return err
	}
	cwd, err := unix.Getwd()
	if err != nil {
		return fmt.Errorf("working directory cannot be read: %w", err)
	}
	// The wrapper form inside a job (srun containerjob IMG CMD < file):
	// the task's stdin carries data srun forwarded to it, which a plain
	// task would read; pass it, as the SPANK form does, rather than lose
	// it. A terminal still needs -i/-t, /dev/null needs nothing.
	if !f.stepStdin && !fl.Changed("interactive") && !f.tty && inJob(jobEnv) && stdinCarriesData() {
		req.Interactive = true
	}
	stdio := launcher.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if (f.tty || f.stepStdin) && isTerminal(os.Stdin) {
		stdio.Terminal = os.Stdin
	}
	n, err := nodeFor(pol)
	if err != nil {
		return err
	}
	defer n.Close()
	out, err := n.Run(context.Background(), node.Input{
		Invocation: inv, Caller: caller, Request: req,
		MountHome: f.mountHome, Existing: f.existing, DryRun: f.dryRun, Resolve: f.resolve,
		JobEnv: jobEnv, Cwd: cwd, Stdio: stdio, Phase: clock.mark, Notify: printNotice,
		CallerLimits: callerLimits,
	})
	if err != nil {
		return err
	}
	if f.resolve {
		fmt.Fprintln(cmd.OutOrStdout(), out.Resolved)
		return nil
	}
	if out.DryRun != nil {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(out.DryRun)
	}
	printOutcome(out)
	return exitStatus(out.Result.ExitCode)
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

// requestFromFlags turns the parsed command line into a policy request,
// host paths as written: each mount's Source is its Given, cleaned, until
// the launch resolves it as the caller.
func requestFromFlags(fl *pflag.FlagSet, f *runFlags, args []string) (policy.Request, error) {
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
	req.ImageFirst = f.imageFirst
	req.PyxisEntrypoint = f.pyxisEntry
	if f.localOnly {
		if f.pull != "" && f.pull != "never" {
			return req, usagef("--pull %s contradicts the image's dockerd:// (never pull)", f.pull)
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
			return req, usagef("--shm-size %q is not a size such as 64m or 1g", f.shmSize)
		}
		req.ShmSize = n
	}
	for _, v := range f.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return req, usagef("--volume %q is not SRC:DST[:ro]", v)
		}
		src := parts[0]
		if !strings.HasPrefix(src, "/") && !strings.HasPrefix(src, ".") {
			return req, usagef("--volume %q names a volume; only host directories can be mounted, by path", v)
		}
		m := policy.MountRequest{Given: src, Source: filepath.Clean(src), Target: parts[1]}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				m.ReadOnly = true
			case "rw":
			default:
				return req, usagef("--volume %q: option %q is not ro or rw", v, parts[2])
			}
		}
		req.Mounts = append(req.Mounts, m)
	}
	return req, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// inJob: the job's environment names a scheduler job (a hint only: it
// decides nothing here but whether stdin is passed, which is the
// caller's own data).
func inJob(jobEnv []string) bool {
	for _, kv := range jobEnv {
		if strings.HasPrefix(kv, "SLURM_JOB_ID=") || strings.HasPrefix(kv, "PBS_JOBID=") {
			return true
		}
	}
	return false
}

// stdinCarriesData: stdin is a pipe, a socket or a file (what srun gives
// the task it forwards its stdin to), not a terminal or /dev/null.
func stdinCarriesData() bool {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
		return true
	}
	return false
}
