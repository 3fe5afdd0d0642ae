package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// PinRoot holds, per node and job, what each image reference the job used
// resolved to at its first use on the node: a tag pushed while a job runs
// must not give its later steps, or its other nodes, another image.
// Root's; the epilogue removes a job's pins. A variable for tests.
var PinRoot = "/run/containerjob/pins"

// PinHintEnv carries, in the job's environment, the pin the step's srun
// got on the submitting node ("REF PINNED": the image as the step names
// it, and what `containerjob --resolve REF` printed), so that every
// node of a step runs what the first resolution found. The SPANK plugin
// sets it from `containerjob resolve`. It is the caller's to forge, and
// that is harmless: it can only name a digest of the requested repository,
// which the caller could have named instead, and the policy decides on it
// as on any digest-pinned reference.
const PinHintEnv = "CONTAINERJOB_IMAGE_PIN"

// ImagePin is what one reference resolved to for a job on this node.
type ImagePin struct {
	Ref string `json:"ref"` // as requested, normalized
	// Digest is the registry's name for the content ("NAME@sha256:..."),
	// when the image came from a registry; later steps and other nodes
	// run and pull by it.
	Digest string `json:"digest,omitempty"`
	// ID is the engine's image ID: what runs when there is no digest (an
	// image loaded or built on the node).
	ID string `json:"id"`
}

// PinDir is the directory of a job's pins on node, "" when the job cannot
// have any (no job, or an id or node that is no safe file name).
func PinDir(sched, node, job string) string {
	if job == "" || !launcher.SafeName(job) || !launcher.SafeName(node) {
		return ""
	}
	return filepath.Join(PinRoot, node, sched+"-"+job)
}

// DropPins removes a job's pins on node (the epilogue).
func DropPins(sched, node, job string) error {
	dir := PinDir(sched, node, job)
	if dir == "" {
		return nil
	}
	return os.RemoveAll(dir)
}

func pinPath(dir, ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(dir, "image-"+hex.EncodeToString(sum[:16])+".json")
}

// LoadPin reads the pin of ref in dir; nil when there is none.
func LoadPin(dir, ref string) (*ImagePin, error) {
	data, err := os.ReadFile(pinPath(dir, ref))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the job's image record: %w", err)
	}
	var p ImagePin
	if err := json.Unmarshal(data, &p); err != nil || p.Ref != ref || p.ID == "" {
		return nil, fmt.Errorf("the job's image record %s is damaged; the epilogue removes it", pinPath(dir, ref))
	}
	return &p, nil
}

// SavePin records p unless a pin of its reference exists, and returns the
// pin that holds: the first writer's.
func SavePin(dir string, p ImagePin) (ImagePin, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return p, fmt.Errorf("the job's image record: %w", err)
	}
	data, _ := json.Marshal(p)
	path := pinPath(dir, p.Ref)
	tmp := path + fmt.Sprintf(".%d.tmp", os.Getpid())
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return p, fmt.Errorf("the job's image record: %w", err)
	}
	defer os.Remove(tmp)
	// link(2) fails when the name exists: the first pin stands, whole.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			have, lerr := LoadPin(dir, p.Ref)
			if lerr != nil || have == nil {
				return p, fmt.Errorf("the job's image record: %w", lerr)
			}
			return *have, nil
		}
		return p, fmt.Errorf("the job's image record: %w", err)
	}
	return p, nil
}

// PinOf is the pin of ref for an image the engine has: its registry digest
// for ref's repository, when it has one, and its ID.
func PinOf(ref policy.ImageRef, img client.ImageInspectResult) ImagePin {
	return ImagePin{Ref: ref.String(), Digest: launcher.RepoDigest(ref, img), ID: img.ID}
}

// hintFor is the pinned reference the job's environment carries for ref.
func hintFor(jobEnv []string, ref policy.ImageRef) string {
	for _, kv := range jobEnv {
		v, ok := strings.CutPrefix(kv, PinHintEnv+"=")
		if !ok {
			continue
		}
		want, pinned, ok := strings.Cut(v, " ")
		if !ok {
			continue
		}
		if w, err := policy.NormalizeImage(want); err != nil || w.String() != ref.String() {
			continue
		}
		d, err := policy.NormalizeImage(pinned)
		if err != nil || d.Digest == "" || d.Name != ref.Name {
			continue
		}
		return d.String()
	}
	return ""
}

// imagePinning is how one launch holds the job to its pin of the
// requested image: the request rewritten to the pinned digest (the policy
// decides on that), or the image ID to run; and Ready, for the launcher
// to call with the image it made available, which records the first pin.
type imagePinning struct {
	Requested string // the reference as asked for, normalized
	PinnedID  string
	// PinnedTag is the requested tag when root's own record of the job
	// rewrote the request to the digest it resolved to: that tag is
	// known to be that digest (a step's hint proves nothing).
	PinnedTag string
	Ready     func(img client.ImageInspectResult) error
}

// trustedTags are the tags root's own record proves for the pinned digest.
func (p imagePinning) trustedTags() []string {
	if p.PinnedTag == "" {
		return nil
	}
	return []string{p.PinnedTag}
}

// pinImage applies the job's pin of req.Image on this node: its own
// record first, else the step's hint; a reference that names a digest
// needs none. Without a job there is nothing to pin to.
func pinImage(job scheduler.Job, req *policy.Request) (imagePinning, error) {
	var none imagePinning
	dir := PinDir(job.Scheduler, job.Node, job.ID)
	if dir == "" || req.Image == ExistingImage {
		return none, nil
	}
	ref, err := policy.NormalizeImage(req.Image)
	if err != nil || ref.Digest != "" {
		return none, nil // the policy refuses a malformed reference itself
	}
	pin, err := LoadPin(dir, ref.String())
	if err != nil {
		return none, err
	}
	p := imagePinning{Requested: ref.String()}
	switch {
	case pin == nil:
		if h := hintFor(req.JobEnv, ref); h != "" {
			req.Image = h
		}
	case pin.Digest != "":
		req.Image = pin.Digest
		p.PinnedTag = ref.Tag
	default:
		p.PinnedID = pin.ID
	}
	p.Ready = func(img client.ImageInspectResult) error {
		if pin != nil {
			return nil
		}
		got := PinOf(ref, img)
		// A pin is the job's state on the node: its Epilog must run.
		if err := launcher.MarkJob(job.Scheduler, job.ID, job.Node); err != nil {
			return err
		}
		have, err := SavePin(dir, got)
		if err != nil {
			return err
		}
		if have.ID != got.ID {
			return hint.Errorf("run the step again", "image %q became %s for this step, but another step of job %s pinned it to %s at the same moment", ref.String(), got.ID, job.ID, have.ID)
		}
		return nil
	}
	return p, nil
}
