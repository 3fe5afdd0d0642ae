package scheduler

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PBSJob is what qstat reports about a job, reduced to what matters.
type PBSJob struct {
	ID        string
	User      string // euser, else the user part of Job_Owner
	State     string // "R" running
	Hosts     []string
	SessionID int
	WorkDir   string // PBS_O_WORKDIR
	Env       map[string]string
}

// pbsJSON is the part of `qstat -f -F json` (OpenPBS, PBS Professional)
// that is read.
type pbsJSON struct {
	Jobs map[string]struct {
		JobOwner     string            `json:"Job_Owner"`
		EUser        string            `json:"euser"`
		JobState     string            `json:"job_state"`
		ExecHost     string            `json:"exec_host"`
		SessionID    json.Number       `json:"session_id"`
		VariableList map[string]string `json:"Variable_List"`
	} `json:"Jobs"`
}

// ParseQstatJSON parses `qstat -f -F json JOBID` output.
func ParseQstatJSON(data []byte, id string) (PBSJob, error) {
	var doc pbsJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return PBSJob{}, fmt.Errorf("qstat: output is not JSON: %w", err)
	}
	j, ok := doc.Jobs[id]
	if !ok {
		return PBSJob{}, fmt.Errorf("qstat: job %s not in the output", id)
	}
	sid, _ := strconv.Atoi(j.SessionID.String())
	return pbsJob(id, j.JobOwner, j.EUser, j.JobState, j.ExecHost, sid, j.VariableList)
}

// ParseQstatText parses Torque's (and PBS's) `qstat -f JOBID` text:
// "    key = value" lines, long values continued on lines starting with a
// tab.
func ParseQstatText(data []byte, id string) (PBSJob, error) {
	attrs := map[string]string{}
	var jobID, last string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Job Id:"):
			if jobID != "" {
				break // only the first job
			}
			jobID = strings.TrimSpace(strings.TrimPrefix(line, "Job Id:"))
		case strings.HasPrefix(line, "\t") && last != "":
			attrs[last] += strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
			if ok {
				attrs[k], last = v, k
			}
		}
	}
	if jobID != id {
		return PBSJob{}, fmt.Errorf("qstat: job %s not in the output (found %q)", id, jobID)
	}
	vars := map[string]string{}
	for _, kv := range splitVariableList(attrs["Variable_List"]) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	sid, _ := strconv.Atoi(attrs["session_id"])
	return pbsJob(id, attrs["Job_Owner"], attrs["euser"], attrs["job_state"], attrs["exec_host"], sid, vars)
}

// splitVariableList splits "A=1,B=x\,y" on unescaped commas.
func splitVariableList(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

func pbsJob(id, owner, euser, state, execHost string, sid int, vars map[string]string) (PBSJob, error) {
	user := euser
	if user == "" {
		user, _, _ = strings.Cut(owner, "@")
	}
	if user == "" || state == "" {
		return PBSJob{}, fmt.Errorf("qstat: job %s has no owner or state", id)
	}
	j := PBSJob{ID: id, User: user, State: state, SessionID: sid, WorkDir: vars["PBS_O_WORKDIR"], Env: vars}
	// exec_host: "node01/0*2+node02/0" (OpenPBS) or "node01/0-1+node02/0" (Torque).
	seen := map[string]bool{}
	for _, part := range strings.Split(execHost, "+") {
		host, _, _ := strings.Cut(part, "/")
		host, _, _ = strings.Cut(host, ".")
		if host != "" && !seen[host] {
			seen[host] = true
			j.Hosts = append(j.Hosts, host)
		}
	}
	return j, nil
}

// PBSSessionWait bounds how long VerifyPBS waits for the server to learn
// a running job's session; a variable for tests.
var PBSSessionWait = 15 * time.Second

const pbsSessionPoll = 500 * time.Millisecond

// PBS looks jobs up with qstat; path and flavour come from the policy.
type PBS struct {
	Qstat string // e.g. /opt/pbs/bin/qstat
	JSON  bool   // OpenPBS / PBS Pro (qstat -f -F json); false: Torque text
	Node  string
}

var pbsJobIDRE = regexp.MustCompile(`^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9._-]+)?$`)

// ShowJob runs qstat for id with a clean environment.
func (p PBS) ShowJob(ctx context.Context, id string) (PBSJob, error) {
	if !pbsJobIDRE.MatchString(id) {
		return PBSJob{}, fmt.Errorf("job id %q is not a PBS job id", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := []string{"-f", id}
	if p.JSON {
		args = []string{"-f", "-F", "json", id}
	}
	cmd := exec.CommandContext(ctx, p.Qstat, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if strings.Contains(msg, "Unknown Job Id") || strings.Contains(msg, "Job has finished") {
			return PBSJob{}, fmt.Errorf("qstat -f %s: %s (%w)", id, msg, ErrNoSuchJob)
		}
		return PBSJob{}, &UnreachableError{fmt.Sprintf("qstat -f %s failed: %v: %s", id, err, msg)}
	}
	if p.JSON {
		return ParseQstatJSON(out.Bytes(), id)
	}
	return ParseQstatText(out.Bytes(), id)
}

// pbsCgroupRE finds the job in the PBS cgroups hook's layout
// (.../pbs_jobs.service/jobid/<id>) or Torque's (/torque/<id>).
var pbsCgroupRE = regexp.MustCompile(`/(?:pbs_jobs\.service/jobid|pbspro\.slice/pbspro-[^/]*|torque)/([0-9]+(?:\[[0-9]*\])?(?:\.[A-Za-z0-9._-]+)?)(?:/|$)`)

// PBSCgroupJob returns the job id in /proc/self/cgroup, where a PBS or
// Torque cgroup integration put it.
func PBSCgroupJob(procCgroup []byte) (string, bool) {
	for _, line := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			if m := pbsCgroupRE.FindStringSubmatch(parts[2]); m != nil {
				return m[1], true
			}
		}
	}
	return "", false
}

// VerifyPBS checks the job the caller claims (hint, from PBS_JOBID) against
// qstat and the kernel: the job must be the caller's, running, on this
// node, and the caller must be inside it: in the job's cgroup when a cgroup
// integration is present, else in the job's session (the session the
// mother superior started; a process cannot join another session).
func (p PBS) VerifyPBS(ctx context.Context, user string, hint string, procCgroup []byte, session int) (Job, PBSJob, error) {
	cgJob, inCgroup := PBSCgroupJob(procCgroup)
	id := hint
	if inCgroup {
		if hint != "" && hint != cgJob {
			return Job{}, PBSJob{}, fmt.Errorf("PBS_JOBID=%q does not match job %s that the calling process runs in", hint, cgJob)
		}
		id = cgJob
	}
	if id == "" {
		return Job{}, PBSJob{}, fmt.Errorf("no PBS job")
	}
	pj, err := p.ShowJob(ctx, id)
	if err != nil {
		return Job{}, pj, err
	}
	// OpenPBS's server learns a job's session from the MOM's next status
	// update, about 2 s after the job started (23.06, measured): until then
	// qstat reports the job running without a session_id. A launch at the
	// top of a job script asks again until the session is known.
	for wait := time.Now().Add(PBSSessionWait); !inCgroup && pj.State == "R" && pj.SessionID == 0 && time.Now().Before(wait); {
		select {
		case <-ctx.Done():
			return Job{}, pj, ctx.Err()
		case <-time.After(pbsSessionPoll):
		}
		if pj, err = p.ShowJob(ctx, id); err != nil {
			return Job{}, pj, err
		}
	}
	switch {
	case pj.User != user:
		return Job{}, pj, fmt.Errorf("job %s belongs to %s, not the caller %s", id, pj.User, user)
	case pj.State != "R":
		return Job{}, pj, fmt.Errorf("job %s is in state %s, not running", id, pj.State)
	case !slices.Contains(pj.Hosts, p.Node):
		return Job{}, pj, fmt.Errorf("node %q is not among job %s's hosts %v", p.Node, id, pj.Hosts)
	case !inCgroup && (pj.SessionID == 0 || pj.SessionID != session):
		return Job{}, pj, fmt.Errorf("PBS_JOBID=%q: the calling process is not in that job's session or cgroup on this node", hint)
	}
	return Job{Scheduler: "pbs", ID: id, Dir: pj.WorkDir, Node: p.Node}, pj, nil
}
