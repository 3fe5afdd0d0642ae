// Command bench compares containerjob with the docker CLI on the same
// engine, image and flags, interleaved A B A B in one run, and writes a
// markdown report. Run as root with the engine up, the test image built
// and containerjob installed (make bench does all of that).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

var (
	out          = flag.String("out", "docs/benchmarks.md", "markdown report")
	raw          = flag.String("raw", "bench-raw.txt", "raw numbers")
	runs         = flag.Int("runs", 15, "launches per tool for the overhead benchmark")
	streamMB     = flag.Int("stream-mb", 1024, "MiB written to stdout in the streaming benchmark")
	footSecs     = flag.Int("footprint-seconds", 60, "duration of the footprint benchmark")
	streamReps   = flag.Int("stream-reps", 1, "runs per tool of the streaming benchmark (1 GiB through the docker CLI takes over a minute here)")
	image        = flag.String("image", "alpine:3.20", "image")
	userName     = flag.String("user", "cjbench", "non-root user to launch as")
	bin          = flag.String("bin", "/usr/local/bin/containerjob", "containerjob")
	dockerB      = flag.String("docker", "", "docker CLI (default: first in PATH)")
	only         = flag.String("only", "", "comma-separated subset: overhead,stream,concurrency,footprint,decision,epilog,phases,steps,pulls,hooks,metrics,batch,pyxis")
	slurmDir     = flag.String("slurm", "/run/containerjob-testcluster", "the test cluster (contrib/slurm/testcluster) for the steps benchmark")
	stepRanks    = flag.Int("ranks", 16, "tasks of the steps benchmark's step, on one node")
	stepRuns     = flag.Int("step-runs", 5, "runs per variant of the steps benchmark")
	pullLaunches = flag.Int("pull-launches", 32, "launches at once of the pulls benchmark")
	pullMiB      = flag.Int("pull-mib", 200, "size of the pulls benchmark's image layer, MiB")
	pullRuns     = flag.Int("pull-runs", 3, "runs per tool of the pulls benchmark")
	batchMiB     = flag.Int("batch-mib", 1024, "MiB a batch job of the batch benchmark writes to its output file")
	batchRuns    = flag.Int("batch-runs", 3, "interleaved rounds of the batch benchmark")
	pyxisDir     = flag.String("pyxis", "", "a second test cluster whose plugstack loads pyxis (docs/benchmarks.md §12); the pyxis section runs only with it")
	pyxisImage   = flag.String("pyxis-image", "/var/tmp/pyxbench/alpine.sqsh", "the image for pyxis, a squashfs file of -image (enroot import dockerd://IMAGE)")
	pyxisRuns    = flag.Int("pyxis-runs", 11, "interleaved rounds of the pyxis section's steps")
)

type bencher struct {
	u             *user.User
	uid           string
	gid           string
	groups        []string
	home          string
	raww          *bufio.Writer
	report        strings.Builder
	docker        string
	engine        *client.Client
	restorePolicy func()
}

func main() {
	flag.Parse()
	b := &bencher{}
	if err := b.setup(); err != nil {
		if b.restorePolicy != nil {
			b.restorePolicy()
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	rf, err := os.Create(*raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer rf.Close()
	b.raww = bufio.NewWriter(rf)
	defer b.raww.Flush()
	b.header()
	want := func(name string) bool { return *only == "" || strings.Contains(","+*only+",", ","+name+",") }
	steps := []struct {
		name string
		fn   func() error
	}{
		{"overhead", b.overhead}, {"stream", b.stream}, {"concurrency", b.concurrency},
		{"footprint", b.footprint}, {"decision", b.decision}, {"epilog", b.epilog}, {"phases", b.phases},
		{"steps", b.steps}, {"pulls", b.pulls}, {"hooks", b.hooks}, {"metrics", b.metrics}, {"batch", b.batch},
		{"pyxis", b.pyxis},
	}
	for _, s := range steps {
		if !want(s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s\n", s.name)
		if err := s.fn(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", s.name, err)
			fmt.Fprintf(&b.report, "\n**%s failed:** `%v`\n", s.name, err)
		}
	}
	b.restorePolicy()
	if err := os.WriteFile(*out, []byte(b.report.String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s\n", *out, *raw)
}

// benchPolicy is installed for the run (the site's is put back after):
// launches outside a job, the test image, containerjob's defaults
// otherwise, so the figures do not depend on what a machine's policy says.
const benchPolicy = `# containerjob benchmark policy (test/bench), installed for one run
[settings]
container_logs = "none"

[defaults]
images_allow = ["alpine:*"]
pull = ["never"]
outside_jobs = true
networks_allow = ["none"]
pids_limit = 4096
`

func (b *bencher) setup() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root")
	}
	restore, err := testutil.InstallFile(policy.DefaultPath, []byte(benchPolicy), 0o644)
	if err != nil {
		return fmt.Errorf("installing the benchmark policy: %v", err)
	}
	b.restorePolicy = restore
	if _, err := user.Lookup(*userName); err != nil {
		if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", *userName).CombinedOutput(); err != nil {
			return fmt.Errorf("useradd: %v %s", err, out)
		}
	}
	u, err := user.Lookup(*userName)
	if err != nil {
		return err
	}
	b.u, b.uid, b.gid, b.home = u, u.Uid, u.Gid, u.HomeDir
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if g != u.Gid {
			b.groups = append(b.groups, g)
		}
	}
	// The engine's own CLI (Debian's docker.io) when present: the same
	// client generation as the engine.
	b.docker = *dockerB
	if b.docker == "" {
		b.docker = "/usr/bin/docker"
		if _, err := os.Stat(b.docker); err != nil {
			if b.docker, err = exec.LookPath("docker"); err != nil {
				return err
			}
		}
	}
	b.engine, err = client.New(client.WithHost("unix:///var/run/docker.sock"))
	return err
}

func (b *bencher) header() {
	host, _ := os.Hostname()
	cpu := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	v, _ := b.engine.ServerVersion(context.Background(), client.ServerVersionOptions{})
	dv, _ := exec.Command(b.docker, "--version").Output()
	cv, _ := exec.Command(*bin, "version").Output()
	fmt.Fprintf(&b.report, "# Benchmarks\n\nProduced by `make bench` (`go run ./test/bench`), %s, on %s: %d CPUs (%s), %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), cpu, memTotal())
	fmt.Fprintf(&b.report, "Engine %s (API %s); docker CLI: %s; %s.\n", v.Version, v.APIVersion, strings.TrimSpace(string(dv)), strings.TrimSpace(string(cv)))
	fmt.Fprintf(&b.report, "Image `%s` (busybox, built by `make testimage`). Launches run as the non-root user `%s` unless noted. Raw numbers: `%s`.\n\n", *image, *userName, *raw)
	fmt.Fprintf(&b.report, "Same flags for both tools: the user's uid:gid and groups, `no-new-privileges`, `--cap-drop ALL`, `--pids-limit 4096`, `--network none`, the working directory bind-mounted as workdir, removal at exit (`--rm`). The docker CLI runs as root (users must not have it); containerjob runs as the user through sudo, or as root with `--as-user` (no sudo) where noted.\n\n")
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			f := strings.Fields(l)
			kb, _ := strconv.Atoi(f[1])
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/1024/1024)
		}
	}
	return ""
}

// dockerArgs is the docker CLI command line equivalent to containerjob's.
func (b *bencher) dockerArgs(cmd ...string) []string {
	a := []string{"run", "--rm", "--user", b.uid + ":" + b.gid, "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
		"--pids-limit", "4096", "--network", "none", "-v", b.home + ":" + b.home, "-w", b.home, "-e", "NVIDIA_VISIBLE_DEVICES=void"}
	for _, g := range b.groups {
		a = append(a, "--group-add", g)
	}
	return append(append(a, *image), cmd...)
}

// asUser wraps argv to run as the bench user.
func (b *bencher) asUser(argv ...string) *exec.Cmd {
	c := exec.Command("setpriv", append([]string{"--reuid=" + b.uid, "--regid=" + b.gid, "--init-groups", "--"}, argv...)...)
	c.Dir = b.home
	c.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + b.home}
	return c
}

type tool struct {
	name string
	cmd  func(args ...string) *exec.Cmd
}

// tools are what is compared, always in this order: the docker CLI, then
// containerjob as the user through sudo, then (withRoot) containerjob as
// root with --as-user. runFlags go to containerjob's run, before the image.
func (b *bencher) tools(withRoot bool, runFlags ...string) []tool {
	cj := func(a []string) []string { return append(append(slices.Clone(runFlags), *image), a...) }
	t := []tool{
		{"docker CLI (root)", func(a ...string) *exec.Cmd {
			c := exec.Command(b.docker, b.dockerArgs(a...)...)
			c.Dir = b.home
			return c
		}},
		{"containerjob (user, via sudo)", func(a ...string) *exec.Cmd {
			return b.asUser(append([]string{*bin}, cj(a)...)...)
		}},
	}
	if withRoot {
		t = append(t, tool{"containerjob (root, --as-user, no sudo)", func(a ...string) *exec.Cmd {
			c := exec.Command(*bin, append([]string{"run", "--as-user", *userName}, cj(a)...)...)
			c.Dir = b.home
			return c
		}})
	}
	return t
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (b *bencher) rawf(format string, a ...any) { fmt.Fprintf(b.raww, format+"\n", a...) }

// 1. Launch overhead.
func (b *bencher) overhead() error {
	tools := b.tools(true)
	times := make([][]time.Duration, len(tools))
	for r := 0; r < *runs+1; r++ {
		for i, t := range tools {
			c := t.cmd("true")
			start := time.Now()
			if out, err := c.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", t.name, err, out)
			}
			d := time.Since(start)
			if r == 0 {
				continue // warm-up
			}
			times[i] = append(times[i], d)
			b.rawf("overhead %q run=%d %d", t.name, r, d.Microseconds())
		}
	}
	base := median(times[0])
	fmt.Fprintf(&b.report, "## 1. Launch overhead: `IMAGE true`\n\nMedian of %d interleaved launches each (after one warm-up). Goal: containerjob ≤ 0.9 × the docker CLI.\n\n| tool | median | min | max | ratio to docker CLI |\n| --- | --- | --- | --- | --- |\n", *runs)
	for i, t := range tools {
		m := median(times[i])
		fmt.Fprintf(&b.report, "| %s | %s | %s | %s | %.2f |\n", t.name, ms(m), ms(pct(times[i], 0)), ms(pct(times[i], 1)), float64(m)/float64(base))
	}
	b.report.WriteString("\n")
	return nil
}

// 2. Output streaming.
func (b *bencher) stream() error {
	// A deterministic byte stream, generated the same way in the container
	// and here, so every byte and its order can be checked.
	gen := fmt.Sprintf("yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-stdout | head -c %d", *streamMB<<20)
	wantSum := func() string {
		c := exec.Command("sh", "-c", gen)
		h := sha256.New()
		c.Stdout = h
		c.Run()
		return hex.EncodeToString(h.Sum(nil))
	}()
	mixed := "i=0; while [ $i -lt 20000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done"
	tools := b.tools(false)
	type res struct{ secs []float64 }
	results := make([]res, len(tools))
	reps := *streamReps
	for r := 0; r < reps; r++ {
		for i, t := range tools {
			c := t.cmd("sh", "-c", gen)
			h := sha256.New()
			c.Stdout = h
			var stderr bytes.Buffer
			c.Stderr = &stderr
			start := time.Now()
			if err := c.Run(); err != nil {
				return fmt.Errorf("%s: %v %s", t.name, err, stderr.String())
			}
			d := time.Since(start).Seconds()
			if got := hex.EncodeToString(h.Sum(nil)); got != wantSum {
				return fmt.Errorf("%s: stdout checksum %s, want %s: bytes lost or reordered", t.name, got, wantSum)
			}
			results[i].secs = append(results[i].secs, d)
			b.rawf("stream %q run=%d seconds=%.3f", t.name, r, d)
		}
	}
	fmt.Fprintf(&b.report, "## 2. Output streaming: %d MiB to stdout\n\nWall time of the whole launch, median of %d interleaved run(s) per tool; the stdout checksum is compared with the same generator run on the host (any lost or reordered byte fails the benchmark). Goal: containerjob ≥ 1.0 × the docker CLI's throughput.\n\n| tool | median | throughput | ratio to docker CLI |\n| --- | --- | --- | --- |\n", *streamMB, reps)
	var base float64
	for i, t := range tools {
		s := append([]float64{}, results[i].secs...)
		sort.Float64s(s)
		m := s[len(s)/2]
		if i == 0 {
			base = m
		}
		fmt.Fprintf(&b.report, "| %s | %.2f s | %.0f MiB/s | %.2f |\n", t.name, m, float64(*streamMB)/m, base/m)
	}
	// Mixed stdout/stderr: each stream must arrive complete and in order.
	for _, t := range tools {
		c := t.cmd("sh", "-c", mixed)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		if err := c.Run(); err != nil {
			return fmt.Errorf("%s mixed: %v", t.name, err)
		}
		if err := inOrder(o.String(), "out-", 20000); err != nil {
			return fmt.Errorf("%s stdout: %v", t.name, err)
		}
		if err := inOrder(e.String(), "err-", 20000); err != nil {
			return fmt.Errorf("%s stderr: %v", t.name, err)
		}
	}
	b.report.WriteString("\nMixed stdout/stderr (20,000 lines each, interleaved): both tools delivered every line of each stream, in order.\n\n")
	return nil
}

func inOrder(s, prefix string, n int) error {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != n {
		return fmt.Errorf("%d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != prefix+strconv.Itoa(i) {
			return fmt.Errorf("line %d is %q", i, l)
		}
	}
	return nil
}

// 3. Concurrency.
func (b *bencher) concurrency() error {
	fmt.Fprintf(&b.report, "## 3. Concurrency: launches at once on one node\n\nEach launch is `IMAGE true`, all started together; latency is each launch's wall time. Containers left are counted by label (containerjob) or by the image (docker CLI, which has no label here) after all returned.\n\n| tool | launches | p50 | p99 | failures | containers left |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, n := range []int{32, 128} {
		for _, t := range b.tools(false) {
			lat := make([]time.Duration, n)
			fails := 0
			var mu sync.Mutex
			var wg sync.WaitGroup
			startGate := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					c := t.cmd("true")
					<-startGate
					s := time.Now()
					err := c.Run()
					lat[i] = time.Since(s)
					if err != nil {
						mu.Lock()
						fails++
						mu.Unlock()
					}
				}(i)
			}
			close(startGate)
			wg.Wait()
			left := b.leftovers()
			for _, l := range lat {
				b.rawf("concurrency %q n=%d %d", t.name, n, l.Microseconds())
			}
			fmt.Fprintf(&b.report, "| %s | %d | %s | %s | %d | %d |\n", t.name, n, ms(median(lat)), ms(pct(lat, 0.99)), fails, left)
		}
	}
	b.report.WriteString("\n")
	return nil
}

func (b *bencher) leftovers() int {
	f := client.Filters{}
	f.Add("ancestor", *image)
	res, err := b.engine.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return -1
	}
	return len(res.Items)
}

// 4. Footprint: peak RSS and CPU time of the client process.
func (b *bencher) footprint() error {
	// Exactly footSecs of wall time, a line about every 10 ms.
	script := fmt.Sprintf("sleep %d & i=0; while kill -0 $! 2>/dev/null; do echo line $i; usleep 10000; i=$((i+1)); done", *footSecs)
	fmt.Fprintf(&b.report, "## 4. Footprint: a %d s container printing a line every 10 ms\n\nBoth run at the same time. Peak RSS and CPU time (user+system) of the client process, from the kernel's rusage of that process alone (for containerjob: the privileged process, started by root with `--as-user`, so sudo is not counted; for docker: the CLI). Goal: containerjob under 20 MiB and below the docker CLI.\n\n| tool | peak RSS | CPU time | wall |\n| --- | --- | --- | --- |\n", *footSecs)
	// Both run at the same time (the run is long); each process's own
	// rusage is unaffected by the other's, bar scheduling noise.
	tools := []tool{b.tools(true)[0], b.tools(true)[2]}
	rows := make([]string, len(tools))
	errs := make([]error, len(tools))
	var wg sync.WaitGroup
	for i, t := range tools {
		wg.Add(1)
		go func(i int, t tool) {
			defer wg.Done()
			c := t.cmd("sh", "-c", script)
			c.Stdout = io.Discard
			s := time.Now()
			if err := c.Run(); err != nil {
				errs[i] = fmt.Errorf("%s: %v", t.name, err)
				return
			}
			ru := c.ProcessState.SysUsage().(*syscall.Rusage)
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			b.rawf("footprint %q maxrss_kb=%d cpu_ms=%d", t.name, ru.Maxrss, cpu.Milliseconds())
			rows[i] = fmt.Sprintf("| %s | %.1f MiB | %s | %.1f s |\n", t.name, float64(ru.Maxrss)/1024, ms(cpu), time.Since(s).Seconds())
		}(i, t)
	}
	wg.Wait()
	for i := range tools {
		if errs[i] != nil {
			return errs[i]
		}
		b.report.WriteString(rows[i])
	}
	b.report.WriteString("\n")
	return nil
}

// 5. Policy decision: the Go benchmark.
func (b *bencher) decision() error {
	c := exec.Command("go", "test", "-run=NONE", "-bench=Decide", "-benchmem", "-count=5", "./policy/")
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	b.rawf("%s", out)
	byName := map[string][]float64{}
	allocs := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 7 && strings.HasPrefix(f[0], "BenchmarkDecide") {
			v, _ := strconv.ParseFloat(f[2], 64)
			name := strings.TrimSuffix(strings.TrimPrefix(f[0], "BenchmarkDecide"), "-"+strconv.Itoa(runtime.NumCPU()))
			byName[name] = append(byName[name], v)
			allocs[name] = f[4] + " B, " + f[6] + " allocs"
		}
	}
	fmt.Fprintf(&b.report, "## 5. Policy decision\n\n`go test -run=NONE -bench=Decide -benchmem -count=5 ./policy/`: one request (image, command, env, a mount, two flags) against a policy; the caller is in 3 groups. Goal: under 50 µs, no allocation growth with the policy's size beyond the caller's rules.\n\n| policy | median | memory per decision |\n| --- | --- | --- |\n")
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := byName[n]
		sort.Float64s(v)
		fmt.Fprintf(&b.report, "| %s | %.1f µs | %s |\n", n, v[len(v)/2]/1000, allocs[n])
	}
	b.report.WriteString("\n")
	return nil
}

// 10. Node metrics: what one launch pays to count itself.
func (b *bencher) metrics() error {
	dir, err := os.MkdirTemp("/run", "cjbench-metrics-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := exec.Command("go", "test", "-run=NONE", "-bench=Update", "-benchmem", "-count=5", "./internal/metrics/")
	c.Env = append(os.Environ(), "TMPDIR="+dir) // /run: the tmpfs a node's metrics_dir would be on
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	b.rawf("%s", out)
	var v []float64
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && strings.HasPrefix(f[0], "BenchmarkUpdate") {
			x, _ := strconv.ParseFloat(f[2], 64)
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return fmt.Errorf("no benchmark result in %s", out)
	}
	sort.Float64s(v)
	fmt.Fprintf(&b.report, "## 10. Node metrics: one launch's update\n\n`go test -run=NONE -bench=Update -benchmem -count=5 ./internal/metrics/` with `TMPDIR` on /run (a tmpfs): the node lock, the state read and written, the exposition rendered and renamed into place, for a launch with five phases. Paid once per launch where `metrics_dir` is set, after the container has ended.\n\n| median of 5 | fastest | slowest |\n| --- | --- | --- |\n| %.0f µs | %.0f µs | %.0f µs |\n\n", v[len(v)/2]/1000, v[0]/1000, v[len(v)-1]/1000)
	return nil
}

// 6. Epilogue: remove 100 containers of one job.
func (b *bencher) epilog() error {
	const n = 100
	job := "bench" + strconv.FormatInt(time.Now().Unix(), 10)
	ctx := context.Background()
	// Setup, not measured: start the job's containers 8 at a time.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := b.engine.ContainerCreate(ctx, client.ContainerCreateOptions{
				Config: &container.Config{Image: *image, Cmd: []string{"sleep", "600"}, User: b.uid + ":" + b.gid,
					Labels: map[string]string{"org.containerjob.managed": "1", "org.containerjob.job": job, "org.containerjob.scheduler": "slurm", "org.containerjob.uid": b.uid}},
				HostConfig: &container.HostConfig{NetworkMode: "none"},
			})
			if err == nil {
				_, err = b.engine.ContainerStart(ctx, res.ID, client.ContainerStartOptions{})
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Where the time goes: the CPU the whole machine, the engine's two
	// daemons and the epilog process itself spent while it ran.
	busy0, all0 := machineCPU()
	dockerd0, containerd0 := daemonCPU("dockerd"), daemonCPU("containerd")
	cmd := exec.Command(*bin, "epilog", "--scheduler", "slurm", "--job", job)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return fmt.Errorf("epilog: %v %s", err, out.String())
	}
	busy1, all1 := machineCPU()
	dockerd := daemonCPU("dockerd") - dockerd0
	containerd := daemonCPU("containerd") - containerd0
	epilogCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	busy, util := busy1-busy0, float64(busy1-busy0)/float64(all1-all0)
	f := client.Filters{}
	f.Add("label", "org.containerjob.job="+job)
	left, _ := b.engine.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	b.rawf("epilog n=%d ms=%d left=%d machine_busy_ms=%d util=%.2f dockerd_ms=%d containerd_ms=%d client_ms=%d",
		n, d.Milliseconds(), len(left.Items), busy.Milliseconds(), util, dockerd.Milliseconds(), containerd.Milliseconds(), epilogCPU.Milliseconds())
	fmt.Fprintf(&b.report, "## 6. Epilogue: removing %d running containers of one job\n\n`containerjob epilog --scheduler slurm --job ID` with %d started containers labelled with the job (at most 8 removals in flight). Goal: under 5 s. CPU time over the same interval from `/proc/stat` (the machine, %d CPUs) and `/proc/PID/stat` (the engine's daemons), and the epilog process's own rusage.\n\n| containers | time | left | machine CPU busy | dockerd | containerd | epilog process |\n| --- | --- | --- | --- | --- | --- | --- |\n| %d | %.2f s | %d | %.1f CPU-s (%.0f%%) | %.1f CPU-s | %.1f CPU-s | %.2f CPU-s |\n\n",
		n, n, runtime.NumCPU(), n, d.Seconds(), len(left.Items), busy.Seconds(), util*100, dockerd.Seconds(), containerd.Seconds(), epilogCPU.Seconds())
	fmt.Fprintf(&b.report, "The removal is bound by the CPU the engine stack spends per container (%.2f CPU-s each here, most of it outside dockerd and containerd: the per-container shims, runc and the kernel's cgroup and mount teardown), not by the client: at %d CPUs that is at least %.1f s for %d containers whatever the client does.\n\n",
		busy.Seconds()/n, runtime.NumCPU(), busy.Seconds()/float64(runtime.NumCPU()), n)
	return nil
}

// machineCPU returns the busy and total CPU time of the machine so far,
// from /proc/stat's first line.
func machineCPU() (busy, total time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var ticks [10]int64
	for i := 1; i < len(f) && i <= 8; i++ {
		ticks[i], _ = strconv.ParseInt(f[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	b := ticks[1] + ticks[2] + ticks[3] + ticks[6] + ticks[7] + ticks[8]
	t := b + ticks[4] + ticks[5]
	return time.Duration(b) * clockTick, time.Duration(t) * clockTick
}

// daemonCPU is the user+system CPU time of the oldest process named name.
func daemonCPU(name string) time.Duration {
	out, err := exec.Command("pgrep", "-o", "-x", name).Output()
	if err != nil {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strings.TrimSpace(string(out)) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * clockTick
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// phases: where a launch's time goes, phase by phase, as containerjob itself
// times a real launch (--timings), as root and through sudo as the user.
func (b *bencher) phases() error {
	const n = 15
	// The phases containerjob --timings prints, in its order; engine marks
	// the ones that are Engine API calls.
	phases := []struct {
		name, what string
		engine     bool
	}{
		{"identity", "who is calling (sudo's parent, user database)", false},
		{"policy", "read and check the policy file", false},
		{"request", "job context, mount sources resolved as the caller", false},
		{"decision", "policy decision, audit record", false},
		{"image", "engine: connect, version, image inspect", true},
		{"stage", "open mount sources as the caller, stage them", false},
		{"guard", "check the final create request", false},
		{"create", "engine: create", true},
		{"attach", "engine: attach, wait registered", true},
		{"start", "engine: start (runc)", true},
		{"exit", "engine: until the exit is reported", true},
		{"remove", "engine: remove", true},
		{"audit", "end-of-container audit record", false},
	}
	// Table 1's three launches, with --timings; the docker CLI's wall time
	// in the same loop is what containerjob's is compared with below.
	tools := b.tools(true, "--timings")
	const cliTool, sudoTool, rootTool = 0, 1, 2
	samples := make([]map[string][]time.Duration, len(tools))
	for i := range samples {
		samples[i] = map[string][]time.Duration{}
	}
	for r := 0; r < n; r++ {
		for i, t := range tools {
			c := t.cmd("true")
			var stderr bytes.Buffer
			c.Stderr = &stderr
			t0 := time.Now()
			if err := c.Run(); err != nil {
				return fmt.Errorf("%s: %v %s", t.name, err, stderr.String())
			}
			wall := time.Since(t0)
			got := map[string]time.Duration{}
			if i != cliTool {
				if got = parseTimings(stderr.String()); got == nil {
					return fmt.Errorf("%s printed no timings: %q", t.name, stderr.String())
				}
			}
			got["wall"] = wall
			for k, v := range got {
				samples[i][k] = append(samples[i][k], v)
			}
			b.rawf("timings %q run=%d wall=%d %q", t.name, r, wall.Microseconds(), strings.TrimSpace(stderr.String()))
		}
	}
	med := func(tool int, k string) time.Duration { return median(samples[tool][k]) }
	sum := func(tool int, engine bool) time.Duration {
		var t time.Duration
		for _, p := range phases {
			if p.engine == engine {
				t += med(tool, p.name)
			}
		}
		return t
	}
	fmt.Fprintf(&b.report, "## Where a launch's time goes\n\n`containerjob run --timings IMAGE true` prints how long each phase of a real launch took (median of %d each, as root with `--as-user` and as the user through sudo, interleaved with the docker CLI's launch of table 1). Phases are timed from when the program's own code starts; what comes before (the process start) and around it (sudo, the user's side) is the wall time the bench saw minus the total.\n\n| phase | what | root | via sudo |\n| --- | --- | --- | --- |\n", n)
	for _, p := range phases {
		fmt.Fprintf(&b.report, "| %s | %s | %s | %s |\n", p.name, p.what, ms(med(rootTool, p.name)), ms(med(sudoTool, p.name)))
	}
	ownRoot, ownSudo := sum(rootTool, false), sum(sudoTool, false)
	engRoot, engSudo := sum(rootTool, true), sum(sudoTool, true)
	outRoot := med(rootTool, "wall") - med(rootTool, "total")
	outSudo := med(sudoTool, "wall") - med(sudoTool, "total")
	fmt.Fprintf(&b.report, "| **containerjob's own work** | the phases not marked engine | **%s** | **%s** |\n", ms(ownRoot), ms(ownSudo))
	fmt.Fprintf(&b.report, "| **engine** | the phases marked engine | **%s** | **%s** |\n", ms(engRoot), ms(engSudo))
	fmt.Fprintf(&b.report, "| **outside the timed code** | process start and exit; via sudo also the user's side and sudo | **%s** | **%s** |\n", ms(outRoot), ms(outSudo))
	fmt.Fprintf(&b.report, "| **wall** | as the bench saw it | **%s** | **%s** |\n\n", ms(med(rootTool, "wall")), ms(med(sudoTool, "wall")))
	// The docker CLI asks the engine for the same container (table 1), so
	// its own share is its wall time minus the engine's above; the goal
	// E + ours <= 0.9 (E + cli's) then bounds what containerjob may spend.
	cli := med(cliTool, "wall")
	cliOwn := cli - engRoot
	allowed := cli*9/10 - engRoot
	fmt.Fprintf(&b.report, "In the same loop the docker CLI took %s, so about %s of it was the CLI's own (its wall time minus the engine's %s, for the same container). containerjob at 0.9 × the CLI (%s) would have to do everything besides the engine in %s; it spends %s as root and %s through sudo, of which its own code is %s and %s: the rest is starting processes and sudo.\n\n",
		ms(cli), ms(cliOwn), ms(engRoot), ms(cli*9/10), ms(allowed), ms(outRoot+ownRoot), ms(outSudo+ownSudo), ms(ownRoot), ms(ownSudo))
	b.rawf("phases cli_wall=%d cli_own=%d allowed=%d", cli.Microseconds(), cliOwn.Microseconds(), allowed.Microseconds())
	b.rawf("phases own_root=%d own_sudo=%d engine_root=%d engine_sudo=%d outside_root=%d outside_sudo=%d",
		ownRoot.Microseconds(), ownSudo.Microseconds(), engRoot.Microseconds(), engSudo.Microseconds(), outRoot.Microseconds(), outSudo.Microseconds())
	return b.clientCosts()
}

// parseTimings reads the "containerjob: timings (ms): a 1.0, b 2.0, total 3.0"
// line; nil if there is none.
func parseTimings(stderr string) map[string]time.Duration {
	for _, line := range strings.Split(stderr, "\n") {
		rest, ok := strings.CutPrefix(line, "containerjob: timings (ms): ")
		if !ok {
			continue
		}
		out := map[string]time.Duration{}
		for _, part := range strings.Split(rest, ", ") {
			name, v, ok := strings.Cut(part, " ")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return nil
			}
			out[name] = time.Duration(f * float64(time.Millisecond))
		}
		return out
	}
	return nil
}

// clientCosts measures what a launch pays outside the engine that no API
// call shows: starting the containerjob binary (twice per launch through
// sudo: the user's side and the privileged side) and sudo itself.
func (b *bencher) clientCosts() error {
	const n = 20
	timeIt := func(mk func() *exec.Cmd) (time.Duration, error) {
		var d []time.Duration
		for i := 0; i < n; i++ {
			c := mk()
			t0 := time.Now()
			if out, err := c.CombinedOutput(); err != nil {
				return 0, fmt.Errorf("%v: %v %s", c.Args, err, out)
			}
			d = append(d, time.Since(t0))
		}
		return median(d), nil
	}
	start, err := timeIt(func() *exec.Cmd { return exec.Command(*bin, "version") })
	if err != nil {
		return err
	}
	viaSudo, err := timeIt(func() *exec.Cmd { return b.asUser("/usr/bin/sudo", "-n", *bin, "version") })
	if err != nil {
		return err
	}
	// Package initialisation, summed from the runtime's own trace.
	c := exec.Command(*bin, "version")
	c.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	trace, _ := c.CombinedOutput()
	var inits float64
	for _, line := range strings.Split(string(trace), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[0] == "init" {
			v, _ := strconv.ParseFloat(f[4], 64)
			inits += v
		}
	}
	b.rawf("client start=%d sudo+start=%d inits_ms=%.2f", start.Microseconds(), viaSudo.Microseconds(), inits)
	fmt.Fprintf(&b.report, "What a launch pays outside the engine (median of %d): one start of the containerjob binary (`containerjob version`: Go runtime and package initialisation; the linked packages' init functions took %.1f ms of it in one run with `GODEBUG=inittrace=1`) and sudo (`sudo -n containerjob version` as the user, minus one start).\n\n| cost | median |\n| --- | --- |\n", n, inits)
	fmt.Fprintf(&b.report, "| one containerjob process start | %s |\n| sudo | %s |\n| two starts and sudo (a user's launch) | %s |\n\n", ms(start), ms(viaSudo-start), ms(start+viaSudo))
	return nil
}
