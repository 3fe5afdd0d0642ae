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
		{"alpine", "alpine@" + digest, true},
		{"alpine:3.20", "alpine@" + digest, true},
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
			if got := p.matches(ref); got != tt.want {
				t.Fatalf("pattern %q matches %q (%s) = %v, want %v", tt.pattern, tt.image, ref, got, tt.want)
			}
		})
	}
}

func TestCompileImagePatternErrors(t *testing.T) {
	for _, p := range []string{"", "re:(", "alpine:{a,b}", "ALPINE", "a\x00b"} {
		if _, err := compileImagePattern(p); err == nil {
			t.Errorf("compileImagePattern(%q) accepted a broken pattern", p)
		}
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
			_, mode, err := pol.DecidePull(tt.caller, tt.image)
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
	if _, _, err := nopull.DecidePull(who("bob"), "alpine:3.20"); err == nil || !strings.Contains(err.Error(), "pulling images is not allowed, says pull in [defaults] (/p.toml:3)") {
		t.Errorf("pull = [never]: %v", err)
	}
}
