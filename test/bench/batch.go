package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

// batch: a batch job writing -batch-mib MiB of zeros to its output file
// (slurm-N.out's place, sbatch -o), timed inside the job on the host's
// clock around the one command: no container (the host's busybox head,
// the program alpine's head is), containerjob's wrapper form with the
// output handed to the command (launcher/handoff.go), the same with
// containerjob-init moved aside (the engine's path, as before), and the
// docker CLI as root. Each output is checked: its size and that every
// byte is the generator's.
func (b *bencher) batch() error {
	conf := *slurmDir + "/slurm.conf"
	if _, err := os.Stat(conf); err != nil {
		return fmt.Errorf("no test cluster at %s (make guide brings it up): %v", *slurmDir, err)
	}
	os.Setenv("SLURM_CONF", conf)
	if _, err := testutil.InstallFile(policy.DefaultPath, []byte(stepsPolicy("shared")), 0o644); err != nil {
		return err
	}
	initPath, err := installedInit()
	if err != nil {
		return err
	}
	size := int64(*batchMiB) << 20
	gen := fmt.Sprintf("head -c %d /dev/zero", size)
	wantSum := zeroSum(size)
	type variant struct {
		name    string
		root    bool
		cmd     string
		noInit  bool
		seconds []float64
	}
	variants := []*variant{
		{name: "no container (busybox head on the host)", cmd: "busybox " + gen},
		{name: "containerjob, output handed to the command", cmd: *bin + " " + *image + " " + gen},
		{name: "containerjob through the engine (containerjob-init moved aside)", cmd: *bin + " " + *image + " " + gen, noInit: true},
		{name: "docker CLI (root)", root: true, cmd: b.docker + " " + strings.Join(b.dockerArgs(strings.Fields(gen)...), " ")},
	}
	dir, err := b.userDir("cjbench-batch")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for r := 0; r < *batchRuns; r++ {
		for i, v := range variants {
			if v.noInit {
				if err := os.Rename(initPath, initPath+".bench-aside"); err != nil {
					return err
				}
			}
			secs, err := b.batchJob(dir, fmt.Sprintf("%d-%d", r, i), v.root, v.cmd, size, wantSum)
			if v.noInit {
				if rerr := os.Rename(initPath+".bench-aside", initPath); rerr != nil {
					return fmt.Errorf("%s could not be put back: %v", initPath, rerr)
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %v", v.name, err)
			}
			v.seconds = append(v.seconds, secs)
			b.rawf("batch %q run=%d seconds=%.2f", v.name, r, secs)
		}
	}
	if n := b.leftovers(); n != 0 {
		return fmt.Errorf("%d containers of %s left after the batch jobs", n, *image)
	}
	fmt.Fprintf(&b.report, "## 11. A batch job's %d MiB of output to its file\n\n", *batchMiB)
	fmt.Fprintf(&b.report, "`sbatch -o FILE --wrap 'T0; COMMAND; T1'` on the test cluster (Slurm %s), COMMAND writing %d MiB of zeros to the job's output file (`%s`); T0 and T1 read the host's uptime clock in the batch script (10 ms resolution), so the figure is the whole launch: decision, create, the output, the exit and the removal, without the scheduler's wait. The docker CLI job is root's. Every output is checked: its size and its checksum. Median of %d interleaved rounds. `go run ./test/bench -only batch` (make bench).\n\n", slurmVersion(), *batchMiB, gen, *batchRuns)
	b.report.WriteString("| variant | median | ratio to no container |\n| --- | --- | --- |\n")
	base := medianF(variants[0].seconds)
	for _, v := range variants {
		m := medianF(v.seconds)
		fmt.Fprintf(&b.report, "| %s | %.2f s | %.2f |\n", v.name, m, m/base)
	}
	b.report.WriteString("\nThe host's `busybox head` is the baseline because alpine's `head` is busybox's too: GNU head writes the same bytes in about half the time here, which is the program's, not the container's.\n\n")
	return nil
}

// batchJob submits one job running cmd, waits for its end and returns
// the seconds its script measured around cmd.
func (b *bencher) batchJob(dir, name string, root bool, cmd string, size int64, wantSum string) (float64, error) {
	out := filepath.Join(dir, name+".out")
	times := filepath.Join(dir, name+".t")
	script := fmt.Sprintf(`read t0 x < /proc/uptime; %s; rc=$?; read t1 x < /proc/uptime; echo "$rc $t0 $t1" > %s`, cmd, times)
	argv := []string{"sbatch", "--parsable", "-p", "main", "-N1", "-n1", "-o", out, "--wrap", script}
	var c *exec.Cmd
	if root {
		c = exec.Command(argv[0], argv[1:]...)
		c.Dir = dir
	} else {
		c = b.asUser(argv...)
		c.Env = append(c.Env, "SLURM_CONF="+os.Getenv("SLURM_CONF"))
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	o, err := c.Output()
	if err != nil {
		return 0, fmt.Errorf("sbatch: %v: %s", err, stderr.String())
	}
	id := strings.TrimSpace(string(o))
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, _ := exec.Command("squeue", "-h", "-j", id, "-o", "%T").Output()
		if len(bytes.TrimSpace(st)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			exec.Command("scancel", id).Run()
			return 0, fmt.Errorf("job %s did not end within 10 minutes", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer os.Remove(out)
	defer os.Remove(times)
	t, err := os.ReadFile(times)
	if err != nil {
		return 0, fmt.Errorf("job %s left no times: %v", id, err)
	}
	f := strings.Fields(string(t))
	if len(f) != 3 || f[0] != "0" {
		return 0, fmt.Errorf("job %s: %q (exit, start, end)", id, t)
	}
	sum, n, err := fileSum(out)
	if err != nil {
		return 0, err
	}
	if n != size || sum != wantSum {
		return 0, fmt.Errorf("job %s wrote %d bytes (sha256 %s), want %d (%s): bytes lost or changed", id, n, sum, size, wantSum)
	}
	t0, _ := strconv.ParseFloat(f[1], 64)
	t1, _ := strconv.ParseFloat(f[2], 64)
	return t1 - t0, nil
}

// userDir is a fresh directory of the bench user's, in their home, for a
// section's jobs to write to; the section removes it.
func (b *bencher) userDir(name string) (string, error) {
	dir := filepath.Join(b.home, name)
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.Chown(dir, atoi(b.uid), atoi(b.gid))
}

// installedInit is containerjob-init beside the containerjob under test
// (the package's LIBEXECDIR).
func installedInit() (string, error) {
	for _, p := range []string{"/usr/libexec/containerjob/containerjob-init", "/usr/local/libexec/containerjob/containerjob-init"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("containerjob-init is not installed (make install or the package)")
}

func zeroSum(n int64) string {
	h := sha256.New()
	io.CopyN(h, zeroReader{}, n)
	return hex.EncodeToString(h.Sum(nil))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func fileSum(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

func medianF(s []float64) float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	if len(c) == 0 {
		return 0
	}
	return c[len(c)/2]
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
