package policy

import (
	"strings"
	"testing"
)

// FuzzParse: no input may crash the parser, and an accepted policy must
// decide without crashing.
func FuzzParse(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add([]byte("[defaults]\nimages_allow = [\"re:(a|b)*\", \"**\"]\nmounts_allow = [\"$HOME:ro\"]\n"))
	f.Add([]byte("[group.\"x y\"]\npids_limit = -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("/f.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "/f.toml") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		p.Check(Lookup{})
		p.Decide(Request{Image: "alpine:3.20", Mounts: []MountRequest{{Given: "/home/a/x", Source: "/home/a/x", Target: "/x"}}}, alice, inJob)
	})
}

// FuzzNormalizeImage: normalization is total (no panic) and idempotent.
func FuzzNormalizeImage(f *testing.F) {
	for _, s := range []string{"alpine", "alpine:3.20", "docker.io/library/alpine:latest", "localhost:5000/a/b:c", "a@sha256:" + strings.Repeat("0", 64), "", "ALPINE", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := NormalizeImage(s)
		if err != nil {
			return
		}
		again, err := NormalizeImage(ref.String())
		if err != nil || again != ref {
			t.Fatalf("NormalizeImage(%q) = %q, but normalizing that gives %q, %v", s, ref, again, err)
		}
	})
}

// FuzzImagePattern: patterns compile or fail cleanly; a deny pattern equal
// to the reference always matches it.
func FuzzImagePattern(f *testing.F) {
	f.Add("alpine:*", "alpine:3.20")
	f.Add("re:docker\\.io/.*", "busybox")
	f.Add("**", "a/b/c:d")
	f.Fuzz(func(t *testing.T, pattern, image string) {
		if p, err := compileImagePattern(pattern); err == nil {
			if ref, err := NormalizeImage(image); err == nil {
				p.matches(ref, nil)
			}
		}
		if ref, err := NormalizeImage(image); err == nil {
			p, err := compileImagePattern(ref.String())
			if err != nil || !p.matches(ref, nil) {
				t.Fatalf("pattern %q does not match its own reference: %v", ref.String(), err)
			}
		}
	})
}
