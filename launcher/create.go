package launcher

// The container's creation: the mounts staged for it, the count limits
// checked under the launch lock, the guard's last look at the request,
// and the isolated bridge it may join. Every container is created here
// (guardedCreate).

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// DryRun builds and guards the create request for d without creating
// anything; the image is inspected (never pulled) to show the ID it pins.
func DryRun(ctx context.Context, eng Engine, d *policy.Decision, want guard.Expect) (client.ContainerCreateOptions, error) {
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	imageID := d.Image.String()
	var imageEnv []string
	if img, err := eng.ImageInspect(ictx, imageID); err == nil {
		imageID = img.ID
		if img.Config != nil {
			imageEnv = img.Config.Env
		}
	}
	req, err := Build(d, imageID)
	if err != nil {
		return req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	req.Config.Env = imageEnvFirst(d, req.Config.Env, imageEnv)
	if err := guard.Check(req, want); err != nil {
		return req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	return req, nil
}

// EnsureIsolatedBridge creates IsolatedBridge unless it exists, and
// refuses to use one that lacks its isolation (made by hand, say).
// Launches racing to create it are settled by the engine's unique names.
func EnsureIsolatedBridge(ctx context.Context, eng Engine) error {
	for attempt := 0; attempt < 2; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		n, err := eng.NetworkInspect(ictx, IsolatedBridge, client.NetworkInspectOptions{})
		cancel()
		if err == nil {
			net := n.Network
			for k, v := range isolatedBridgeOptions {
				if net.Driver != "bridge" || net.Options[k] != v {
					return hint.Errorf("the admin removes it (docker network rm "+IsolatedBridge+") and containerjob recreates it", "network %q exists without containerjob's isolation (driver %q, %s=%q)", IsolatedBridge, net.Driver, k, net.Options[k])
				}
			}
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("inspecting network %q: %v", IsolatedBridge, err)
		}
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_, err = eng.NetworkCreate(cctx, IsolatedBridge, client.NetworkCreateOptions{
			Driver: "bridge", Options: isolatedBridgeOptions, Labels: map[string]string{policy.LabelManaged: "1"},
		})
		cancel()
		if err != nil && !cerrdefs.IsConflict(err) {
			return fmt.Errorf("creating network %q: %v", IsolatedBridge, err)
		}
	}
	return nil
}

// stageMounts binds the decision's user-controlled sources to private
// staging paths and points the request and the guard at them.
func stageMounts(d *policy.Decision, req *client.ContainerCreateOptions, opts *Options) (*Stage, error) {
	var fixed []string
	for _, m := range req.HostConfig.Mounts {
		if !slices.Contains(d.StageSources, m.Source) {
			fixed = append(fixed, m.Source)
		}
	}
	if err := Probe(fixed, opts.ProbeTimeout); err != nil {
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if len(d.StageSources) > 0 && opts.EngineSocket != "" {
		if err := sameMountNamespace(opts.EngineSocket); err != nil {
			return nil, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	stage, err := NewStage(opts.Caller, d.StageSources, opts.ProbeTimeout)
	if err != nil {
		return nil, &Error{Code: ExitLaunchFailed, Err: err}
	}
	for i, m := range req.HostConfig.Mounts {
		req.HostConfig.Mounts[i].Source = stage.Path(m.Source)
	}
	opts.added.stage = stage
	return stage, nil
}

// stageLaunch stages the mount sources and the generated account files.
func stageLaunch(ctx context.Context, eng Engine, d *policy.Decision, imageID string, req *client.ContainerCreateOptions, opts *Options) (*Stage, error) {
	stage, err := stageMounts(d, req, opts)
	if err != nil {
		return nil, err
	}
	if err := addAccounts(ctx, eng, d, imageID, req, stage, opts.Account); err != nil {
		stage.Release()
		return nil, err
	}
	return stage, nil
}

// added is what a launch adds to its create request beyond the decision,
// each of which the guard is told of (expect): the stage (the mount
// sources and generated account files), the accounting cgroup, and
// containerjob's own files bound in (its init).
type added struct {
	stage      *Stage
	accounting string
	own        map[string]string // host path -> the one target it may have
}

// bindOwn records one of containerjob's own files bound at target.
func (a *added) bindOwn(path, target string) {
	own := maps.Clone(a.own)
	if own == nil {
		own = map[string]string{}
	}
	own[path] = target
	a.own = own
}

// expect is the one place the guard's expectations are completed: the
// node's bounds (Options.Guard) with what this launch added. The guard
// sees the stage's maps themselves: files the launch adds to it later
// (addAccounts) are known to it as they are written.
func (o *Options) expect() guard.Expect {
	want := o.Guard
	if s := o.added.stage; s != nil {
		want.Staged, want.Generated, want.StageRoot = s.Sources, s.Generated, StageRoot
	}
	if o.added.accounting != "" {
		want.AccountingParent = o.added.accounting
	}
	if len(o.added.own) > 0 {
		own := maps.Clone(want.Own)
		if own == nil {
			own = map[string]string{}
		}
		maps.Copy(own, o.added.own)
		want.Own = own
	}
	return want
}

// guardedCreate is the one way a container is created (a run's, a named
// one, the never-started probe that reads an image's accounts): under the
// caller's launch lock, the decision's limits are checked against the
// containers that exist, the guard checks the final request, and the
// engine creates it.
func guardedCreate(ctx context.Context, eng Engine, limits []policy.CountLimit, req client.ContainerCreateOptions, want guard.Expect) (client.ContainerCreateResult, error) {
	var none client.ContainerCreateResult
	uid := strconv.FormatUint(uint64(want.UID), 10)
	unlock, err := lockLaunches(ctx, uid)
	if err != nil {
		return none, failf(ExitLaunchFailed, "%v", err)
	}
	defer unlock()
	if err := checkLimits(ctx, eng, limits); err != nil {
		return none, err
	}
	if err := guard.Check(req, want); err != nil {
		return none, &Error{Code: ExitLaunchFailed, Err: err}
	}
	// The job's mark goes first: its Epilog looks for it before anything.
	if err := markJobOf(req.Config.Labels); err != nil {
		return none, &Error{Code: ExitLaunchFailed, Err: err}
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return eng.ContainerCreate(cctx, req)
}

// checkLimits counts the containers that exist for each of the decision's
// limits (by containerjob's own labels) and refuses when one is reached.
func checkLimits(ctx context.Context, eng Engine, limits []policy.CountLimit) error {
	list := func(label, value, node string) ([]container.Summary, error) {
		f := client.Filters{}
		f.Add("label", policy.LabelManaged+"=1")
		f.Add("label", label+"="+value)
		if node != "" {
			f.Add("label", policy.LabelNode+"="+node)
		}
		lctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		res, err := eng.ContainerList(lctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			return nil, failf(ExitLaunchFailed, "counting containers: %v", err)
		}
		return res.Items, nil
	}
	for _, l := range limits {
		items, err := list(l.Label, l.Value, l.Node)
		if err != nil {
			return err
		}
		if int64(len(items)) >= l.Max {
			return &Error{Code: ExitLaunchFailed, Err: &policy.Refusal{
				Item: fmt.Sprintf("a container beyond the %d allowed (%d exist)", l.Max, len(items)), Reason: "is refused", Rule: l.Rule,
				Hint: "wait for one of your containers to end, or stop one (containerjob ps, containerjob stop)"}}
		}
	}
	return nil
}
