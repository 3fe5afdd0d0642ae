package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/doctor"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/node"
)

func captureStderr(t *testing.T) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	old := stderr
	stderr = &b
	t.Cleanup(func() { stderr = old })
	return &b
}

// The lines a finished launch adds to the job's output (the output
// contract): an OOM kill with the job's memory, an engine that stopped
// the container, and the usage line only where the policy asks for it.
func TestPrintOutcome(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tt := range []struct {
		name string
		out  node.Outcome
		want []string
		not  []string
	}{
		{"OOM with the job's memory", node.Outcome{Result: launcher.Result{OOMKilled: true, MemoryLimit: 300 << 20, ExitCode: 137}},
			[]string{"containerjob: error: the container was killed for using more than the job's memory on this node (300 MiB); ask for more memory (e.g. sbatch --mem)\n"}, nil},
		{"OOM without a known limit", node.Outcome{Result: launcher.Result{OOMKilled: true}}, []string{"more than its memory limit;"}, nil},
		{"engine stopped", node.Outcome{Result: launcher.Result{EngineStopped: true, ExitCode: 143}}, []string{"the container engine stopped", "(exit 143)", "this was not your program's doing"}, nil},
		{"usage asked for", node.Outcome{ReportUsage: true, Result: launcher.Result{Started: start, Ended: start.Add(1500 * time.Millisecond), Usage: launcher.Usage{Sampled: true, CPU: 250 * time.Millisecond, PeakMemory: 3 << 20}}},
			[]string{"containerjob: usage: cpu 0.25 s, peak memory 3.0 MiB, wall 1.50 s, exit 0\n"}, nil},
		{"usage not asked for", node.Outcome{Result: launcher.Result{Usage: launcher.Usage{Sampled: true}}}, nil, []string{"usage"}},
		{"usage not known", node.Outcome{ReportUsage: true}, nil, []string{"usage"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := captureStderr(t)
			printOutcome(tt.out)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output %q lacks %q", b, w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("output %q has %q", b, w)
				}
			}
		})
	}
}

// What the launcher tells while it runs, one line each; a pull's count
// for the metrics is not the user's.
func TestPrintNotice(t *testing.T) {
	b := captureStderr(t)
	printNotice(launcher.Notice{Kind: launcher.NoticePulling, Text: "alpine:3.20\nforged line"})
	printNotice(launcher.Notice{Kind: launcher.NoticePulled, Bytes: 1 << 20})
	printNotice(launcher.Notice{Kind: launcher.NoticeWaitingForPull, Text: "alpine:3.20"})
	printNotice(launcher.Notice{Kind: launcher.NoticeWarning, Text: "container abc could not be removed"})
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "containerjob: pulling alpine:3.20") ||
		lines[1] != "containerjob: waiting for another launch's pull of alpine:3.20 on this node" ||
		!strings.Contains(lines[2], "container abc could not be removed") {
		t.Errorf("notices printed %q", lines)
	}
}

func TestInJobAndDash(t *testing.T) {
	if !inJob([]string{"HOME=/h", "SLURM_JOB_ID=7"}) || !inJob([]string{"PBS_JOBID=1.srv"}) || inJob([]string{"SLURM_JOB_IDX=7", "X=SLURM_JOB_ID=7"}) {
		t.Error("inJob reads only SLURM_JOB_ID= and PBS_JOBID= entries")
	}
	if dash("") != "-" || dash("x") != "x" {
		t.Error("dash")
	}
}

// TestPrintChecks: doctor's lines. A warning is printed WARN with its fix
// and is no failure; a failure is FAIL with its fix and counted; a skip
// is neither, and its fix is not printed.
func TestPrintChecks(t *testing.T) {
	var b strings.Builder
	failed := printChecks(&b, []doctor.Check{
		{Name: "runc advisories", OK: true, Warn: true, Info: "runc 1.2.0 is affected", Fix: "install runc 1.3.6"},
		{Name: "engine", Info: "no engine", Fix: "start dockerd"},
		{Name: "slurm", Skip: true, Info: "not a Slurm node", Fix: "never shown"},
		{Name: "cgroups", OK: true, Info: "v2"},
	})
	want := "WARN runc advisories                    runc 1.2.0 is affected\n     fix: install runc 1.3.6\n" +
		"FAIL engine                             no engine\n     fix: start dockerd\n" +
		"skip slurm                              not a Slurm node\n" +
		"ok   cgroups                            v2\n"
	if failed != 1 || b.String() != want {
		t.Errorf("printed %d failed:\n%s\nwant 1:\n%s", failed, b.String(), want)
	}
}
