package policy

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/distribution/reference"

	"github.com/containerjob/containerjob/internal/hint"
)

// maxImageRefLen bounds an image reference; the registry spec allows 255 for
// the name plus tag and digest, so anything longer is hostile or broken.
const maxImageRefLen = 512

// ImageRef is an image reference in the one form every rule is matched on:
// docker.io/library/alpine:latest, never alpine or alpine:latest.
type ImageRef struct {
	Name   string // repository with domain: docker.io/library/alpine
	Tag    string // "latest" when neither tag nor digest was given
	Digest string // sha256:..., empty when not pinned
}

// String is the normalized reference, as the engine is asked for it.
// Registry is the host of the registry the image comes from.
func (r ImageRef) Registry() string {
	host, _, _ := strings.Cut(r.Name, "/")
	return host
}

func (r ImageRef) String() string {
	if r.Digest != "" {
		return r.Name + "@" + r.Digest
	}
	return r.Name + ":" + r.Tag
}

// NormalizeImage parses a user-supplied image reference. Image IDs, empty
// strings, NUL bytes and invalid UTF-8 are refused: a rule can only be matched
// against a name.
func NormalizeImage(s string) (ImageRef, error) {
	switch {
	case s == "":
		return ImageRef{}, fmt.Errorf("image reference is empty")
	case len(s) > maxImageRefLen:
		return ImageRef{}, fmt.Errorf("image reference is longer than %d bytes", maxImageRefLen)
	case !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\n\r\t "):
		return ImageRef{}, fmt.Errorf("image reference %q contains invalid characters", s)
	case strings.HasPrefix(s, "sha256:"):
		return ImageRef{}, hint.Errorf("name the image by repository and tag", "image reference %q is an image ID", s)
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return ImageRef{}, fmt.Errorf("image reference %q is invalid: %w", s, err)
	}
	ref := ImageRef{Name: named.Name()}
	if d, ok := named.(reference.Digested); ok {
		// A digest pins the content; a tag next to it is ignored by the
		// engine, so it must not take part in matching either.
		ref.Digest = d.Digest().String()
		return ref, nil
	}
	ref.Tag = "latest"
	if t, ok := named.(reference.Tagged); ok {
		ref.Tag = t.Tag()
	}
	// The normalized form (docker.io/library/..., :latest) is longer than
	// what was written; it is what rules and the engine see, so it is
	// what the bound holds for.
	if len(ref.String()) > maxImageRefLen {
		return ImageRef{}, fmt.Errorf("image reference is longer than %d bytes once normalized", maxImageRefLen)
	}
	return ref, nil
}

// imagePattern is one compiled entry of images_allow or images_deny.
type imagePattern struct {
	full *regexp.Regexp // matches ImageRef.String(), and NAME:TAG for a digest's confirmed tags
	repo *regexp.Regexp // matches ImageRef.Name: the repositories the pattern is about
	// wholeRepo: the pattern decides for every tag and every digest of
	// the repositories repo matches ("alpine", "alpine:*", "lab/**").
	wholeRepo bool
	// literalTag is the one tag a plain reference names ("tool:1"), which
	// a digest's tags can be resolved for; "" otherwise.
	literalTag string
	// prefix is a regular expression's literal prefix: a repository whose
	// "NAME:" is incompatible with it cannot be named by it.
	prefix   string
	isRegexp bool
}

// compileImagePattern accepts "re:REGEXP" (anchored, over the normalized
// reference), a glob ("*" within a path segment, "**" across segments, "?"),
// or a plain reference, each written in short or normalized form.
func compileImagePattern(p string) (imagePattern, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return imagePattern{}, fmt.Errorf("image pattern is empty or contains NUL")
	}
	if expr, ok := strings.CutPrefix(p, "re:"); ok {
		// The expression is judged alone first: inside the anchoring
		// group, an unbalanced one such as "a)|(.*" would close the group
		// and match every image (and ")(" compiled there, but not alone).
		bare, err := regexp.Compile(expr)
		if err != nil {
			return imagePattern{}, fmt.Errorf("image pattern %q is not a valid regular expression: %w", p, err)
		}
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return imagePattern{}, fmt.Errorf("image pattern %q is not a valid regular expression: %w", p, err)
		}
		// A regular expression decides for a digest-pinned reference by
		// what it matches: the digest form itself, or NAME:TAG for a tag
		// confirmed to resolve to that digest.
		prefix, _ := bare.LiteralPrefix()
		return imagePattern{full: re, isRegexp: true, prefix: prefix}, nil
	}
	if !strings.ContainsAny(p, "*?") {
		ref, err := NormalizeImage(p)
		if err != nil {
			return imagePattern{}, err
		}
		pat := imagePattern{full: regexp.MustCompile("^" + regexp.QuoteMeta(ref.String()) + "$")}
		if ref.Digest == "" {
			pat.repo = regexp.MustCompile("^" + regexp.QuoteMeta(ref.Name) + "$")
			pat.literalTag = ref.Tag
		}
		return pat, nil
	}
	if strings.ContainsAny(p, "{},") {
		return imagePattern{}, fmt.Errorf("image pattern %q contains characters no image reference has", p)
	}
	full := expandFamiliar(p)
	repoPart, tag, hasTag := cutTag(full)
	fullSrc := globSource(full)
	if !hasTag {
		// "alpine*" names repositories, and so every tag and digest of them.
		fullSrc += "(?::[^/]*|@.*)"
	}
	return imagePattern{
		full:      regexp.MustCompile("^" + fullSrc + "$"),
		repo:      regexp.MustCompile("^" + globSource(repoPart) + "$"),
		wholeRepo: !hasTag || tag == "*" || tag == "**",
	}, nil
}

// DigestTags is what the node knows of a digest-pinned reference's tags:
// the tags of its repository that the engine or the registry confirmed
// resolve to that very digest. A rule that names a tag decides for a
// digest only through these: "tool:1" allows tool@sha256:X only when
// tool:1 is confirmed to be X. Unresolved says why some tag a rule names
// could not be resolved; a deny that could name such a tag then refuses
// (fail closed).
type DigestTags struct {
	Tags       []string
	Unresolved string
	// Local: the digest's image is on the node, and Tags include every
	// tag of its repository the engine has for it.
	Local bool
}

// matches reports whether the pattern decides for ref. A digest-pinned
// reference is matched by a rule for its whole repository, a rule that
// names the digest, or a rule that names a tag confirmed to resolve to
// that digest (tags).
func (p imagePattern) matches(ref ImageRef, tags *DigestTags) bool {
	if p.full.MatchString(ref.String()) {
		return true
	}
	if ref.Digest == "" {
		return false
	}
	if p.wholeRepo && p.repo != nil && p.repo.MatchString(ref.Name) {
		return true
	}
	if tags != nil {
		for _, t := range tags.Tags {
			if p.full.MatchString(ref.Name + ":" + t) {
				return true
			}
		}
	}
	return false
}

// mayNameATagOf reports whether the pattern could name some tag of
// repository name (so that a digest of it cannot be judged by the pattern
// without knowing the digest's tags).
func (p imagePattern) mayNameATagOf(name string) bool {
	if p.isRegexp {
		full := name + ":"
		return strings.HasPrefix(full, p.prefix) || strings.HasPrefix(p.prefix, full)
	}
	return p.repo != nil && p.repo.MatchString(name)
}

// expandFamiliar turns a short pattern into the normalized form, the way
// reference.ParseNormalizedNamed does for names: "alpine:*" becomes
// "docker.io/library/alpine:*", "nvidia/cuda:*" becomes "docker.io/nvidia/cuda:*".
func expandFamiliar(p string) string {
	if strings.HasPrefix(p, "**") {
		// "**" and "**/x:*" span every registry, as written.
		return p
	}
	first, rest, hasSlash := strings.Cut(p, "/")
	if !hasSlash {
		return "docker.io/library/" + p
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return p
	}
	return "docker.io/" + first + "/" + rest
}

// cutTag splits "repo:tag" at the tag separator, which is the last ":" after
// the last "/" (a ":" before it belongs to a registry port).
func cutTag(p string) (repo, tag string, ok bool) {
	if i := strings.IndexByte(p, '@'); i >= 0 {
		return p[:i], p[i:], true
	}
	slash := strings.LastIndexByte(p, '/')
	colon := strings.LastIndexByte(p, ':')
	if colon > slash {
		return p[:colon], p[colon+1:], true
	}
	return p, "", false
}

// globSource translates a glob with "*" (within a path segment), "**"
// (across segments) and "?" into regular expression source; every other
// character stands for itself.
func globSource(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		switch c := g[i]; c {
		case '*':
			if i+1 < len(g) && g[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}

// DecidePull judges `containerjob pull IMAGE`: the image must be one the
// caller may run, and the pull key must allow pulling at all. Pulling by
// tag fetches what the registry serves under that name, the same for every
// user; loading, tagging or removing images, which would let one user change
// what a name means for others, is not offered. The mode is "always" where
// the policy allows it (refresh a tag), else "missing" (fetch only if absent).
func (p *Policy) DecidePull(caller Caller, image string, tags *DigestTags) (ImageRef, string, error) {
	eff := p.Effective(caller)
	ref, _, err := p.judgeImage(eff, image, tags)
	if err != nil {
		return ref, "", err
	}
	if eff.LocalOnly.Value {
		return ref, "", &Refusal{Item: "pulling images", Reason: "is not allowed", Rule: eff.LocalOnly.Origin, Hint: "only images already on this node may run here"}
	}
	if _, ok := eff.Pull.find("always"); ok {
		return ref, "always", nil
	}
	if _, ok := eff.Pull.find("missing"); ok {
		return ref, "missing", nil
	}
	return ref, "", &Refusal{Item: "pulling images", Reason: "is not allowed", Rule: eff.Pull.missing("pull")}
}
