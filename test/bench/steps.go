package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

// stepsPolicy is benchPolicy for Slurm steps on the test cluster, with
// the step_containers setting of the variant.
func stepsPolicy(mode string) string {
	return fmt.Sprintf(`# containerjob benchmark policy (test/bench steps), installed for one run
[settings]
container_logs = "none"
slurm_conf = "%[1]s/slurm.conf"
slurmd_spool_dir = "%[1]s/spool/%%n"
slurm_tmpfs = "%[1]s/tmp/%%n"
step_containers = %[2]q

[defaults]
images_allow = ["alpine:*"]
pull = ["never"]
networks_allow = ["none"]
flags_allow = ["name"]
pids_limit = 4096
`, *slurmDir, mode)
}

// uptime is the host's /proc/uptime in seconds. Containers read the same
// clock (the engine gives them no time namespace), so a rank's reading is
// comparable with the host's taken before srun.
func uptime() (float64, error) {
	data, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/uptime")
	}
	return strconv.ParseFloat(f[0], 64)
}

// steps: a step of -ranks tasks on one node, from srun to every rank
// running (the last rank's first instruction, read off the shared uptime
// clock) and to the step's end; one container shared by the node's tasks
// (step_containers = "shared"), one per task ("per-task"), the docker CLI
// per task, and no container, each against a one-task step.
func (b *bencher) steps() error {
	conf := *slurmDir + "/slurm.conf"
	if _, err := os.Stat(conf); err != nil {
		return fmt.Errorf("no test cluster at %s (make guide brings it up): %v", *slurmDir, err)
	}
	os.Setenv("SLURM_CONF", conf) // for squeue and scancel
	initPath, err := installedInit()
	if err != nil {
		return err
	}
	env := []string{"SLURM_CONF=" + conf, "PATH=/usr/local/bin:/usr/bin:/bin"}
	as := func(root bool, argv ...string) *exec.Cmd {
		if root {
			c := exec.Command(argv[0], argv[1:]...)
			c.Dir, c.Env = b.home, env
			return c
		}
		c := b.asUser(argv...)
		c.Env = append(c.Env, env...)
		return c
	}
	// Steps run in one allocation per owner (the user's, and root's for
	// the docker CLI), holding the whole first node: a new allocation per
	// run would also time the scheduler and the previous job's epilogue.
	jobs := map[bool]string{}
	defer func() {
		for _, j := range jobs {
			exec.Command("scancel", j).Run()
		}
	}()
	allocate := func(root bool) (string, error) {
		// Every CPU of the node and no GPU (--exclusive would give all
		// GPUs too); the steps overcommit it with -O.
		c := as(root, "sbatch", "--parsable", "-p", "main", "-N1", "-n1", "-c", strconv.Itoa(runtime.NumCPU()), "-o", "/dev/null", "--wrap", "sleep 3600")
		out, err := c.Output()
		if err != nil {
			return "", fmt.Errorf("sbatch: %v", err)
		}
		id := strings.TrimSpace(string(out))
		for range 240 { // the previous job's epilogue may still run
			st, _ := exec.Command("squeue", "-h", "-j", id, "-o", "%T").Output()
			if strings.TrimSpace(string(st)) == "RUNNING" {
				return id, nil
			}
			time.Sleep(500 * time.Millisecond)
		}
		return id, fmt.Errorf("job %s did not start", id)
	}
	srun := func(n int, root bool, cmd ...string) *exec.Cmd {
		return as(root, append([]string{"srun", "--jobid=" + jobs[root], "--overlap", "-O", "-n", strconv.Itoa(n)}, cmd...)...)
	}
	rank := []string{"cat", "/proc/uptime"}
	type variant struct {
		name, mode string // mode: the policy's step_containers, "" for none
		ranks      int
		cmd        func(n int) *exec.Cmd
		root       bool
		noInit     bool // containerjob-init moved aside: the engine's exec, as before
	}
	cj := func(n int) *exec.Cmd {
		return srun(n, false, append([]string{"--container-image=" + *image}, rank...)...)
	}
	cli := func(n int) *exec.Cmd { return srun(n, true, append([]string{b.docker}, b.dockerArgs(rank...)...)...) }
	bare := func(n int) *exec.Cmd { return srun(n, false, rank...) }
	bareRoot := func(n int) *exec.Cmd { return srun(n, true, rank...) }
	N := *stepRanks
	variants := []variant{
		{"no container", "", 1, bare, false, false},
		{"no container", "", N, bare, false, false},
		{"containerjob", "shared", 1, cj, false, false},
		{"containerjob, one container shared by the node's tasks", "shared", N, cj, false, false},
		{"containerjob, shared, each task an engine exec (containerjob-init moved aside)", "shared", N, cj, false, true},
		{"containerjob, one container per task", "per-task", N, cj, false, false},
		{"no container (root)", "", 1, bareRoot, true, false},
		{"no container (root)", "", N, bareRoot, true, false},
		{"docker CLI per task (root)", "", 1, cli, true, false},
		{"docker CLI per task (root)", "", N, cli, true, false},
	}
	type sample struct{ running, end []time.Duration }
	var phases []phaseMedian
	results := make([]sample, len(variants))
	current := ""
	// The user's variants first, then root's: both allocations hold the
	// whole node, one after the other.
	for _, root := range []bool{false, true} {
		for r := 0; r < *stepRuns+1; r++ {
			for i, v := range variants {
				if v.root != root {
					continue
				}
				if jobs[root] == "" {
					id, err := allocate(root)
					if id != "" {
						jobs[root] = id
					}
					if err != nil {
						return err
					}
				}
				if v.mode != "" && v.mode != current {
					// The run's own restorePolicy puts the site's back.
					if _, err := testutil.InstallFile(policy.DefaultPath, []byte(stepsPolicy(v.mode)), 0o644); err != nil {
						return err
					}
					current = v.mode
				}
				c := v.cmd(v.ranks)
				var stdout, stderr bytes.Buffer
				c.Stdout, c.Stderr = &stdout, &stderr
				t0, err := uptime()
				if err != nil {
					return err
				}
				if v.noInit {
					if err := os.Rename(initPath, initPath+".bench-aside"); err != nil {
						return err
					}
				}
				start := time.Now()
				runErr := c.Run()
				end := time.Since(start)
				if v.noInit {
					if err := os.Rename(initPath+".bench-aside", initPath); err != nil {
						return fmt.Errorf("%s could not be put back: %v", initPath, err)
					}
				}
				if runErr != nil {
					return fmt.Errorf("%s, %d tasks: %v: %s", v.name, v.ranks, runErr, stderr.String())
				}
				var last float64
				lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
				if len(lines) != v.ranks {
					return fmt.Errorf("%s, %d tasks: %d lines of output: %q %s", v.name, v.ranks, len(lines), stdout.String(), stderr.String())
				}
				for _, l := range lines {
					f := strings.Fields(l)
					if len(f) == 0 {
						return fmt.Errorf("%s: a rank printed %q", v.name, l)
					}
					u, err := strconv.ParseFloat(f[0], 64)
					if err != nil {
						return fmt.Errorf("%s: a rank printed %q", v.name, l)
					}
					last = max(last, u)
				}
				running := time.Duration((last - t0) * float64(time.Second))
				if r == 0 {
					continue // warm-up
				}
				results[i].running = append(results[i].running, running)
				results[i].end = append(results[i].end, end)
				b.rawf("steps %q tasks=%d run=%d running_us=%d end_us=%d", v.name, v.ranks, r, running.Microseconds(), end.Microseconds())
			}
		}
		if !root {
			var err error
			if phases, err = b.stepPhases(srun, N); err != nil {
				return err
			}
		}
		exec.Command("scancel", jobs[root]).Run()
	}
	if n := b.leftovers(); n != 0 {
		return fmt.Errorf("%d containers of %s left after the steps", n, *image)
	}
	fmt.Fprintf(&b.report, "## 7. A step of %d tasks on one node\n\n", N)
	fmt.Fprintf(&b.report, "`srun --jobid=J --overlap -O -n %d ... cat /proc/uptime` on the test cluster (Slurm %s, `contrib/slurm/testcluster`), in an allocation holding the whole first node (`sbatch -N1 -n1 -c CPUS`, so neither the scheduler nor a previous job's epilogue is timed), as the user; the docker CLI variant is `srun ... docker run --rm ...` as root, in root's own allocation after the user's, with table 1's flags. *All running*: from just before srun to the last task's first instruction (each task prints the host's uptime clock, which containers share; 10 ms resolution). *Step end*: srun's wall time. Median of %d interleaved runs after one warm-up. Goal: %d tasks in a shared container all running within 1.5 × a one-task step.\n\n", N, slurmVersion(), *stepRuns, N)
	b.report.WriteString("| variant | tasks | all running | step end | all running / one task's |\n| --- | --- | --- | --- | --- |\n")
	one := map[string]time.Duration{}
	for i, v := range variants {
		m := median(results[i].running)
		key := strings.SplitN(v.name, ",", 2)[0]
		if v.ranks == 1 {
			one[key] = m
		}
		ratio := "1.00"
		if v.ranks != 1 && one[key] > 0 {
			ratio = fmt.Sprintf("%.2f", float64(m)/float64(one[key]))
		}
		fmt.Fprintf(&b.report, "| %s | %d | %s | %s | %s |\n", v.name, v.ranks, ms(m), ms(median(results[i].end)), ratio)
	}
	b.report.WriteString("\n")
	allRunning := func(name string) time.Duration {
		i := slices.IndexFunc(variants, func(v variant) bool { return v.name == name && v.ranks == N })
		return median(results[i].running)
	}
	sh := allRunning("containerjob, one container shared by the node's tasks")
	pt := allRunning("containerjob, one container per task")
	cl := allRunning("docker CLI per task (root)")
	fmt.Fprintf(&b.report, "Sharing one container, all %d tasks ran %.1f × sooner than with one container per task and %.1f × sooner than with the docker CLI per task. ", N, float64(pt)/float64(sh), float64(cl)/float64(sh))
	ex := allRunning("containerjob, shared, each task an engine exec (containerjob-init moved aside)")
	fmt.Fprintf(&b.report, "Through the container's own server (containerjob-init --serve forks each task), all %d tasks ran %.1f × sooner than with an engine exec per task. ", N, float64(ex)/float64(sh))
	fmt.Fprintf(&b.report, "Each task still runs its own containerjob (through sudo) and verifies its job (the step's first task with Slurm, the others from its record); on this machine's %d CPUs those run %d at a time, which is what the ratio to one task measures. Where each task's time went in a shared step (`srun --jobid=J --overlap -O -n %d containerjob run --timings %s true`, the wrapper form, with the same policy; median over the tasks of one step):\n\n| phase | median per task |\n| --- | --- |\n", runtime.NumCPU(), runtime.NumCPU(), N, *image)
	for _, p := range phases {
		fmt.Fprintf(&b.report, "| %s | %.1f ms |\n", p.name, p.ms)
	}
	b.report.WriteString("\nPhases: request = the job verified with Slurm and the allocation read; container = finding the step's container (or creating and starting it: one task); exec-create = the task registered (started by the container's server, or the engine's exec created); exit = from then to the task's exit reported; end-task = the last-task check.\n\n")
	return nil
}

type phaseMedian struct {
	name string
	ms   float64
}

// stepPhases runs one shared step in the wrapper form with --timings and
// returns each phase's median over its tasks, in containerjob's order.
func (b *bencher) stepPhases(srun func(int, bool, ...string) *exec.Cmd, n int) ([]phaseMedian, error) {
	if _, err := testutil.InstallFile(policy.DefaultPath, []byte(stepsPolicy("shared")), 0o644); err != nil {
		return nil, err
	}
	c := srun(n, false, *bin, "run", "--timings", *image, "true")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("--timings step: %v: %s", err, stderr.String())
	}
	var order []string
	per := map[string][]time.Duration{}
	for _, l := range strings.Split(stderr.String(), "\n") {
		_, list, ok := strings.Cut(l, "containerjob: timings (ms): ")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(list, ", ") {
			k, v, _ := strings.Cut(kv, " ")
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("--timings printed %q", l)
			}
			if _, seen := per[k]; !seen {
				order = append(order, k)
			}
			per[k] = append(per[k], time.Duration(f*float64(time.Millisecond)))
			b.rawf("steps-phase %s %.1f", k, f)
		}
	}
	if len(per["total"]) != n {
		return nil, fmt.Errorf("--timings step: %d tasks reported, want %d: %s", len(per["total"]), n, stderr.String())
	}
	var out []phaseMedian
	for _, k := range order {
		out = append(out, phaseMedian{k, float64(median(per[k]).Microseconds()) / 1000})
	}
	return out, nil
}

func slurmVersion() string {
	out, _ := exec.Command("srun", "--version").Output()
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return "?"
	}
	return f[1]
}
