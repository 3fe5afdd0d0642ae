package node

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/internal/metrics"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// The audit trail's records of a launch: the request as the job made it
// (the pin beside what was asked), and the container's end or failure.
func TestLaunchRecords(t *testing.T) {
	caller := policy.Caller{User: "alice", UID: 1002, GID: 1002}
	r := request{
		req:       policy.Request{Image: "alpine@sha256:aa", Cmd: []string{"id"}},
		job:       scheduler.Job{ID: "7", Step: "0", Node: "n1"},
		requested: "alpine:3.20",
		pinning:   imagePinning{PinnedID: "sha256:bb"},
	}
	rec := decisionRecord(caller, Input{Resolve: true}, r)
	for k, want := range map[string]any{"job": "7", "image": "alpine@sha256:aa", "image_requested": "alpine:3.20", "image_pinned_id": "sha256:bb", "action": "resolve"} {
		if rec[k] != want {
			t.Errorf("decision record %s = %v, want %v", k, rec[k], want)
		}
	}
	if rec := decisionRecord(caller, Input{}, request{req: policy.Request{Image: "alpine:3.20"}, requested: "alpine:3.20"}); rec["image_requested"] != nil || rec["image_pinned_id"] != nil || rec["action"] != nil {
		t.Errorf("a request as asked records %v", rec)
	}
	dec := &policy.Decision{Image: policy.ImageRef{Name: "docker.io/library/alpine", Tag: "3.20"},
		Spec: specs.Spec{Mounts: []specs.Mount{{Source: "/home/alice", Destination: "/home/alice", Options: []string{"rbind", "ro"}}}}}
	if got := mountsRecord(dec); len(got) != 1 || got[0] != "/home/alice:/home/alice:rbind,ro" {
		t.Errorf("mounts record %q", got)
	}

	path := filepath.Join(t.TempDir(), "audit.log")
	trail, err := audit.Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	recordEnd(trail, nil, caller, r.job, dec, r.requested, r.req.Image, launcher.Result{ContainerID: "c1", ExitCode: 137, OOMKilled: true, Started: start, Ended: start.Add(2 * time.Second)}, nil)
	recordEnd(trail, nil, caller, r.job, dec, r.requested, r.requested, launcher.Result{ContainerID: "c2"}, errors.New("creating the container failed"))
	trail.Close()
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit log %q, want two records", b)
	}
	var end, failed map[string]any
	json.Unmarshal([]byte(lines[0]), &end)
	json.Unmarshal([]byte(lines[1]), &failed)
	if end["msg"] != "container-end" || end["exit_code"] != float64(137) || end["oom_killed"] != true || end["duration_s"] != float64(2) || end["image_requested"] != "alpine:3.20" {
		t.Errorf("end record %v", end)
	}
	if failed["msg"] != "container-failed" || failed["error"] != "creating the container failed" || failed["exit_code"] != nil || failed["image_requested"] != nil {
		t.Errorf("failure record %v", failed)
	}
}

// The phase clock charges each phase the time since the last, and the
// pull notices count for the node's metrics without reaching the caller.
func TestPhaseClockAndPullNotices(t *testing.T) {
	var reported []string
	c := newPhaseClock(func(name string) { reported = append(reported, name) })
	time.Sleep(5 * time.Millisecond)
	c.phase("policy")
	c.phase("request")
	c.phase("policy")
	got := c.copy()
	if len(got) != 2 || got["policy"] < 5*time.Millisecond || strings.Join(reported, ",") != "policy,request,policy" {
		t.Errorf("phases %v reported %v", got, reported)
	}

	dir := t.TempDir()
	m := nodeMetrics{dir: dir}
	var passed []launcher.Notice
	n := m.pullNotify(func(x launcher.Notice) { passed = append(passed, x) })
	n(launcher.Notice{Kind: launcher.NoticePulled, Bytes: 1 << 20})
	n(launcher.Notice{Kind: launcher.NoticeWarning, Text: "w"})
	if len(passed) != 1 || passed[0].Text != "w" {
		t.Errorf("notices passed on: %v, want the warning alone", passed)
	}
	var pulls, bytes uint64
	metrics.Update(dir, func(s *metrics.State) { pulls, bytes = s.Pulls, s.PullBytes })
	if pulls != 1 || bytes != 1<<20 {
		t.Errorf("the node's metrics count %d pulls of %d bytes, want the one of 1 MiB", pulls, bytes)
	}
}
