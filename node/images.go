package node

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/metrics"
	"github.com/containerjob/containerjob/internal/userfs"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// Pulled is what a user's pull did.
type Pulled struct {
	Ref string // the reference, as the policy normalised it
	ID  string // the image's id
	// Present: the node had the image and the policy pulls missing images
	// only, so nothing was fetched.
	Present bool
}

// Pull fetches an image the caller may run onto this node (containerjob
// pull): judged as a launch of it would be, with the caller's own
// credentials, recorded before and after. Progress goes to progress,
// which the pull lock is held while writing to: never a descriptor of
// the caller's itself. warn is told, as it happens, what the caller
// should know (a pull without their broken credentials).
func (n *Service) Pull(ctx context.Context, caller policy.Caller, image string, progress io.Writer, terminal bool, warn func(string)) (Pulled, error) {
	var out Pulled
	pol, eng := n.Policy, n.Engine
	trail, err := n.Trail()
	if err != nil {
		return out, fmt.Errorf("%w; refusing to pull without an audit trail", err)
	}
	record := map[string]any{"user": caller.User, "uid": caller.UID, "image": image, "action": "pull"}
	// The caller's own credentials, when they have any, read before
	// anything of the node's is locked; broken ones still let a public
	// image come anonymously.
	credsFor := CallerCredentials(userfs.Identity{UID: caller.UID, GID: caller.GID, Groups: caller.Groups}, caller.Home)
	ref, mode, err := pol.DecidePull(caller, image, DigestTags(ctx, eng, pol, caller, image, nil, "", false, credsFor))
	if err != nil {
		record["decision"], record["reason"] = "refused", err.Error()
		trail.Record("decision", record)
		return out, err
	}
	out.Ref = ref.String()
	record["decision"], record["image"] = "allowed", ref.String()
	if err := trail.Record("decision", record); err != nil {
		return out, fmt.Errorf("%w; refusing to pull what the audit trail does not record", err)
	}
	if mode == "missing" {
		if img, err := eng.ImageInspect(ctx, ref.String()); err == nil {
			out.ID, out.Present = img.ID, true
			return out, nil
		}
	}
	auth, _, err := credsFor(ref.Registry())
	if err != nil {
		if pol.PrivateRegistry(ref) {
			return out, err
		}
		warn(fmt.Sprintf("pulling %s without your credentials: %v", ref, err))
	}
	id, bytes, err := launcher.Pull(ctx, eng, ref.String(), auth, pol.Settings.EngineSocket(), progress, terminal)
	end := map[string]any{"user": caller.User, "uid": caller.UID, "image": ref.String(), "image_id": id}
	if err != nil {
		end["error"] = err.Error()
		trail.Record("pull-failed", end)
		return out, err
	}
	trail.Record("pull-end", end)
	if bytes > 0 {
		n.metricsFor(warn).pull(bytes)
	}
	out.ID = id
	return out, nil
}

// ImageRemoval is one image gc --images removed (or would remove).
type ImageRemoval struct {
	ID, Ref     string
	LastUse     time.Time
	Used, Total uint64 // the engine's data file system after it
}

// CollectImages is gc --images: the image store held between the policy's
// watermarks (image_store_high, image_store_low), each removal told to
// removed and recorded. It reports whether the store ended below the low
// watermark, and warnings for the node's log.
func (n *Service) CollectImages(ctx context.Context, dryRun bool, removed func(ImageRemoval)) (below bool, warnings []string, err error) {
	pol, eng := n.Policy, n.Engine
	high, low := pol.ImageStoreWatermarks()
	trail, err := n.Trail()
	if err != nil {
		return false, nil, fmt.Errorf("%w; refusing to remove images without an audit trail", err)
	}
	g := launcher.StoreGC{Socket: pol.Settings.EngineSocket(), High: high, Low: low, Keep: pol.KeepImage, Usage: launcher.DiskUsage, DryRun: dryRun,
		Removed: func(id, ref string, last time.Time, used, total uint64) {
			removed(ImageRemoval{ID: id, Ref: ref, LastUse: last, Used: used, Total: total})
			if !dryRun {
				trail.Record("image-removed", map[string]any{"image_id": id, "image": ref, "last_used": last.Format(time.RFC3339), "used_bytes": used, "total_bytes": total})
			}
		}}
	below, err = g.Collect(ctx, eng)
	if err != nil {
		return false, nil, err
	}
	if !dryRun {
		if info, err := eng.Info(ctx, client.InfoOptions{}); err == nil {
			if used, total, err := launcher.DiskUsage(info.Info.DockerRootDir); err == nil {
				n.metricsFor(func(w string) { warnings = append(warnings, w) }).update(func(s *metrics.State) { s.ImageStore(int64(used), high.BytesOf(total), low.BytesOf(total)) })
			}
		}
	}
	if !below {
		warnings = append(warnings, fmt.Sprintf("the engine's data is still above image_store_low (%s): every other image is in use, pinned by images_keep, or not pulled by containerjob", pol.Settings.ImageStoreLow))
	}
	return below, warnings, nil
}
