package node

import (
	"context"
	"errors"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
	digest "github.com/opencontainers/go-digest"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// tagEngine answers what DigestTags asks: the node's images by every name
// they have, and a registry's tags (a missing tag: the registry is down).
type tagEngine struct {
	launcher.Engine
	images   map[string]image.InspectResponse
	registry map[string]string // NAME:TAG -> digest
	asked    []string
}

func (e *tagEngine) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if img, ok := e.images[ref]; ok {
		return client.ImageInspectResult{InspectResponse: img}, nil
	}
	return client.ImageInspectResult{}, cerrdefs.ErrNotFound
}

func (e *tagEngine) DistributionInspect(_ context.Context, ref string, _ client.DistributionInspectOptions) (client.DistributionInspectResult, error) {
	e.asked = append(e.asked, ref)
	d, ok := e.registry[ref]
	if !ok {
		return client.DistributionInspectResult{}, errors.New("connection refused")
	}
	var r client.DistributionInspectResult
	r.Descriptor.Digest = digest.Digest(d)
	return r, nil
}

// TestDigestTagsFromTheEngineAndTheRegistry: a digest's tags come from
// the node (the image's own tags; a tag's image, by ID) and, for a tag
// the node lacks or a denied tag it has as another image, from the
// registry; what cannot be asked is said, and the policy then refuses a
// digest a deny could name.
func TestDigestTagsFromTheEngineAndTheRegistry(t *testing.T) {
	pol, err := policy.Parse("/p.toml", []byte(`[defaults]
images_allow = ["tool:1", "tool:3", "free:*"]
images_deny = ["tool:2"]
`))
	if err != nil {
		t.Fatal(err)
	}
	bob := policy.Caller{User: "bob", UID: 1002, GID: 1002}
	const name = "docker.io/library/tool"
	node := func() *tagEngine {
		return &tagEngine{
			images: map[string]image.InspectResponse{
				// tool:1 is on the node, pulled by tag: digestA.
				name + ":1":          {ID: "sha256:id1", RepoTags: []string{"tool:1"}, RepoDigests: []string{name + "@" + digestA}},
				name + "@" + digestA: {ID: "sha256:id1", RepoTags: []string{"tool:1"}, RepoDigests: []string{name + "@" + digestA}},
				// tool:2 on the node is an old image; the registry moved it to digestB.
				name + ":2": {ID: "sha256:old2"},
			},
			registry: map[string]string{name + ":2": digestB, name + ":3": digestA},
		}
	}
	tests := []struct {
		name, image string
		trusted     []string
		tags        string
		unresolved  string
		verdict     string // "" allowed, else part of the refusal
	}{
		{"the node's own tag, and the registry's", "tool@" + digestA, nil, "1 3", "", ""},
		{"a denied tag moved on in the registry", "tool@" + digestB, nil, "2", "", "is denied"},
		{"root's pin proves its tag", "tool@" + digestB, []string{"1"}, "1 2", "", "is denied"},
		{"no rule names a tag of it", "free@" + digestB, nil, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := node()
			dt := DigestTags(context.Background(), eng, pol, bob, tt.image, tt.trusted, "", false, nil)
			if dt == nil {
				t.Fatal("no tags for a digest reference")
			}
			if got := strings.Join(dt.Tags, " "); got != tt.tags || !strings.Contains(dt.Unresolved, tt.unresolved) {
				t.Errorf("tags %q unresolved %q, want %q %q", got, dt.Unresolved, tt.tags, tt.unresolved)
			}
			err := pol.JudgeImage(bob, tt.image, dt)
			if (tt.verdict == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.verdict) {
				t.Errorf("verdict %v, want %q", err, tt.verdict)
			}
		})
	}
	t.Run("registry down", func(t *testing.T) {
		eng := node()
		eng.registry = nil
		dt := DigestTags(context.Background(), eng, pol, bob, "tool@"+digestB, nil, "", false, nil)
		if !strings.Contains(dt.Unresolved, "connection refused") {
			t.Errorf("unresolved %q", dt.Unresolved)
		}
		if err := pol.JudgeImage(bob, "tool@"+digestB, dt); err == nil || !strings.Contains(err.Error(), "cannot be told apart") {
			t.Errorf("a digest a deny could name, registry down: %v; want it refused", err)
		}
	})
	t.Run("a tag reference asks nothing", func(t *testing.T) {
		eng := node()
		if dt := DigestTags(context.Background(), eng, pol, bob, "tool:1", nil, "", false, nil); dt != nil || len(eng.asked) > 0 {
			t.Errorf("tags %v, asked %v", dt, eng.asked)
		}
	})
}

// TestPinnedTagJudgedAsTheTag: a tag request pinned to its digest on this
// node (root's record, or the node's own tag) is judged as the tag, even
// with a denied tag's registry down; a pin nobody confirmed (a forged
// hint) keeps a digest's full judgment, and a deny that names the digest,
// or a tag the node confirms to be it, still refuses.
func TestPinnedTagJudgedAsTheTag(t *testing.T) {
	pol, err := policy.Parse("/p.toml", []byte(`[defaults]
images_allow = ["tool:*"]
images_deny = ["tool:2", "tool@`+digestB+`"]
`))
	if err != nil {
		t.Fatal(err)
	}
	bob := policy.Caller{User: "bob", UID: 1002, GID: 1002}
	const name = "docker.io/library/tool"
	eng := &tagEngine{images: map[string]image.InspectResponse{
		// tool:1 as the containerjob store has it: a registry digest.
		name + ":1":          {ID: "sha256:" + strings.Repeat("c", 64), RepoTags: []string{"tool:1"}, RepoDigests: []string{name + "@" + digestA}},
		name + "@" + digestA: {ID: "sha256:" + strings.Repeat("c", 64), RepoTags: []string{"tool:1"}, RepoDigests: []string{name + "@" + digestA}},
	}} // and no registry: tool:2 cannot be asked
	tests := []struct {
		name, requested, pinned string
		trusted                 []string
		verdict                 string
	}{
		{"the node's tag confirms the hint", "tool:1", "tool@" + digestA, nil, ""},
		{"root's record confirms it", "tool:1", "tool@" + digestA, []string{"1"}, ""},
		{"a hint for another tag is not confirmed", "tool:7", "tool@" + digestA, nil, "cannot be told apart"},
		{"a deny naming the digest still refuses", "tool:1", "tool@" + digestB, []string{"1"}, "is denied"},
		{"a digest asked for is a digest", "tool@" + digestA, "tool@" + digestA, nil, "cannot be told apart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			confirm := ""
			if r, _ := policy.NormalizeImage(tt.requested); r.Digest == "" {
				confirm = r.Tag
			}
			eng.asked = nil
			dt := DigestTags(context.Background(), eng, pol, bob, tt.pinned, tt.trusted, confirm, false, nil)
			if tt.pinned != tt.requested {
				confirmPinnedTag(confirm, dt)
			}
			if tt.verdict == "" && len(eng.asked) > 0 {
				t.Errorf("a confirmed pin asked the registry: %v", eng.asked)
			}
			err := pol.JudgeImage(bob, tt.pinned, dt)
			if (tt.verdict == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.verdict) {
				t.Errorf("verdict %v, want %q", err, tt.verdict)
			}
		})
	}
}

// TestDigestTagsLocalOnly: a job's existing named container's image is
// judged by what the node knows; the registry is never asked.
func TestDigestTagsLocalOnly(t *testing.T) {
	pol, err := policy.Parse("/p.toml", []byte("[defaults]\nimages_allow = [\"tool:*\"]\nimages_deny = [\"tool:2\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	eng := &tagEngine{images: map[string]image.InspectResponse{}, registry: map[string]string{"docker.io/library/tool:2": digestB}}
	dt := DigestTags(context.Background(), eng, pol, policy.Caller{User: "bob", UID: 1002, GID: 1002}, "tool@"+digestA, nil, "", true, nil)
	if len(eng.asked) > 0 || dt == nil {
		t.Errorf("asked %v, tags %v", eng.asked, dt)
	}
}
