package scheduler

import (
	"bytes"
	"os"
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
