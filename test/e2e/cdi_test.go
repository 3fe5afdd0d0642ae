//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// TestCDIGPUs: with gpus_mode = "cdi" on an engine with CDI on (Docker
// 25+; the trixie lane's Docker 26 with contrib/dev/fake-cdi-spec), a job
// with 2 of the node's 4 fake GPUs gets exactly those device nodes (and
// the spec's control device), and a job without GPUs gets none. The fake
// spec numbers its index names backwards from the device minors, as a
// node's PCI order may: containerjob must name each GPU by the spec's
// device that brings its device file, not by a number. doctor finds every
// GPU of the node in the spec. Not
// parallel: it installs its own policy for its duration. The first lane's
// engine (Docker 20.10) has no CDI; the trixie lane must run it.
func TestCDIGPUs(t *testing.T) {
	v, err := docker.ServerVersion(context.Background(), client.ServerVersionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := docker.Info(context.Background(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Info.CDISpecDirs) == 0 {
		if os.Getenv("CONTAINERJOB_E2E_LANE") != "" {
			t.Fatalf("the %s lane's engine %s has CDI off", os.Getenv("CONTAINERJOB_E2E_LANE"), v.Version)
		}
		t.Skipf("engine %s (API %s) has no CDI; the trixie lane runs this test", v.Version, v.APIVersion)
	}
	cdiPolicy := strings.Replace(testPolicy, `gpus_mode = "devices"`, `gpus_mode = "cdi"`, 1)
	if cdiPolicy == testPolicy {
		t.Fatal("the suite's policy has no gpus_mode line to change")
	}
	usePolicy(t, cdiPolicy)

	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt --gres=gpu:2
echo "ALLOC $SLURM_JOB_GPUS"
srun --container-image=alpine:3.20 sh -c 'echo "DEVICES $(ls /dev/nvidia* | tr "\n" " ")"; echo "CUDA $CUDA_VISIBLE_DEVICES"'
echo "step1 $?"
`)
	state, _ := waitJob(t, id, 3*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "COMPLETED" || !strings.Contains(out, "step1 0") {
		t.Fatalf("job %s: %s, output %q", id, state, out)
	}
	none := as(t, alice, dir, `srun --container-image=alpine:3.20 sh -c 'echo "NONE $(ls /dev/nvidia* 2>/dev/null | wc -l)"'`)
	out += none.Stdout
	alloc := regexp.MustCompile(`(?m)^ALLOC (\d+),(\d+)$`).FindStringSubmatch(out)
	devs := regexp.MustCompile(`(?m)^DEVICES (.*)$`).FindStringSubmatch(out)
	if alloc == nil || devs == nil {
		t.Fatalf("output %q", out)
	}
	got := strings.Fields(devs[1])
	want := []string{"/dev/nvidia" + alloc[1], "/dev/nvidia" + alloc[2], "/dev/nvidiactl"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("a job with GPUs %s,%s sees %v, want %v", alloc[1], alloc[2], got, want)
	}
	for _, w := range []string{"CUDA 0,1", "NONE 0"} {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("output %q lacks %q", out, w)
		}
	}
	doc, _ := exec.Command(bin, "doctor").CombinedOutput()
	if !strings.Contains(string(doc), "the CDI specs name each of the node's 4 GPUs") {
		t.Errorf("doctor with gpus_mode cdi: %s", doc)
	}
	fmt.Fprintf(os.Stderr, "TestCDIGPUs: engine %s gave job %s CDI devices %v\n", v.Version, id, got)
}
