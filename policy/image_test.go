package policy

import (
	"strings"
	"testing"
)

func TestNormalizeImage(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "alpine", want: "docker.io/library/alpine:latest"},
		{in: "alpine:3.20", want: "docker.io/library/alpine:3.20"},
		{in: "docker.io/library/alpine:3.20", want: "docker.io/library/alpine:3.20"},
		{in: "library/alpine", want: "docker.io/library/alpine:latest"},
		{in: "nvidia/cuda:12.4-base", want: "docker.io/nvidia/cuda:12.4-base"},
		{in: "registry.example.org:5000/team/tool:v1", want: "registry.example.org:5000/team/tool:v1"},
		{in: "alpine@sha256:" + strings.Repeat("a", 64), want: "docker.io/library/alpine@sha256:" + strings.Repeat("a", 64)},
		{in: "alpine:3.20@sha256:" + strings.Repeat("b", 64), want: "docker.io/library/alpine@sha256:" + strings.Repeat("b", 64)},
		{in: "", wantErr: "empty"},
		{in: "ALPINE", wantErr: "invalid"},
		{in: "alpine\x00", wantErr: "invalid characters"},
		{in: "alp ine", wantErr: "invalid characters"},
		{in: "\xff\xfe", wantErr: "invalid characters"},
		{in: "sha256:" + strings.Repeat("c", 64), wantErr: "image ID"},
		{in: strings.Repeat("c", 64), wantErr: "invalid"},
		{in: strings.Repeat("a", 600), wantErr: "longer than"},
		{in: "-v", wantErr: "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeImage(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeImage(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeImage(%q) error = %v", tt.in, err)
			}
			if got.String() != tt.want {
				t.Fatalf("NormalizeImage(%q) = %q, want %q", tt.in, got.String(), tt.want)
			}
		})
	}
}

func TestImagePatternMatches(t *testing.T) {
	digest := "sha256:" + strings.Repeat("d", 64)
	tests := []struct {
		pattern string
		image   string
		want    bool
	}{
		{"alpine", "alpine", true},
		{"alpine", "alpine:latest", true},
		{"alpine", "docker.io/library/alpine:latest", true},
		{"alpine", "alpine:3.20", false},
		{"alpine:*", "alpine:3.20", true},
		{"alpine:*", "alpine", true},
		{"alpine:*", "alpinex:1", false},
		{"alpine:*", "evil.io/library/alpine:3.20", false},
		{"alpine:*", "alpine@" + digest, true},
		// A rule naming one tag does not decide for a digest whose tags
		// are not known (TestDigestJudgedByARuleThatNamesIt).
		{"alpine", "alpine@" + digest, false},
		{"alpine:3.20", "alpine@" + digest, false},
		{"alpine@" + digest, "alpine@" + digest, true},
		{"alpine@" + digest, "alpine:latest", false},
		{"nvidia/*", "nvidia/cuda:12", true},
		{"nvidia/*", "nvidia/cuda/sub:12", false},
		{"nvidia/**", "nvidia/cuda/sub:12", true},
		{"alpine*", "alpine:3.20", true},
		{"alpine*", "alpine-extra:1", true},
		{"*", "alpine:3.20", true},
		{"*", "someone/alpine:3.20", false},
		{"**", "quay.io/someone/alpine:3.20", true},
		{"registry.local/**", "registry.local/a/b:c", true},
		{"registry.local/**", "registry.local.evil.io/a:c", false},
		{"re:docker\\.io/library/(alpine|debian):.*", "debian:12", true},
		{"re:docker\\.io/library/(alpine|debian):.*", "ubuntu:22.04", false},
		{"re:alpine.*", "alpine:3.20", false}, // anchored over the normalized form
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.image, func(t *testing.T) {
			p, err := compileImagePattern(tt.pattern)
			if err != nil {
				t.Fatalf("compileImagePattern(%q): %v", tt.pattern, err)
			}
			ref, err := NormalizeImage(tt.image)
			if err != nil {
				t.Fatalf("NormalizeImage(%q): %v", tt.image, err)
			}
			if got := p.matches(ref, nil); got != tt.want {
				t.Fatalf("pattern %q matches %q (%s) = %v, want %v", tt.pattern, tt.image, ref, got, tt.want)
			}
		})
	}
}

func TestCompileImagePatternErrors(t *testing.T) {
	// re:)( panicked (found by FuzzParse): a policy typo must be a
	// refusal naming the key, never a crash of every launch. re:a)|(.*
	// escaped the anchoring group and allowed every image.
	for _, p := range []string{"", "re:(", "re:)(", "re:a)|(.*", "alpine:{a,b}", "ALPINE", "a\x00b"} {
		if _, err := compileImagePattern(p); err == nil {
			t.Errorf("compileImagePattern(%q) accepted a broken pattern", p)
		}
	}
	if _, err := Parse("policy.toml", []byte("[defaults]\nimages_allow = [\"re:)(\"]\n")); err == nil || !strings.Contains(err.Error(), "images_allow") {
		t.Errorf("a policy with re:)( : %v, want a refusal naming images_allow", err)
	}
}

func TestDecidePull(t *testing.T) {
	const text = `[defaults]
images_allow = ["alpine:*", "registry.local/**"]
images_deny = ["alpine:bad"]
pull = ["never", "missing"]

[group.fresh]
pull = ["always"]

[group.offline]
local_only = true

[user.nopull]
images_allow = ["busybox"]
`
	pol, err := Parse("/p.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	who := func(name string, groups ...string) Caller {
		return Caller{User: name, UID: 1000, GID: 1000, GroupNames: append([]string{name}, groups...)}
	}
	tests := []struct {
		name   string
		caller Caller
		image  string
		want   string // the mode, or a substring of the refusal
	}{
		{"missing from defaults", who("bob"), "alpine:3.20", "missing"},
		{"always from a group", who("carol", "fresh"), "registry.local/lab/tool:1", "always"},
		{"denied image", who("carol", "fresh"), "alpine:bad", `image "alpine:bad" is denied, says images_deny in [defaults] (/p.toml:3)`},
		{"not allowed image", who("bob"), "ubuntu:24.04", "is not allowed, says images_allow"},
		{"alias of a denied image", who("bob"), "docker.io/library/alpine:bad", "is denied, says"},
		{"local only", who("dave", "offline"), "alpine:3.20", "pulling images is not allowed, says local_only in [group.offline] (/p.toml:10)"},
		{"malformed", who("bob"), "Alpine:UPPER case", ", says built-in rule image-reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, mode, err := pol.DecidePull(tt.caller, tt.image, nil)
			got := mode
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	nopull, _ := Parse("/p.toml", []byte("[defaults]\nimages_allow = [\"alpine:*\"]\npull = [\"never\"]\n"))
	if _, _, err := nopull.DecidePull(who("bob"), "alpine:3.20", nil); err == nil || !strings.Contains(err.Error(), "pulling images is not allowed, says pull in [defaults] (/p.toml:3)") {
		t.Errorf("pull = [never]: %v", err)
	}
}

// TestDigestJudgedByARuleThatNamesIt: a digest is allowed only by a rule
// for its whole repository, one that names the digest, or one that names
// a tag confirmed to resolve to it; a deny that names a tag covers that
// tag's digests, and refuses when the digest's tags are not known. Before,
// images_allow = ["tool:1"] let tool@<digest of tool:2> run, and a re:
// deny naming a tag never matched the digest form.
func TestDigestJudgedByARuleThatNamesIt(t *testing.T) {
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	tags := func(local bool, unresolved string, ts ...string) *DigestTags {
		return &DigestTags{Tags: ts, Local: local, Unresolved: unresolved}
	}
	tests := []struct {
		name, allow, deny, image string
		tags                     *DigestTags
		want                     string // "" allowed, else part of the refusal
	}{
		{"tag rule, tags unknown", `"tool:1"`, ``, "tool@" + d2, nil, "is not allowed"},
		{"tag rule, digest is another tag's", `"tool:1"`, ``, "tool@" + d2, tags(true, "", "2"), "is not allowed"},
		{"tag rule, digest confirmed as that tag", `"tool:1"`, ``, "tool@" + d1, tags(false, "", "1"), ""},
		{"whole repository", `"tool:*"`, ``, "tool@" + d2, nil, ""},
		{"repositories by glob", `"too*"`, ``, "tool@" + d2, nil, ""},
		{"the digest itself", `"tool@` + d1 + `"`, ``, "tool@" + d1, nil, ""},
		{"another digest", `"tool@` + d1 + `"`, ``, "tool@" + d2, nil, "is not allowed"},
		{"tag glob, confirmed", `"tool:1.*"`, ``, "tool@" + d1, tags(true, "", "1.2"), ""},
		{"regexp allow, confirmed", `"re:docker\\.io/library/tool:1"`, ``, "tool@" + d1, tags(true, "", "1"), ""},
		{"regexp allow, not confirmed", `"re:docker\\.io/library/tool:1"`, ``, "tool@" + d2, tags(true, "", "2"), "is not allowed"},
		{"deny tag, digest is that tag", `"tool:*"`, `"tool:2"`, "tool@" + d2, tags(false, "", "2"), "is denied"},
		{"deny tag, digest resolved to another", `"tool:*"`, `"tool:2"`, "tool@" + d1, tags(false, ""), ""},
		{"deny tag, tags unknown", `"tool:*"`, `"tool:2"`, "tool@" + d2, nil, "cannot be told apart from a denied tag"},
		{"deny tag, registry did not answer", `"tool:*"`, `"tool:2"`, "tool@" + d2, tags(false, "the registry did not answer"), "the registry did not answer"},
		{"deny regexp naming a tag", `"tool:*"`, `"re:docker\\.io/library/tool:2"`, "tool@" + d2, tags(true, "", "2", "latest"), "is denied"},
		{"deny regexp, image not on the node", `"tool:*"`, `"re:docker\\.io/library/tool:2"`, "tool@" + d2, tags(false, ""), "cannot be told apart"},
		{"deny regexp, local image of another tag", `"tool:*"`, `"re:docker\\.io/library/tool:2"`, "tool@" + d1, tags(true, "", "1"), ""},
		{"deny of another repository", `"tool:*"`, `"other:2"`, "tool@" + d2, nil, ""},
		{"deny the digest itself", `"tool:*"`, `"tool@` + d2 + `"`, "tool@" + d2, nil, "is denied"},
		{"deny whole repository", `"**"`, `"tool"`, "tool@" + d2, nil, "cannot be told apart"},
		{"deny whole repository glob", `"**"`, `"tool:*"`, "tool@" + d2, nil, "is denied"},
		{"tags of a plain tag request change nothing", `"tool:1"`, ``, "tool:2", tags(true, "", "1"), "is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "[defaults]\nimages_allow = [" + tt.allow + "]\n"
			if tt.deny != "" {
				src += "images_deny = [" + tt.deny + "]\n"
			}
			pol, err := Parse("/p.toml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			err = pol.JudgeImage(Caller{User: "bob", UID: 1000, GID: 1000}, tt.image, tt.tags)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want a refusal with %q", err, tt.want)
			}
		})
	}
}

// TestTagsToResolve: the launch resolves only what the rules need.
func TestTagsToResolve(t *testing.T) {
	pol, err := Parse("/p.toml", []byte(`[defaults]
images_allow = ["tool:1", "tool:latest", "other:*", "re:docker\\.io/library/third:.*"]
images_deny = ["tool:2", "re:docker\\.io/library/tool:3.*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	d := "@sha256:" + strings.Repeat("a", 64)
	for _, tt := range []struct {
		image     string
		literal   string
		byPattern bool
	}{
		{"tool" + d, "2 1 latest", true},
		{"other" + d, "", false},
		{"third" + d, "", true},
		{"tool:1", "", false},
	} {
		ref, _ := NormalizeImage(tt.image)
		lit, denied, pat := pol.TagsToResolve(Caller{User: "bob", UID: 1000, GID: 1000}, ref)
		if strings.Join(lit, " ") != tt.literal || pat != tt.byPattern {
			t.Errorf("%s: literal %v byPattern %v, want %q %v", tt.image, lit, pat, tt.literal, tt.byPattern)
		}
		if want := map[bool]string{true: "2", false: ""}[strings.HasPrefix(tt.image, "tool@")]; strings.Join(denied, " ") != want {
			t.Errorf("%s: denied tags %v, want %q", tt.image, denied, want)
		}
	}
}
