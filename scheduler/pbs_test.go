package scheduler

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func fixture(t *testing.T, name, session string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(data, []byte("@SESSION@"), []byte(session))
}

func TestParseQstatJSON(t *testing.T) {
	j, err := ParseQstatJSON(fixture(t, "qstat-f-F-json-running.json", "31337"), "4242.pbshead")
	if err != nil {
		t.Fatal(err)
	}
	if j.User != "alice" || j.State != "R" || j.SessionID != 31337 || j.WorkDir != "/home/alice/run" || !reflect.DeepEqual(j.Hosts, []string{"node01", "node02"}) {
		t.Errorf("parsed %+v", j)
	}
	if _, err := ParseQstatJSON(fixture(t, "qstat-f-F-json-running.json", "1"), "9.pbshead"); err == nil {
		t.Errorf("a job not in the output was accepted")
	}
}

func TestParseQstatText(t *testing.T) {
	j, err := ParseQstatText(fixture(t, "qstat-f-torque-running.txt", "4711"), "977.torquehead")
	if err != nil {
		t.Fatal(err)
	}
	if j.User != "alice" || j.State != "R" || j.SessionID != 4711 || j.WorkDir != "/home/alice/run" || !reflect.DeepEqual(j.Hosts, []string{"node01", "node02"}) {
		t.Errorf("parsed %+v", j)
	}
	if j.Env["PBS_O_SERVER"] != "torquehead" {
		t.Errorf("continuation lines lost: %v", j.Env)
	}
}

func TestPBSCgroupJob(t *testing.T) {
	tests := []struct {
		data, want string
		ok         bool
	}{
		{"4:memory:/pbs_jobs.service/jobid/4242.pbshead\n", "4242.pbshead", true},
		{"0::/pbs_jobs.service/jobid/17[3].srv/tasks\n", "17[3].srv", true},
		{"6:cpuset:/torque/977.torquehead\n", "977.torquehead", true},
		{"4:memory:/user.slice\n", "", false},
	}
	for _, tt := range tests {
		got, ok := PBSCgroupJob([]byte(tt.data))
		if got != tt.want || ok != tt.ok {
			t.Errorf("PBSCgroupJob(%q) = %q, %v", tt.data, got, ok)
		}
	}
}

func TestSplitVariableList(t *testing.T) {
	got := splitVariableList(`A=1,B=x\,y,C=`)
	if !reflect.DeepEqual(got, []string{"A=1", "B=x,y", "C="}) {
		t.Errorf("got %q", got)
	}
	if !strings.Contains(strings.Join(got, ""), "x,y") {
		t.Error("escaped comma lost")
	}
}

// TestVerifyPBSWaitsForTheSession: a real OpenPBS 23.06 server reports a
// job running without its session_id until the MOM's next update (about
// 2 s; both answers recorded in testdata). A launch at the top of the job
// script waits for it instead of refusing the job's own process.
func TestVerifyPBSWaitsForTheSession(t *testing.T) {
	started, _ := filepath.Abs("testdata/qstat-f-F-json-openpbs-23.06-just-started.json")
	running, _ := filepath.Abs("testdata/qstat-f-F-json-openpbs-23.06-running.json")
	dir := t.TempDir()
	qstat := filepath.Join(dir, "qstat")
	script := "#!/bin/sh\nif [ -e " + dir + "/asked ]; then cat " + running + "; else touch " + dir + "/asked; cat " + started + "; fi\n"
	if err := os.WriteFile(qstat, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := PBS{Qstat: qstat, JSON: true, Node: "cjpbs"}
	job, _, err := p.VerifyPBS(context.Background(), "cjalice", "4.cjpbs", nil, 1814)
	if err != nil || job.ID != "4.cjpbs" || job.Dir != "/home/cjalice/pbs1" {
		t.Fatalf("VerifyPBS = %+v, %v; want the job once its session is known", job, err)
	}
	// Another session is refused all the same, and without waiting
	// forever when the session never comes.
	os.Remove(dir + "/asked")
	if _, _, err := p.VerifyPBS(context.Background(), "cjalice", "4.cjpbs", nil, 4242); err == nil || !strings.Contains(err.Error(), "not in that job's session") {
		t.Errorf("another session: %v", err)
	}
	old := PBSSessionWait
	PBSSessionWait = 0
	t.Cleanup(func() { PBSSessionWait = old })
	os.Remove(dir + "/asked")
	if _, _, err := p.VerifyPBS(context.Background(), "cjalice", "4.cjpbs", nil, 1814); err == nil {
		t.Error("a job without a known session was accepted")
	}
}
