package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

// pyxis: containerjob and pyxis + enroot side by side, in one interleaved
// run, each on its own cluster of this machine (the test cluster, and a
// second one whose plugstack loads pyxis: docs/benchmarks.md §12 says how
// it is built; nothing of pyxis or enroot is in this repository). Every
// figure is also taken without a container on the same cluster, and
// reported as the overhead over it.
//
// Steps run in one held allocation per cluster (the whole node, as in §7):
// a one-task step with an image, a one-task step in the job's named
// container (made in the warm-up round), and a -ranks task step with an
// image. Batch jobs run after the allocations are gone: an empty job (what
// every allocation pays) and a job writing -batch-mib MiB to its output
// file, timed from the job's start to its end as slurmctld reports them
// (squeue, polled every 50 ms), so the Prolog, the launch, the output, the
// removal and the Epilog are all in it and the scheduler's wait is not.
func (b *bencher) pyxis() error {
	if *pyxisDir == "" {
		fmt.Fprintf(&b.report, "## 12. Side by side with pyxis + enroot\n\nNot run: no pyxis cluster was named (`-pyxis DIR -pyxis-image FILE.sqsh`; docs/benchmarks.md §12 says how to build one).\n\n")
		return nil
	}
	cjConf, pyConf := *slurmDir+"/slurm.conf", *pyxisDir+"/slurm.conf"
	os.Setenv("SLURM_CONF", cjConf) // for slurmVersion, squeue and scancel of the first
	for _, c := range []string{cjConf, pyConf} {
		if _, err := os.Stat(c); err != nil {
			return fmt.Errorf("no cluster at %s: %v", filepath.Dir(c), err)
		}
	}
	if _, err := os.Stat(*pyxisImage); err != nil {
		return fmt.Errorf("pyxis image: %v", err)
	}
	if _, err := testutil.InstallFile(policy.DefaultPath, []byte(stepsPolicy("shared")), 0o644); err != nil {
		return err
	}
	cj := &cluster{name: "containerjob", conf: cjConf, image: *image, b: b}
	py := &cluster{name: "pyxis", conf: pyConf, image: *pyxisImage, b: b}
	clusters := []*cluster{cj, py}
	defer func() {
		for _, c := range clusters {
			c.release()
		}
	}()
	N := *stepRanks
	type figure struct {
		name  string
		ranks int
		flags func(c *cluster) []string // nil: no container
	}
	withImage := func(c *cluster) []string { return []string{"--container-image=" + c.image} }
	named := func(*cluster) []string { return []string{"--container-name=cjbench"} }
	figures := []figure{
		{"one-task step", 1, nil},
		{"one-task step, image", 1, withImage},
		{"one-task step, the job's named container", 1, named},
		{fmt.Sprintf("%d-task step", N), N, nil},
		{fmt.Sprintf("%d-task step, image", N), N, withImage},
	}
	// times[cluster][figure]
	times := map[string][][]time.Duration{}
	for _, c := range clusters {
		times[c.name] = make([][]time.Duration, len(figures))
		if err := c.hold(); err != nil {
			return err
		}
		// The named container, made once per job as its users would.
		if _, err := c.step(1, []string{"--container-image=" + c.image, "--container-name=cjbench"}); err != nil {
			return fmt.Errorf("%s: the named container: %v", c.name, err)
		}
	}
	for r := 0; r < *pyxisRuns+1; r++ {
		for i, f := range figures {
			for _, c := range clusters {
				var flags []string
				if f.flags != nil {
					flags = f.flags(c)
				}
				d, err := c.step(f.ranks, flags)
				if err != nil {
					return fmt.Errorf("%s, %s: %v", c.name, f.name, err)
				}
				if r == 0 {
					continue // warm-up
				}
				times[c.name][i] = append(times[c.name][i], d)
				b.rawf("pyxis %s %q run=%d us=%d", c.name, f.name, r, d.Microseconds())
			}
		}
	}
	for _, c := range clusters {
		c.release()
	}
	type job struct {
		name  string
		image bool
		cmd   string
		check bool
	}
	size := int64(*batchMiB) << 20
	wantSum := zeroSum(size)
	gen := fmt.Sprintf("head -c %d /dev/zero", size)
	jobs := []job{
		{"empty batch job", false, "true", false},
		{fmt.Sprintf("batch job writing %d MiB to its file", *batchMiB), false, "busybox " + gen, true},
		{fmt.Sprintf("batch job writing %d MiB to its file, image", *batchMiB), true, gen, true},
	}
	jobTimes := map[string][][]time.Duration{}
	for _, c := range clusters {
		jobTimes[c.name] = make([][]time.Duration, len(jobs))
	}
	dir, err := b.userDir("cjbench-pyxis")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for r := 0; r < *batchRuns; r++ {
		for i, j := range jobs {
			for _, c := range clusters {
				var flags []string
				if j.image {
					flags = []string{"--container-image=" + c.image}
				}
				d, err := c.batch(dir, flags, j.cmd, j.check, size, wantSum)
				if err != nil {
					return fmt.Errorf("%s, %s: %v", c.name, j.name, err)
				}
				jobTimes[c.name][i] = append(jobTimes[c.name][i], d)
				b.rawf("pyxis %s %q run=%d us=%d", c.name, j.name, r, d.Microseconds())
			}
		}
	}
	if n := b.leftovers(); n != 0 {
		return fmt.Errorf("%d containers of %s left after the pyxis comparison", n, *image)
	}

	fmt.Fprintf(&b.report, "## 12. Side by side with pyxis + enroot\n\n")
	fmt.Fprintf(&b.report, "containerjob on the test cluster and pyxis on a second cluster of this machine (`-pyxis %s`, the same Slurm %s and configuration, its plugstack loading pyxis instead of containerjob and no Prolog or Epilog), the same image (pyxis from a squashfs file, `%s`, made by `enroot import dockerd://%s`), as the user, in one run: every round takes each figure on both clusters before the next figure. Each figure's overhead (in parentheses) is the median of each round's figure less the same round's step or job without a container on the same cluster. Steps: `srun --jobid=J --overlap -O -n TASKS [--container-image=IMAGE | --container-name=cjbench] true` in an allocation holding the whole node (`sbatch -N1 -n1 -c %d`), srun's wall time, median of %d rounds after a warm-up. Batch jobs: `sbatch -o FILE [--container-image=IMAGE] --wrap COMMAND`, from the job's start to its end as slurmctld reports them (`squeue`, polled every 50 ms: the Prolog, the launch, the output, the container's removal and the Epilog, not the scheduler's wait), median of %d rounds; every output's size and checksum are checked.\n\n",
		*pyxisDir, slurmVersion(), *pyxisImage, *image, runtime.NumCPU(), *pyxisRuns, *batchRuns)
	b.report.WriteString("| figure | no container (containerjob's cluster) | containerjob | no container (pyxis' cluster) | pyxis + enroot | overhead containerjob / pyxis |\n| --- | --- | --- | --- | --- | --- |\n")
	// Overheads are paired: each round's figure less the same round's
	// figure without a container, so that a round slowed by the machine
	// (1 GiB to a disk varies by a few tenths of a second) counts on both
	// sides of the difference.
	paired := func(v, base []time.Duration) time.Duration {
		d := make([]time.Duration, len(v))
		for i := range v {
			d[i] = v[i] - base[i]
		}
		return median(d)
	}
	row := func(name string, cjBase, cjV, pyBase, pyV []time.Duration) {
		cjO, pyO := paired(cjV, cjBase), paired(pyV, pyBase)
		ratio := "n/a"
		if pyO > 0 {
			ratio = fmt.Sprintf("%.2f", float64(cjO)/float64(pyO))
		}
		fmt.Fprintf(&b.report, "| %s | %s | %s (+%s) | %s | %s (+%s) | %s |\n", name, secs(median(cjBase)), secs(median(cjV)), secs(cjO), secs(median(pyBase)), secs(median(pyV)), secs(pyO), ratio)
	}
	base := map[int]int{}
	for i, f := range figures {
		if f.flags == nil {
			base[f.ranks] = i
			continue
		}
		bi := base[f.ranks]
		row(f.name, times["containerjob"][bi], times["containerjob"][i], times["pyxis"][bi], times["pyxis"][i])
	}
	for i, j := range jobs {
		if i == 0 || !j.image {
			continue
		}
		row(j.name, jobTimes["containerjob"][i-1], jobTimes["containerjob"][i], jobTimes["pyxis"][i-1], jobTimes["pyxis"][i])
	}
	empty := []time.Duration{median(jobTimes["containerjob"][0]), median(jobTimes["pyxis"][0])}
	fmt.Fprintf(&b.report, "\nAn empty batch job (`--wrap true`, no container) ran %s from start to end on containerjob's cluster (its SPANK plugin, Prolog and Epilog) and %s on pyxis' (its SPANK plugin, no Prolog or Epilog): what every allocation pays, containerjob's hooks included (§9).\n\n", secs(empty[0]), secs(empty[1]))
	return nil
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

// cluster is one Slurm cluster of the side-by-side run and the bench
// user's allocation on it.
type cluster struct {
	name, conf, image string
	b                 *bencher
	job               string
}

func (c *cluster) cmd(argv ...string) *exec.Cmd {
	x := c.b.asUser(argv...)
	x.Env = append(x.Env, "SLURM_CONF="+c.conf)
	return x
}

func (c *cluster) squeue(id string) string {
	x := exec.Command("squeue", "-h", "-j", id, "-o", "%T")
	x.Env = append(os.Environ(), "SLURM_CONF="+c.conf)
	out, _ := x.Output()
	return strings.TrimSpace(string(out))
}

func (c *cluster) hold() error {
	out, err := c.cmd("sbatch", "--parsable", "-N1", "-n1", "-c", strconv.Itoa(runtime.NumCPU()), "-o", "/dev/null", "--wrap", "sleep 3600").Output()
	if err != nil {
		return fmt.Errorf("%s: sbatch: %v", c.name, err)
	}
	c.job = strings.TrimSpace(string(out))
	for range 240 {
		if c.squeue(c.job) == "RUNNING" {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%s: job %s did not start", c.name, c.job)
}

func (c *cluster) release() {
	if c.job == "" {
		return
	}
	x := exec.Command("scancel", c.job)
	x.Env = append(os.Environ(), "SLURM_CONF="+c.conf)
	x.Run()
	for range 300 {
		if c.squeue(c.job) == "" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.job = ""
}

// step runs `true` in one step of n tasks in the held allocation and
// returns srun's wall time.
func (c *cluster) step(n int, flags []string) (time.Duration, error) {
	argv := append([]string{"srun", "--jobid=" + c.job, "--overlap", "-O", "-n", strconv.Itoa(n)}, flags...)
	x := c.cmd(append(argv, "true")...)
	var stderr bytes.Buffer
	x.Stderr = &stderr
	start := time.Now()
	if err := x.Run(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return time.Since(start), nil
}

// batch submits one job and returns the time from its start to its end as
// slurmctld reports them.
func (c *cluster) batch(dir string, flags []string, command string, check bool, size int64, wantSum string) (time.Duration, error) {
	out, errf := filepath.Join(dir, c.name+".out"), filepath.Join(dir, c.name+".err")
	defer os.Remove(out)
	defer os.Remove(errf)
	argv := append([]string{"sbatch", "--parsable", "-N1", "-n1", "-o", out, "-e", errf}, flags...)
	o, err := c.cmd(append(argv, "--wrap", command)...).Output()
	if err != nil {
		return 0, fmt.Errorf("sbatch: %v", err)
	}
	id := strings.TrimSpace(string(o))
	var start time.Time
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st := c.squeue(id)
		if st == "" {
			break
		}
		if start.IsZero() && st != "PENDING" {
			start = time.Now()
		}
		if time.Now().After(deadline) {
			exec.Command("scancel", id).Run()
			return 0, fmt.Errorf("job %s did not end within 10 minutes", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if start.IsZero() {
		return 0, fmt.Errorf("job %s was never seen running", id)
	}
	d := time.Since(start)
	if e, _ := os.ReadFile(errf); len(e) != 0 {
		return 0, fmt.Errorf("job %s: %s", id, e)
	}
	if check {
		sum, n, err := fileSum(out)
		if err != nil {
			return 0, err
		}
		if n != size || sum != wantSum {
			return 0, fmt.Errorf("job %s wrote %d bytes (sha256 %s), want %d (%s): bytes lost or changed", id, n, sum, size, wantSum)
		}
	}
	return d, nil
}
