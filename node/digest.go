package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// DigestTags finds out what the policy needs to judge a digest-pinned
// image for caller: which tags of its repository, among those its rules
// name, resolve to that very digest. The engine answers first (the
// image's own tags when the node has it; a tag's image on the node, by
// image ID), the registry for a tag the node lacks (with the caller's own
// credentials, bounded). trusted are tags known already from root's own
// record (the job's pin of a tag). Nil for a reference without a digest,
// or when no rule names a tag of its repository. confirm, when not empty,
// is the tag a pin stands for: once the node confirms it (trusted, or the
// image's own tags), the registry is not asked (confirmPinnedTag).
// localOnly: the node's answers only (a job's own named container, whose
// image was judged in full when it was made).
func DigestTags(ctx context.Context, eng launcher.Engine, pol *policy.Policy, caller policy.Caller, image string, trusted []string, confirm string, localOnly bool, auth func(host string) (string, bool, error)) *policy.DigestTags {
	ref, err := policy.NormalizeImage(image)
	if err != nil || ref.Digest == "" {
		return nil
	}
	literal, denied, byPattern := pol.TagsToResolve(caller, ref)
	dt := &policy.DigestTags{Tags: slices.Clone(trusted)}
	if len(literal) == 0 && !byPattern {
		return dt
	}
	add := func(tag string) {
		if !slices.Contains(dt.Tags, tag) {
			dt.Tags = append(dt.Tags, tag)
		}
	}
	var unresolved []string
	ictx, cancel := context.WithTimeout(ctx, launcher.RegistryTimeout)
	defer cancel()
	localID := ""
	if img, err := eng.ImageInspect(ictx, ref.String()); err == nil {
		dt.Local, localID = true, img.ID
		for _, rt := range img.RepoTags {
			if r, err := policy.NormalizeImage(rt); err == nil && r.Name == ref.Name && r.Tag != "" {
				add(r.Tag)
			}
		}
	}
	if confirm != "" && slices.Contains(dt.Tags, confirm) || localOnly {
		return dt // judged as that tag, or by the node alone: nothing to ask
	}
	for _, tag := range literal {
		if slices.Contains(dt.Tags, tag) {
			continue
		}
		tagged := ref.Name + ":" + tag
		if img, err := eng.ImageInspect(ictx, tagged); err == nil {
			// The node's tag: the same image, or one whose registry
			// digests include this one.
			if img.ID == localID || slices.ContainsFunc(img.RepoDigests, func(rd string) bool {
				r, err := policy.NormalizeImage(rd)
				return err == nil && r.Name == ref.Name && r.Digest == ref.Digest
			}) {
				add(tag)
				continue
			}
			// Another image here; a denied tag may have moved on in its
			// registry since, so the registry has the last word on it.
			if !slices.Contains(denied, tag) {
				continue
			}
		}
		encoded := ""
		if auth != nil {
			encoded, _, _ = auth(ref.Registry())
		}
		res, err := eng.DistributionInspect(ictx, tagged, client.DistributionInspectOptions{EncodedRegistryAuth: encoded})
		if err != nil {
			msg := strings.Join(strings.Fields(err.Error()), " ")
			if ictx.Err() != nil {
				msg = fmt.Sprintf("no answer within %s", launcher.RegistryTimeout)
			}
			unresolved = append(unresolved, fmt.Sprintf("what %s is could not be asked of its registry: %s", tagged, msg))
			continue
		}
		if res.Descriptor.Digest.String() == ref.Digest {
			add(tag)
		}
	}
	if byPattern && !dt.Local {
		unresolved = append(unresolved, "the image is not on this node, so its tags cannot be read")
	}
	dt.Unresolved = strings.Join(unresolved, "; ")
	return dt
}

// confirmPinnedTag: a pin (the job's record, or the step's hint) narrows a
// request for a tag to a digest. Where that digest is confirmed to be the
// tag's content on this node (root's record, or the engine's own tag for
// it: tags holds the requested tag), it is judged as the tag is, which the
// request itself already was: a deny rule for some other tag that cannot
// be resolved now (its registry unreachable) does not refuse it, as it
// would not refuse the tag. A rule naming the digest, or naming a tag
// confirmed to resolve to it, still decides. An unconfirmed digest (a
// forged hint) keeps the full judgment of a digest. Found by the engine
// lane: with Docker's containerd image store every image has a registry
// digest, so every pinned step asked the registry about each denied tag.
// tag is the tag the request named ("" when it named a digest or no pin
// narrowed it), as DigestTags was given it to confirm.
func confirmPinnedTag(tag string, tags *policy.DigestTags) {
	if tag == "" || tags == nil {
		return
	}
	if slices.Contains(tags.Tags, tag) {
		tags.Unresolved = ""
		tags.Local = true // its tags that matter are known: the one asked for
	}
}
