package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
	"github.com/containerjob/containerjob/policy"
)

const pullAddr = "127.0.0.1:5061"

// pullsPolicy lets the bench user pull from the bench's registry.
const pullsPolicy = benchPolicy + `
[user.cjbench]
images_allow = ["alpine:*", "` + pullAddr + `/cjbench/*"]
pull = ["missing"]
flags_allow = ["pull"]
max_containers_per_user = 256
`

// registryServed counts a registry log's GETs of manifests and blobs, and
// the bytes of the blobs.
func registryServed(log []byte) (manifests, blobs int, bytes int64) {
	for _, r := range testutil.ParseRegistryLog(log) {
		switch {
		case r.Method != "GET":
		case strings.Contains(r.URI, "/manifests/"):
			manifests++
		case strings.Contains(r.URI, "/blobs/"):
			blobs++
			bytes += r.Written
		}
	}
	return
}

// pulls: -pull-launches launches at once of a -pull-mib MiB image that is
// not on the node, served by a local registry (Debian's docker-registry):
// wall time until every launch has exited, and what the registry served.
func (b *bencher) pulls() error {
	restore, err := testutil.InstallFile(policy.DefaultPath, []byte(pullsPolicy), 0o644)
	if err != nil {
		return err
	}
	defer restore()
	dir, err := os.MkdirTemp("", "cjbench-registry-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg, err := testutil.WriteRegistryConfig(dir, filepath.Join(dir, "data"), pullAddr)
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	reg := exec.Command(testutil.RegistryBin, "serve", cfg)
	reg.Stdout, reg.Stderr = logf, logf
	if err := reg.Start(); err != nil {
		return fmt.Errorf("docker-registry: %v", err)
	}
	defer func() { reg.Process.Kill(); reg.Wait(); logf.Close() }()
	ref := pullAddr + "/cjbench/big:1"
	if err := testutil.BuildAndPush(b.docker, *image, ref, nil, fmt.Sprintf("head -c %dm /dev/urandom > /bulk", *pullMiB)); err != nil {
		return fmt.Errorf("making the image: %v", err)
	}
	defer exec.Command(b.docker, "rmi", ref).Run()
	fmt.Fprintf(&b.report, "## 8. A burst of launches of an image not on the node\n\n%d launches at once of `true` in a %d MiB image (one layer of random bytes over alpine) that is not on the node, served by Debian's docker-registry on the loopback; the image is removed before each run. Wall time from the start until every launch has exited; what the registry served (its log). Median of %d runs.\n\n| tool | all %d done | manifest GETs | blob GETs | bytes served |\n| --- | --- | --- | --- | --- |\n", *pullLaunches, *pullMiB, *pullRuns, *pullLaunches)
	dockerRun := func(a ...string) *exec.Cmd {
		args := b.dockerArgs(a...)
		for i, s := range args { // the bench image, not -image
			if s == *image {
				args[i] = ref
			}
		}
		return exec.Command(b.docker, args...)
	}
	tools := []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"docker CLI (root)", func() *exec.Cmd { return dockerRun("true") }},
		{"containerjob (user, via sudo)", func() *exec.Cmd { return b.asUser(*bin, "--pull", "missing", ref, "true") }},
	}
	for _, t := range tools {
		var walls []time.Duration
		var man, blob int
		var served int64
		fails := 0
		firstFail := ""
		for run := 0; run < *pullRuns; run++ {
			exec.Command(b.docker, "rmi", ref).Run()
			before, _ := os.ReadFile(logPath)
			var wg sync.WaitGroup
			var mu sync.Mutex
			gate := make(chan struct{})
			for i := 0; i < *pullLaunches; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := t.cmd()
					<-gate
					if out, err := c.CombinedOutput(); err != nil {
						mu.Lock()
						fails++
						if firstFail == "" {
							firstFail = strings.TrimSpace(string(out))
						}
						mu.Unlock()
					}
				}()
			}
			start := time.Now()
			close(gate)
			wg.Wait()
			wall := time.Since(start)
			walls = append(walls, wall)
			after, _ := os.ReadFile(logPath)
			m, bl, by := registryServed(after[len(before):])
			man, blob, served = m, bl, by
			b.rawf("pulls %q run=%d wall_ms=%d manifests=%d blobs=%d bytes=%d", t.name, run, wall.Milliseconds(), m, bl, by)
		}
		fmt.Fprintf(&b.report, "| %s | %s | %d | %d | %.0f MiB |\n", t.name, ms(median(walls)), man, blob, float64(served)/(1<<20))
		if fails > 0 {
			fmt.Fprintf(&b.report, "\n%s: %d launches failed; the first said `%s`.\n\n", t.name, fails, firstFail)
		}
	}
	b.report.WriteString("\nThe last run's registry counts are shown; the raw file has every run's.\n")
	return nil
}
