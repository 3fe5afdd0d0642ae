// Package node is the node's service behind every privileged command
// (Service: the policy, the engine, the audit trail; the hooks' cleanup,
// gc, pull and prefetch), and owns the order of work of one launch (Run),
// below the CLI and above the packages that each do one part of it:
//
//	trusted job context (scheduler.Detect)
//	-> request, host paths resolved as the caller (userfs)
//	-> decision (policy.Decide)
//	-> audit record (internal/audit)
//	-> build, guard, run (launcher, launcher/guard)
//
// The CLI (cmd/containerjob) parses flags, escalates through sudo and
// prints; it hands Run a parsed request from a privileged process. Run
// prints nothing: what it has to say comes back as values (errors,
// Outcome) or through Input.Notify, and the CLI's output contract
// renders them.
package node

import (
	"context"
	"fmt"
	"maps"
	"os/user"
	"strings"
	"sync"
	"time"

	"github.com/containerjob/containerjob/internal/audit"
	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/internal/registryauth"
	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// Input is one launch, as the CLI parsed it, in a privileged process.
type Input struct {
	Invocation identity.Invocation
	Caller     identity.Caller
	// PolicyPath, Policy and Engine are for Run, which makes a Service of
	// them; Service.Run launches under its own. Policy is the node's
	// policy, already loaded; nil loads PolicyPath.
	PolicyPath string
	Policy     *policy.Policy
	// Request is the command line in the policy's terms: host paths as
	// written (each mount's Given; Source is filled in here), no job
	// context, no default mounts yet.
	Request policy.Request
	// MountHome: bind the caller's home at its path unless a default
	// mount already shows it (pyxis --container-mount-home).
	MountHome bool
	// Existing: run in the job's container named Request.Name, whose
	// image stands in for Request.Image (pyxis --container-name alone).
	Existing bool
	DryRun   bool
	// Resolve: make the image available and pin it for the job, as the
	// launch would, and run nothing (containerjob --resolve).
	Resolve bool
	// JobEnv is the job's environment as the caller passed it: the
	// container's environment inside a job, and hints to be verified.
	JobEnv []string
	// Cwd is the caller's working directory, as the process has it.
	Cwd   string
	Stdio launcher.IO
	// Phase, when set, is called as each phase ends (--timings).
	Phase func(name string)
	// Notify receives what the launcher has to tell while it runs.
	Notify func(launcher.Notice)
	// CallerLimits are the resource limits the caller gave the process,
	// read before it raised its own (the container gets them).
	CallerLimits []policy.Ulimit
	// Engine is the node's engine for Run; nil connects to the policy's
	// docker_host (tests hand in launcher/enginetest's).
	Engine launcher.Engine
}

// Outcome is what a launch produced besides an error.
type Outcome struct {
	Result launcher.Result
	// DryRun is the create request and rules of a dry run, nil otherwise.
	DryRun *DryRun
	// ReportUsage: the policy asks for a usage line in the job's log.
	ReportUsage bool
	// Resolved is what a Resolve launch pinned: the digest-pinned
	// reference, or the reference itself for an image without a digest.
	Resolved string
}

// DryRun is what a dry run shows: the create request exactly as it would
// be sent (after the guard), and the rules behind it.
type DryRun struct {
	Name       string `json:"name"`
	Config     any    `json:"config"`
	HostConfig any    `json:"host_config"`
	Rules      []Rule `json:"rules"`
}

// Rule is one line of a decision's trail.
type Rule struct{ Item, Action, Rule string }

// Run carries out one launch through a Service of its own: the policy
// in.Policy (else the one at in.PolicyPath) and in.Engine (else one
// connection to the policy's docker_host). The CLI launches through the
// Service it opened (Service.Run).
func Run(ctx context.Context, in Input) (Outcome, error) {
	pol := in.Policy
	if pol == nil {
		var err error
		if pol, err = policy.Load(in.PolicyPath); err != nil {
			return Outcome{}, err
		}
	}
	n := &Service{Policy: pol, Engine: in.Engine}
	if n.Engine == nil {
		var err error
		if n, err = Open(pol); err != nil {
			return Outcome{}, err
		}
	}
	defer n.Close()
	return n.Run(ctx, in)
}

// Run carries out one launch in the order the package comment gives,
// under the Service's policy, on its engine, recorded in its audit trail
// (in.Policy, in.PolicyPath and in.Engine are not looked at). Every
// refusal is recorded in the audit trail before it is returned.
func (n *Service) Run(ctx context.Context, in Input) (Outcome, error) {
	var out Outcome
	clock := newPhaseClock(in.Phase)
	phase := clock.phase
	pol, eng := n.Policy, n.Engine
	phase("policy")
	trail, err := n.Trail()
	if err != nil {
		return out, fmt.Errorf("%w; refusing to run without an audit trail", err)
	}
	m := nodeMetrics{dir: pol.Settings.MetricsDir, notify: in.Notify}
	launcher.LockWaits = m.lockWait
	defer func() { launcher.LockWaits = nil }()
	out.ReportUsage = pol.Settings.ReportUsage

	caller := PolicyCaller(in.Caller)
	caller.Limits = in.CallerLimits
	r, err := jobRequest(ctx, eng, pol, &caller, in)
	phase("request")
	req, job := r.req, r.job
	record := decisionRecord(caller, in, r)
	refuse := func(err error) (Outcome, error) {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		m.refused(err)
		return out, err
	}
	if err != nil {
		return refuse(err)
	}
	// The caller's own files are read now, before anything of the node's
	// is locked (a pull's lock, the launch lock).
	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	auth := CallerCredentials(id, caller.Home)
	req.ImageTags = judgedTags(ctx, eng, pol, caller, req.Image, r, in.Existing, auth)
	pjob := PolicyJob(job, req.JobEnv, pol.Settings)
	dec, err := decide(pol, req, caller, pjob, r.requested, in.Existing)
	if err != nil {
		return refuse(err)
	}
	record["decision"], record["image"], record["mounts"] = "allowed", dec.Image.String(), mountsRecord(dec)
	if err := trail.Record("decision", record); err != nil {
		return out, fmt.Errorf("%w; refusing to run a container that the audit trail does not record", err)
	}
	phase("decision")

	want := GuardBounds(caller, pjob, dec)
	switch {
	case in.DryRun:
		out.DryRun, err = dryRun(ctx, eng, dec, want)
		return out, err
	case in.Resolve:
		out.Resolved, err = resolvePin(ctx, eng, dec, r, launcher.Options{Notify: in.Notify, PinnedImage: r.pinning.PinnedID, ImageReady: r.pinning.Ready, RegistryAuth: auth,
			EngineSocket: pol.Settings.EngineSocket()}, trail, caller, job)
		return out, err
	}
	want.CallerCanAccess = callerCanAccess(id)
	res, err := launcher.Run(ctx, eng, dec, in.Stdio, launcher.Options{
		Caller: id, Guard: want, Phase: phase, Notify: m.pullNotify(in.Notify), RegistryAuth: auth,
		StopGrace:    time.Duration(pol.Settings.StopGraceSeconds) * time.Second,
		ProbeTimeout: time.Duration(pol.Settings.MountProbeSeconds) * time.Second,
		EngineSocket: pol.Settings.EngineSocket(),
		Account:      ContainerAccount(in.Caller),
		Interpreter:  scriptInterpreter(job, pol.Settings.SlurmdSpoolDir, dec.Cmd),
		PinnedImage:  r.pinning.PinnedID, ImageReady: r.pinning.Ready,
	})
	out.Result = res
	recordEnd(trail, in.Notify, caller, job, dec, r.requested, req.Image, res, err)
	if err != nil {
		m.launch("failed", "", clock.copy())
		return out, err
	}
	phase("audit")
	m.launch("ran", "", clock.copy())
	return out, nil
}

// decide is the policy's decision on the request; a request the job's pin
// (or the step's hint) rewrote to a digest is also judged as it was asked:
// a pin may narrow the request, never widen it.
func decide(pol *policy.Policy, req policy.Request, caller policy.Caller, pjob policy.Job, requested string, existing bool) (*policy.Decision, error) {
	dec, err := pol.Decide(req, caller, pjob)
	if err == nil && req.Image != requested && !existing {
		err = pol.JudgeImage(caller, requested, nil)
	}
	return dec, err
}

// decisionRecord is the audit trail's record of the request, which the
// decision completes.
func decisionRecord(caller policy.Caller, in Input, r request) map[string]any {
	record := map[string]any{
		"user": caller.User, "uid": caller.UID, "gid": caller.GID, "invocation": in.Invocation.String(),
		"job": r.job.ID, "step": r.job.Step, "node": r.job.Node, "image": r.req.Image, "command": r.req.Cmd,
	}
	if r.req.Image != r.requested {
		record["image_requested"] = r.requested
	}
	if r.pinning.PinnedID != "" {
		record["image_pinned_id"] = r.pinning.PinnedID
	}
	if in.Resolve {
		record["action"] = "resolve"
	}
	return record
}

// mountsRecord: the decision's mounts, SOURCE:TARGET:OPTIONS each.
func mountsRecord(dec *policy.Decision) []string {
	var mounts []string
	for _, m := range dec.Spec.Mounts {
		mounts = append(mounts, m.Source+":"+m.Destination+":"+strings.Join(m.Options, ","))
	}
	return mounts
}

// phaseClock keeps each phase's duration, for the node's metrics as for
// --timings (report, the caller's).
type phaseClock struct {
	mu     sync.Mutex
	phases map[string]time.Duration
	last   time.Time
	report func(string)
}

func newPhaseClock(report func(string)) *phaseClock {
	return &phaseClock{phases: map[string]time.Duration{}, last: time.Now(), report: report}
}

func (c *phaseClock) phase(name string) {
	c.mu.Lock()
	now := time.Now()
	c.phases[name] += now.Sub(c.last)
	c.last = now
	c.mu.Unlock()
	if c.report != nil {
		c.report(name)
	}
}

func (c *phaseClock) copy() map[string]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.phases)
}

// request is the launch's request as the job and the node make it: the
// image asked for (requested) and what runs (req.Image: the job's pin,
// or the named container's image).
type request struct {
	req       policy.Request
	job       scheduler.Job
	requested string
	pinning   imagePinning
}

// jobRequest finds the caller's job and makes the request from in; an
// error is a refusal, with as much of the request as was made.
func jobRequest(ctx context.Context, eng launcher.Engine, pol *policy.Policy, caller *policy.Caller, in Input) (request, error) {
	r := request{req: in.Request}
	if in.Existing {
		if r.req.Name == "" {
			return r, fmt.Errorf("--existing needs --name")
		}
		r.req.Image = ExistingImage
	}
	job, err := scheduler.Detect(ctx, SchedulerConfig(pol.Settings), scheduler.Caller{UID: caller.UID, User: caller.User}, in.JobEnv, in.Cwd)
	if err == nil {
		err = resolveRequest(&r.req, &job, caller, pol, in)
	}
	r.job = job
	if err == nil && in.Existing {
		r.req.Image, err = existingNamedImage(ctx, eng, *caller, job, r.req.Name)
	}
	r.requested = r.req.Image
	if err == nil && !in.DryRun && !in.Existing {
		r.pinning, err = pinImage(job, &r.req)
	}
	if err == nil && in.Resolve && job.ID == "" {
		err = hint.Errorf("run containerjob --resolve inside a job (srun, sbatch or salloc)", "--resolve pins an image for a job")
	}
	return r, err
}

// judgedTags are the tags the image is judged by (DigestTags): a pin
// that the node confirms is judged as the tag it stands for.
func judgedTags(ctx context.Context, eng launcher.Engine, pol *policy.Policy, caller policy.Caller, image string, r request, existing bool, auth func(host string) (string, bool, error)) *policy.DigestTags {
	confirm := ""
	if ref, err := policy.NormalizeImage(r.requested); err == nil && ref.Digest == "" && image != r.requested {
		confirm = ref.Tag
	}
	tags := DigestTags(ctx, eng, pol, caller, image, r.pinning.trustedTags(), confirm, existing, auth)
	switch {
	case existing && tags != nil:
		// The job's own container of that name, made by root for this
		// caller after its image was judged in full: the tags the node
		// has for it decide again, a denied tag that cannot be asked now
		// does not (the containerd image store gives every image a
		// registry digest, so every such step would ask).
		tags.Unresolved, tags.Local = "", true
	default:
		confirmPinnedTag(confirm, tags)
	}
	return tags
}

// dryRun is what would be created, and the rules that made it.
func dryRun(ctx context.Context, eng launcher.Engine, dec *policy.Decision, want guard.Expect) (*DryRun, error) {
	cr, err := launcher.DryRun(ctx, eng, dec, want)
	if err != nil {
		return nil, err
	}
	out := &DryRun{Name: cr.Name, Config: cr.Config, HostConfig: cr.HostConfig}
	for _, a := range dec.Trail {
		out.Rules = append(out.Rules, Rule{a.Item, a.Action, a.Rule.String()})
	}
	return out, nil
}

// resolvePin makes the image available and returns the reference the
// job's steps run (--resolve), recorded in the audit trail.
func resolvePin(ctx context.Context, eng launcher.Engine, dec *policy.Decision, r request, opts launcher.Options, trail *audit.Log, caller policy.Caller, job scheduler.Job) (string, error) {
	img, err := launcher.Resolve(ctx, eng, dec, opts)
	if err != nil {
		return "", err
	}
	resolved := PinOf(dec.Image, img).Digest
	if resolved == "" {
		resolved = dec.Image.String()
	}
	trail.Record("resolved", map[string]any{"user": caller.User, "uid": caller.UID, "job": job.ID, "node": job.Node,
		"image_requested": r.requested, "image": resolved, "image_id": img.ID})
	return resolved, nil
}

// callerCanAccess is the guard's last look at a mount source: the caller
// can still reach it, and it still resolves to itself.
func callerCanAccess(id userfs.Identity) func(path string) error {
	return func(path string) error {
		return userfs.As(id, func() error {
			real, err := userfs.Resolve(path, "/")
			if err == nil && real != path {
				err = fmt.Errorf("it now resolves to %q", real)
			}
			return err
		})
	}
}

// recordEnd writes the container's end, or its failure, to the audit
// trail; a trail that cannot take it is said to the caller.
func recordEnd(trail *audit.Log, notice func(launcher.Notice), caller policy.Caller, job scheduler.Job, dec *policy.Decision, requested, image string, res launcher.Result, err error) {
	end := map[string]any{
		"user": caller.User, "uid": caller.UID, "job": job.ID, "node": job.Node,
		"image": dec.Image.String(), "image_id": res.ImageID, "container": res.ContainerID,
	}
	if image != requested {
		end["image_requested"] = requested
	}
	if err != nil {
		end["error"] = err.Error()
		trail.Record("container-failed", end)
		return
	}
	end["exit_code"] = res.ExitCode
	end["duration_s"] = res.Ended.Sub(res.Started).Seconds()
	if res.OOMKilled {
		end["oom_killed"] = true
	}
	if res.EngineStopped {
		end["engine_stopped"] = true
	}
	if res.Output != "" {
		end["output"] = res.Output
	}
	if res.Usage.Sampled {
		end["cpu_s"] = res.Usage.CPU.Seconds()
		end["peak_memory_bytes"] = res.Usage.PeakMemory
	}
	if err := trail.Record("container-end", end); err != nil {
		notify(notice, launcher.Notice{Kind: launcher.NoticeWarning, Text: fmt.Sprintf("the container's end was not recorded: %v", err)})
	}
}

// CallerCredentials reads the caller's own registry credentials, as the
// caller, now: before the launch takes any lock of the node (a pull's,
// say), so that nothing the caller's file does can hold a lock other
// users wait on. A file that cannot be read is the error every registry
// then gets.
func CallerCredentials(id userfs.Identity, home string) func(host string) (string, bool, error) {
	creds, err := registryauth.Read(id, home)
	return func(host string) (string, bool, error) {
		if err != nil {
			return "", false, err
		}
		return creds.For(host)
	}
}

func notify(fn func(launcher.Notice), n launcher.Notice) {
	if fn != nil {
		fn(n)
	}
}

// PolicyCaller is the caller in the policy's terms.
func PolicyCaller(c identity.Caller) policy.Caller {
	pc := policy.Caller{User: c.User, UID: c.UID, GID: c.GID, Groups: c.Groups, Home: c.Home}
	for _, g := range c.AllGroups() {
		if name, ok := c.GroupNames[g]; ok {
			pc.GroupNames = append(pc.GroupNames, name)
		}
	}
	return pc
}

// PolicyCallerOf is u as the policy sees a caller: name, ids and the
// groups from the user database that decide which rules apply.
func PolicyCallerOf(u *user.User) (policy.Caller, error) {
	who, err := identity.CallerOf(identity.System, u, nil)
	if err != nil {
		return policy.Caller{}, err
	}
	return PolicyCaller(who), nil
}

// slurmAt is the site's Slurm, asked from node.
func slurmAt(s policy.Settings, node string) scheduler.Slurm {
	return scheduler.Slurm{Scontrol: s.Scontrol, SlurmConf: s.SlurmConf, Node: node}
}

// SchedulerConfig is what scheduler.Detect needs of the site's settings.
func SchedulerConfig(s policy.Settings) scheduler.Config {
	c := scheduler.Config{
		Scontrol: s.Scontrol, SlurmConf: s.SlurmConf, SlurmdSpoolDir: s.SlurmdSpoolDir, TmpFS: s.SlurmTmpFS,
		Qstat: s.Qstat, QstatJSON: s.QstatFormat == "json",
		GPUUUIDs: s.GPUsMode == "nvidia", Proc: "/proc",
	}
	if s.GPUsMode == "cdi" {
		c.CDISpecDirs = scheduler.DefaultCDISpecDirs
	}
	return c
}

// GuardBounds is what the guard holds the final create request to: the
// caller's identity, and bounds computed from the verified job in the
// policy's terms (devices, GPU ids; PolicyJob), not from the decision, so
// a mistake in the decision or the build is caught; a dry run is guarded
// alike.
func GuardBounds(caller policy.Caller, job policy.Job, dec *policy.Decision) guard.Expect {
	ids, devices := jobDevices(job)
	return guard.Expect{
		UID: caller.UID, GID: caller.GID, Groups: caller.Groups,
		AllowHostNetwork:  dec.Network == "host",
		AllowedCaps:       dec.CapsAllowed,
		AllowedDevices:    devices,
		AllowedGPUIDs:     ids,
		CgroupParent:      dec.CgroupParent,
		AllowedPorts:      launcher.ApprovedPorts(dec),
		AllowNestedMounts: dec.NestedMounts,
	}
}
