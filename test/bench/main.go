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
	out        = flag.String("out", "docs/benchmarks.md", "markdown report")
	raw        = flag.String("raw", "bench-raw.txt", "raw numbers")
	runs       = flag.Int("runs", 15, "launches per tool for the overhead benchmark")
	streamMB   = flag.Int("stream-mb", 1024, "MiB written to stdout in the streaming benchmark")
	footSecs   = flag.Int("footprint-seconds", 60, "duration of the footprint benchmark")
	streamReps = flag.Int("stream-reps", 1, "runs per tool of the streaming benchmark (1 GiB through the docker CLI takes over a minute here)")
	image      = flag.String("image", "alpine:3.20", "image")
	userName   = flag.String("user", "cjbench", "non-root user to launch as")
	bin        = flag.String("bin", "/usr/local/bin/containerjob", "containerjob")
	dockerB    = flag.String("docker", "", "docker CLI (default: first in PATH)")
	only       = flag.String("only", "", "comma-separated subset: overhead,stream,concurrency,footprint,decision,epilog")
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
	// cliLaunch is the docker CLI's median launch from table 1.
	cliLaunch time.Duration
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

func (b *bencher) tools(withRoot bool) []tool {
	t := []tool{
		{"docker CLI (root)", func(a ...string) *exec.Cmd {
			c := exec.Command(b.docker, b.dockerArgs(a...)...)
			c.Dir = b.home
			return c
		}},
		{"containerjob (user, via sudo)", func(a ...string) *exec.Cmd {
			return b.asUser(append([]string{*bin, *image}, a...)...)
		}},
	}
	if withRoot {
		t = append(t, tool{"containerjob (root, --as-user, no sudo)", func(a ...string) *exec.Cmd {
			c := exec.Command(*bin, append([]string{"run", "--as-user", *userName, *image}, a...)...)
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
	b.cliLaunch = base
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
	start := time.Now()
	out, err := exec.Command(*bin, "epilog", "--scheduler", "slurm", "--job", job).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return fmt.Errorf("epilog: %v %s", err, out)
	}
	f := client.Filters{}
	f.Add("label", "org.containerjob.job="+job)
	left, _ := b.engine.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	b.rawf("epilog n=%d ms=%d left=%d", n, d.Milliseconds(), len(left.Items))
	fmt.Fprintf(&b.report, "## 6. Epilogue: removing %d running containers of one job\n\n`containerjob epilog --scheduler slurm --job ID` with %d started containers labelled with the job (at most 8 removals in flight). Goal: under 5 s.\n\n| containers | time | left |\n| --- | --- | --- |\n| %d | %.2f s | %d |\n\n", n, n, n, d.Seconds(), len(left.Items))
	return nil
}

// phases: where a launch's time goes, call by call, for the create request
// containerjob sends (log driver none), measured from this process.
func (b *bencher) phases() error {
	ctx := context.Background()
	names := []string{"ping+image inspect", "create", "attach", "wait (register)", "start", "exit seen", "remove"}
	samples := make([][]time.Duration, len(names))
	const n = 10
	for r := 0; r < n; r++ {
		c, err := client.New(client.WithHost("unix:///var/run/docker.sock"))
		if err != nil {
			return err
		}
		var marks []time.Duration
		last := time.Now()
		mark := func() { marks = append(marks, time.Since(last)); last = time.Now() }
		img, err := c.ImageInspect(ctx, *image)
		if err != nil {
			return err
		}
		mark()
		pids := int64(4096)
		hc := &container.HostConfig{NetworkMode: "none", CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"},
			LogConfig: container.LogConfig{Type: "none"}}
		hc.PidsLimit = &pids
		cr, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config:     &container.Config{Image: img.ID, Cmd: []string{"true"}, User: b.uid + ":" + b.gid, AttachStdout: true, AttachStderr: true},
			HostConfig: hc,
		})
		if err != nil {
			return err
		}
		mark()
		att, err := c.ContainerAttach(ctx, cr.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
		if err != nil {
			return err
		}
		mark()
		w := c.ContainerWait(ctx, cr.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
		mark()
		if _, err := c.ContainerStart(ctx, cr.ID, client.ContainerStartOptions{}); err != nil {
			return err
		}
		mark()
		select {
		case <-w.Result:
		case err := <-w.Error:
			return err
		}
		mark()
		att.Close()
		if _, err := c.ContainerRemove(ctx, cr.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
			return err
		}
		mark()
		c.Close()
		for i, d := range marks {
			samples[i] = append(samples[i], d)
			b.rawf("phase %q run=%d %d", names[i], r, d.Microseconds())
		}
	}
	var total time.Duration
	fmt.Fprintf(&b.report, "## Where a launch's time goes\n\nThe Engine API calls of one launch, as containerjob makes them (median of %d, measured from a client on this machine). Everything else containerjob does (two process starts, sudo, policy, path resolution) is the difference between its row in table 1 and the sum below.\n\n| call | median |\n| --- | --- |\n", n)
	for i, name := range names {
		m := median(samples[i])
		total += m
		fmt.Fprintf(&b.report, "| %s | %s |\n", name, ms(m))
	}
	fmt.Fprintf(&b.report, "| **sum** | **%s** |\n\n", ms(total))
	return b.clientCosts(total)
}

// clientCosts measures what a launch pays outside the engine that no API
// call shows: starting the containerjob binary (twice per launch through
// sudo: the user's side and the privileged side) and sudo itself.
func (b *bencher) clientCosts(engine time.Duration) error {
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
	if b.cliLaunch > 0 {
		budget := b.cliLaunch*9/10 - engine
		fmt.Fprintf(&b.report, "The launch goal, 0.9 × the docker CLI's %s, leaves %s for everything a launch does outside the engine calls above (%s); two process starts and sudo alone take %s.\n\n", ms(b.cliLaunch), ms(budget), ms(engine), ms(start+viaSudo))
	}
	return nil
}
