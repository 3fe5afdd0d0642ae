package launcher

// The image of a launch: found locally or pulled (with the caller's
// registry credentials, under the pull lock), its access checked against
// a private registry, and the request built on it (prepare).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/policy"
)

// ensureImage makes the image available as the pull mode allows and returns
// what the engine knows of it.
func ensureImage(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, error) {
	ref := d.Image.String()
	var none client.ImageInspectResult
	inspect := func() (client.ImageInspectResult, error) {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		return eng.ImageInspect(ictx, ref)
	}
	if opts.PinnedImage != "" {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		img, err := eng.ImageInspect(ictx, opts.PinnedImage)
		if err != nil {
			return none, failf(ExitLaunchFailed, "image %q ran as %.19s in this job's earlier steps on this node, and that image is gone (%v); the job cannot run another image under the same name", ref, opts.PinnedImage, err)
		}
		return img, nil
	}
	if d.Pull != "always" {
		img, err := inspect()
		if err == nil {
			return img, nil
		}
		if !cerrdefs.IsNotFound(err) {
			return none, failf(ExitLaunchFailed, "inspecting image %q failed: %v", ref, err)
		}
		if d.Pull == "never" {
			return none, failHint(ExitLaunchFailed, "ask your admin to load it, or use --pull missing if the policy allows", "image %q is not on this node and the pull mode is never", ref)
		}
	}
	// One pull per image and node (fetch); the caller's credentials are
	// asked for only once this launch is the one to pull.
	var credErr error
	img, pr, err := fetch(ctx, eng, pullRequest{ref: ref, socket: opts.EngineSocket,
		waiting: func() { opts.notify(NoticeWaitingForPull, "%s", ref) },
		auth: func() (string, error) {
			auth, err := pullAuth(d.Image, opts)
			credErr = err
			if d.PrivateRegistry && (err != nil || auth == "") {
				return "", noCredentials(d.Image, err)
			}
			return auth, nil
		},
		started: func() { opts.notify(NoticePulling, "%s", ref) }})
	if err != nil {
		var pe *pullError
		switch {
		case errors.As(err, &pe) && pe.request && credErr != nil:
			return none, failf(ExitLaunchFailed, "%v (your own credentials were not used: %v)", err, credErr)
		case errors.As(err, new(*Error)):
			return none, err
		}
		return none, failf(ExitLaunchFailed, "%v", err)
	}
	if pr != nil && opts.Notify != nil {
		opts.Notify(Notice{Kind: NoticePulled, Text: ref, Bytes: pr.downloaded()})
	}
	return img, nil
}

// Resolve makes the decision's image available as a launch would (pull
// mode, the job's pin) and creates nothing.
func Resolve(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, error) {
	img, err := ensureImage(ctx, eng, d, opts)
	if err != nil {
		return img, err
	}
	if err := checkAccess(ctx, eng, d, img, opts); err != nil {
		return img, err
	}
	markUsed(opts.EngineSocket, img.ID)
	if opts.ImageReady != nil {
		if err := opts.ImageReady(img); err != nil {
			return img, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	return img, nil
}

// pullAuth is the caller's credentials for the image's registry, if any.
// An error (a broken ~/.docker/config.json, a credential helper) lets a
// public image be pulled anonymously; the caller decides.
func pullAuth(ref policy.ImageRef, opts Options) (string, error) {
	if opts.RegistryAuth == nil {
		return "", nil
	}
	auth, _, err := opts.RegistryAuth(ref.Registry())
	return auth, err
}

// oneLine keeps an engine's message to one line of the job's log.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// RepoDigest is the registry's digest-pinned name ("NAME@sha256:...") of
// an image the engine has, for ref's repository; "" when it has none (an
// image loaded or built on the node).
func RepoDigest(ref policy.ImageRef, img client.ImageInspectResult) string {
	for _, rd := range img.RepoDigests {
		if r, err := policy.NormalizeImage(rd); err == nil && r.Name == ref.Name && r.Digest != "" {
			return r.String()
		}
	}
	return ""
}

// noCredentials is the refusal of a private registry's image to a caller
// whose own credentials for it are missing or unusable.
func noCredentials(ref policy.ImageRef, err error) error {
	host := ref.Registry()
	if err != nil {
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("image %q is in the private registry %s, which needs your own credentials: %w", ref.String(), host, err)}
	}
	return failHint(ExitLaunchFailed, "run `docker login "+host+"` where you have docker, or copy its entry", "image %q is in the private registry %s, which needs your own credentials, and ~/.docker/config.json has none for it", ref.String(), host)
}

// RegistryTimeout bounds the registry's answer to an access check.
var RegistryTimeout = 30 * time.Second

// checkAccess holds an image of a private registry to the caller's own
// access: the image store is shared, so an image that another user pulled
// is on the node whether or not this caller may have it. The engine asks
// the registry for the image's manifest (by the digest that will run,
// where the node knows it) with the caller's credentials, for this one
// request; anything but an answer refuses the launch.
func checkAccess(ctx context.Context, eng Engine, d *policy.Decision, img client.ImageInspectResult, opts Options) error {
	if !d.PrivateRegistry {
		return nil
	}
	host := d.Image.Registry()
	target := d.Image.String()
	if d.Image.Digest == "" {
		if rd := RepoDigest(d.Image, img); rd != "" {
			target = rd
		}
	}
	var auth string
	found := false
	var err error
	if opts.RegistryAuth != nil {
		auth, found, err = opts.RegistryAuth(host)
	}
	if err != nil || !found {
		return noCredentials(d.Image, err)
	}
	cctx, cancel := context.WithTimeout(ctx, RegistryTimeout)
	defer cancel()
	if _, err := eng.DistributionInspect(cctx, target, client.DistributionInspectOptions{EncodedRegistryAuth: auth}); err != nil {
		if cctx.Err() != nil {
			err = fmt.Errorf("no answer within %s", RegistryTimeout)
		}
		return failf(ExitLaunchFailed, "image %q is in the private registry %s, which did not grant your credentials access to %s: %s", d.Image.String(), host, target, oneLine(err.Error()))
	}
	return nil
}

// prepare makes the image available and builds the create request from it.
func prepare(ctx context.Context, eng Engine, d *policy.Decision, opts Options) (client.ImageInspectResult, client.ContainerCreateOptions, error) {
	img, err := Resolve(ctx, eng, d, opts)
	if err != nil {
		return img, client.ContainerCreateOptions{}, err
	}
	req, err := Build(d, img.ID)
	if err != nil {
		return img, req, &Error{Code: ExitLaunchFailed, Err: err}
	}
	if img.Config != nil {
		req.Config.Env = imageEnvFirst(d, req.Config.Env, img.Config.Env)
	}
	if req.HostConfig.NetworkMode == IsolatedBridge {
		if err := EnsureIsolatedBridge(ctx, eng); err != nil {
			return img, req, &Error{Code: ExitLaunchFailed, Err: err}
		}
	}
	return img, req, nil
}
