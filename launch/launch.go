// Package launch owns the order of work of one launch, below the CLI and
// above the packages that each do one part of it:
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
package launch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerjob/containerjob/internal/audit"
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
	PolicyPath string
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

// Run carries out one launch in the order the package comment gives.
// Every refusal is recorded in the audit trail before it is returned.
func Run(ctx context.Context, in Input) (Outcome, error) {
	var out Outcome
	// Each phase's duration, for the node's metrics as for --timings.
	var phaseMu sync.Mutex
	phases := map[string]time.Duration{}
	last := time.Now()
	phase := func(name string) {
		phaseMu.Lock()
		now := time.Now()
		phases[name] += now.Sub(last)
		last = now
		phaseMu.Unlock()
		if in.Phase != nil {
			in.Phase(name)
		}
	}
	pol, err := policy.Load(in.PolicyPath)
	if err != nil {
		return out, err
	}
	phase("policy")
	m := nodeMetrics{dir: pol.Settings.MetricsDir, notify: in.Notify}
	launcher.LockWaits = m.lockWait
	defer func() { launcher.LockWaits = nil }()
	trail, err := audit.Open(pol.Settings.AuditLog, pol.Settings.AuditSyslog)
	if err != nil {
		return out, fmt.Errorf("%v; refusing to run without an audit trail", err)
	}
	defer trail.Close()
	out.ReportUsage = pol.Settings.ReportUsage

	caller := PolicyCaller(in.Caller)
	caller.Limits = in.CallerLimits
	req := in.Request
	if in.Existing {
		if req.Name == "" {
			return out, fmt.Errorf("--existing needs --name")
		}
		req.Image = ExistingImage
	}
	job, err := scheduler.Detect(ctx, SchedulerConfig(pol.Settings), scheduler.Caller{UID: caller.UID, User: caller.User}, in.JobEnv, in.Cwd)
	if err == nil {
		err = resolveRequest(&req, &job, &caller, pol, in)
	}
	if err == nil && in.Existing {
		req.Image, err = existingNamedImage(ctx, pol, caller, job, req.Name)
	}
	requested := req.Image
	var pinning imagePinning
	if err == nil && !in.DryRun && !in.Existing {
		pinning, err = pinImage(job, &req)
	}
	phase("request")
	record := map[string]any{
		"user": caller.User, "uid": caller.UID, "gid": caller.GID, "invocation": in.Invocation.String(),
		"job": job.ID, "step": job.Step, "node": job.Node, "image": req.Image, "command": req.Cmd,
	}
	if req.Image != requested {
		record["image_requested"] = requested
	}
	if pinning.PinnedID != "" {
		record["image_pinned_id"] = pinning.PinnedID
	}
	refuse := func(err error) (Outcome, error) {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		m.refused(err)
		return out, err
	}
	if err == nil && in.Resolve && job.ID == "" {
		err = fmt.Errorf("--resolve pins an image for a job; run it inside one")
	}
	if in.Resolve {
		record["action"] = "resolve"
	}
	if err != nil {
		return refuse(err)
	}
	eng, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		return out, err
	}
	defer eng.Close()
	// The caller's own files are read now, before anything of the node's
	// is locked (a pull's lock, the launch lock).
	id := userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}
	auth := CallerCredentials(id, caller.Home)
	confirm := ""
	if r, err := policy.NormalizeImage(requested); err == nil && r.Digest == "" && req.Image != requested {
		confirm = r.Tag
	}
	req.ImageTags = DigestTags(ctx, eng, pol, caller, req.Image, pinning.trustedTags(), confirm, in.Existing, auth)
	switch {
	case in.Existing && req.ImageTags != nil:
		// The job's own container of that name, made by root for this
		// caller after its image was judged in full: the tags the node
		// has for it decide again, a denied tag that cannot be asked now
		// does not (the containerd image store gives every image a
		// registry digest, so every such step would ask).
		req.ImageTags.Unresolved, req.ImageTags.Local = "", true
	default:
		confirmPinnedTag(confirm, req.ImageTags)
	}
	pjob := PolicyJob(job, req.JobEnv, pol.Settings)
	dec, err := pol.Decide(req, caller, pjob)
	if err == nil && req.Image != requested && !in.Existing {
		// The job's pin (or the step's hint) names a digest for what was
		// asked: it may narrow the request, never widen it.
		err = pol.JudgeImage(caller, requested, nil)
	}
	if err != nil {
		return refuse(err)
	}
	var mounts []string
	for _, m := range dec.Spec.Mounts {
		mounts = append(mounts, m.Source+":"+m.Destination+":"+strings.Join(m.Options, ","))
	}
	record["decision"], record["image"], record["mounts"] = "allowed", dec.Image.String(), mounts
	if err := trail.Record("decision", record); err != nil {
		return out, fmt.Errorf("%v; refusing to run a container that the audit trail does not record", err)
	}
	phase("decision")

	want := GuardBounds(caller, pjob, dec)
	if in.DryRun {
		cr, err := launcher.DryRun(ctx, eng, dec, want)
		if err != nil {
			return out, err
		}
		out.DryRun = &DryRun{Name: cr.Name, Config: cr.Config, HostConfig: cr.HostConfig}
		for _, a := range dec.Trail {
			out.DryRun.Rules = append(out.DryRun.Rules, Rule{a.Item, a.Action, a.Rule.String()})
		}
		return out, nil
	}
	if in.Resolve {
		img, err := launcher.Resolve(ctx, eng, dec, launcher.Options{Notify: in.Notify, PinnedImage: pinning.PinnedID, ImageReady: pinning.Ready, RegistryAuth: auth,
			EngineSocket: pol.Settings.EngineSocket()})
		if err != nil {
			return out, err
		}
		out.Resolved = PinOf(dec.Image, img).Digest
		if out.Resolved == "" {
			out.Resolved = dec.Image.String()
		}
		trail.Record("resolved", map[string]any{"user": caller.User, "uid": caller.UID, "job": job.ID, "node": job.Node,
			"image_requested": requested, "image": out.Resolved, "image_id": img.ID})
		return out, nil
	}
	want.CallerCanAccess = func(path string) error {
		return userfs.As(id, func() error {
			real, err := userfs.Resolve(path, "/")
			if err == nil && real != path {
				err = fmt.Errorf("it now resolves to %q", real)
			}
			return err
		})
	}
	pullNotify := func(n launcher.Notice) {
		if n.Kind == launcher.NoticePulled {
			m.pull(n.Bytes)
			return
		}
		notify(in.Notify, n)
	}
	res, err := launcher.Run(ctx, eng, dec, in.Stdio, launcher.Options{
		Caller:       id,
		StopGrace:    time.Duration(pol.Settings.StopGraceSeconds) * time.Second,
		ProbeTimeout: time.Duration(pol.Settings.MountProbeSeconds) * time.Second,
		Guard:        want,
		Phase:        phase,
		Notify:       pullNotify,
		EngineSocket: pol.Settings.EngineSocket(),
		Account:      ContainerAccount(in.Caller),
		Interpreter:  scriptInterpreter(job, pol.Settings.SlurmdSpoolDir, dec.Cmd),
		PinnedImage:  pinning.PinnedID,
		ImageReady:   pinning.Ready,
		RegistryAuth: auth,
	})
	out.Result = res
	end := map[string]any{
		"user": caller.User, "uid": caller.UID, "job": job.ID, "node": job.Node,
		"image": dec.Image.String(), "image_id": res.ImageID, "container": res.ContainerID,
	}
	if req.Image != requested {
		end["image_requested"] = requested
	}
	if err != nil {
		end["error"] = err.Error()
		trail.Record("container-failed", end)
		m.launch("failed", "", phasesCopy(&phaseMu, phases))
		return out, err
	}
	end["exit_code"] = res.ExitCode
	end["duration_s"] = res.Ended.Sub(res.Started).Seconds()
	if res.OOMKilled {
		end["oom_killed"] = true
	}
	if res.EngineStopped {
		end["engine_stopped"] = true
	}
	if res.Usage.Sampled {
		end["cpu_s"] = res.Usage.CPU.Seconds()
		end["peak_memory_bytes"] = res.Usage.PeakMemory
	}
	if err := trail.Record("container-end", end); err != nil {
		notify(in.Notify, launcher.Notice{Kind: launcher.NoticeWarning, Text: fmt.Sprintf("the container's end was not recorded: %v", err)})
	}
	phase("audit")
	m.launch("ran", "", phasesCopy(&phaseMu, phases))
	return out, nil
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
