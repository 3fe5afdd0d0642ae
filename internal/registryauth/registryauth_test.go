package registryauth

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/registry"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/userfs"

	"github.com/containerjob/containerjob/internal/hint"
)

func TestParseAndFor(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	conf := `{
  "auths": {
    "https://index.docker.io/v1/": {"auth": "` + b64("hubuser:hubpass") + `"},
    "nvcr.io": {"auth": "` + b64("$oauthtoken:key:with:colons") + `"},
    "http://127.0.0.1:5058": {"username": "cjalice", "password": "s3cret"},
    "registry.lab": {"identitytoken": "tok"},
    "helped.example": {}
  },
  "credHelpers": {"helped.example": "pass", "ecr.example": "ecr-login"}
}`
	c, err := Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host           string
		user, pass, id string
		found          bool
		wantErr        string
	}{
		{host: "docker.io", user: "hubuser", pass: "hubpass", found: true},
		{host: "nvcr.io", user: "$oauthtoken", pass: "key:with:colons", found: true},
		{host: "127.0.0.1:5058", user: "cjalice", pass: "s3cret", found: true},
		{host: "registry.lab", id: "tok", found: true},
		{host: "quay.io"},
		{host: "helped.example", wantErr: "credential helper"},
		{host: "ecr.example", wantErr: "credential helper"},
	} {
		enc, found, err := c.For(tt.host)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("For(%s) = %v; want error %q", tt.host, err, tt.wantErr)
			}
			continue
		}
		if err != nil || found != tt.found {
			t.Errorf("For(%s) = found %v, %v", tt.host, found, err)
			continue
		}
		if !found {
			continue
		}
		raw, err := base64.URLEncoding.DecodeString(enc)
		var ac registry.AuthConfig
		if err != nil || json.Unmarshal(raw, &ac) != nil || ac.Username != tt.user || ac.Password != tt.pass || ac.IdentityToken != tt.id {
			t.Errorf("For(%s) encodes %+v (%v)", tt.host, ac, err)
		}
	}
}

// TestParseRefusesMalformed: a broken file is a clear error, never a guess.
func TestParseRefusesMalformed(t *testing.T) {
	for _, tt := range []struct{ conf, want string }{
		{`{"auths": `, "not a Docker client configuration"},
		{`{"auths": {"r.example": {"auth": "%%%"}}}`, "is not base64"},
		{`{"auths": {"r.example": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("nocolon")) + `"}}}`, "is not user:password"},
		{`["auths"]`, "not a Docker client configuration"},
	} {
		if _, err := Parse([]byte(tt.conf)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) = %v; want %q", tt.conf, err, tt.want)
		}
	}
	// A credsStore for everything: a host without a plain entry says so.
	c, err := Parse([]byte(`{"credsStore": "desktop"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.For("docker.io"); err == nil || !strings.Contains(err.Error(), "credential helper") || !strings.Contains(hint.Of(err), "docker login") {
		t.Errorf("credsStore: %v (hint %q)", err, hint.Of(err))
	}
}

func TestHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://index.docker.io/v1/": "docker.io", "registry-1.docker.io": "docker.io", "NVCR.IO": "nvcr.io",
		"http://127.0.0.1:5058": "127.0.0.1:5058", "https://registry.lab:5000/v2/": "registry.lab:5000",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestReadNeverWaitsOnTheCallersFile: a launch reads the caller's file
// before any of the node's locks, and what the caller puts there cannot
// make it wait: a FIFO nobody writes to is refused at once (it used to
// block in open), as is anything but a regular file.
func TestReadNeverWaitsOnTheCallersFile(t *testing.T) {
	id := userfs.Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	home := func(t *testing.T) string {
		h := t.TempDir()
		if err := os.Mkdir(filepath.Join(h, ".docker"), 0o700); err != nil {
			t.Fatal(err)
		}
		return h
	}
	t.Run("fifo", func(t *testing.T) {
		h := home(t)
		if err := unix.Mkfifo(filepath.Join(h, ".docker", "config.json"), 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := Read(id, h); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("a FIFO: err %v, want it refused as not a regular file", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read blocked on a FIFO")
		}
	})
	t.Run("directory", func(t *testing.T) {
		h := home(t)
		os.Mkdir(filepath.Join(h, ".docker", "config.json"), 0o700)
		if _, err := Read(id, h); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a directory: err %v", err)
		}
	})
	t.Run("regular", func(t *testing.T) {
		h := home(t)
		os.WriteFile(filepath.Join(h, ".docker", "config.json"), []byte(`{"auths":{"r.example:5000":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("u:p"))+`"}}}`), 0o600)
		c, err := Read(id, h)
		if err != nil {
			t.Fatal(err)
		}
		if _, found, _ := c.For("r.example:5000"); !found {
			t.Error("credentials of a regular file not found")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := Read(id, t.TempDir()); err != nil {
			t.Errorf("a missing file: %v, want empty credentials", err)
		}
	})
}
