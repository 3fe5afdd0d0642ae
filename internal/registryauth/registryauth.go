// Package registryauth reads a user's registry credentials from their own
// ~/.docker/config.json, as that user, for one launch: containerjob hands
// them to the engine with the one request that needs them (X-Registry-Auth)
// and keeps them nowhere, neither on the node, nor in the audit trail, nor
// in any argv. Credential helpers (credsStore, credHelpers) are not run:
// they are programs of the user's, and containerjob runs as root.
package registryauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/api/types/registry"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/userfs"
)

// maxConfig bounds what is read of the user's file.
const maxConfig = 1 << 20

// Creds are one user's credentials, by registry host as image references
// name it ("docker.io", "nvcr.io", "127.0.0.1:5000").
type Creds struct {
	byHost  map[string]registry.AuthConfig
	helpers map[string]bool // hosts the file leaves to a credential helper
	store   bool            // a credsStore for every host
	path    string
}

// ReadTimeout bounds reading the user's file: it lives where the user
// decides (a hung NFS home, say), and a launch reads it before it takes
// any of the node's locks, so a stall costs only this launch.
var ReadTimeout = 10 * time.Second

// Read reads home/.docker/config.json as id (its permissions, its view);
// a missing file gives empty credentials. Only a regular file is read: it
// is opened without blocking (a FIFO would wait for a writer the user
// controls) and refused unless fstat says regular, and the whole read has
// ReadTimeout. Callers read it before taking any lock of the node.
func Read(id userfs.Identity, home string) (Creds, error) {
	path := filepath.Join(home, ".docker", "config.json")
	var data []byte
	err := userfs.ReadRegular(id, path, 0, ReadTimeout, func(f *os.File) error {
		b, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
		data = b
		return err
	})
	var timeout *userfs.TimeoutError
	if errors.As(err, &timeout) {
		return Creds{path: path}, err
	}
	if errors.Is(err, os.ErrNotExist) {
		return Creds{path: path}, nil
	}
	if err != nil {
		return Creds{path: path}, fmt.Errorf("%s cannot be read: %w", path, err)
	}
	if len(data) > maxConfig {
		return Creds{path: path}, fmt.Errorf("%s is larger than 1 MiB", path)
	}
	c, err := Parse(data)
	c.path = path
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads the "auths" of a Docker client configuration.
func Parse(data []byte) (Creds, error) {
	var f struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
		CredsStore  string            `json:"credsStore"`
		CredHelpers map[string]string `json:"credHelpers"`
	}
	c := Creds{byHost: map[string]registry.AuthConfig{}, helpers: map[string]bool{}}
	if err := json.Unmarshal(data, &f); err != nil {
		return c, fmt.Errorf("not a Docker client configuration (JSON): %w", err)
	}
	for key, a := range f.Auths {
		host := Host(key)
		ac := registry.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, ServerAddress: key}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return c, fmt.Errorf("auths[%q].auth is not base64", key)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok || user == "" {
				return c, fmt.Errorf("auths[%q].auth is not user:password", key)
			}
			ac.Username, ac.Password = user, pass
		}
		if ac.Username == "" && ac.IdentityToken == "" {
			continue // an entry a credential helper fills
		}
		c.byHost[host] = ac
	}
	for key := range f.CredHelpers {
		c.helpers[Host(key)] = true
	}
	c.store = f.CredsStore != ""
	return c, nil
}

// Host is the registry host a configuration key names, as image references
// name it: "https://index.docker.io/v1/" is "docker.io".
func Host(key string) string {
	h := key
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	h = strings.ToLower(h)
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// For is the engine's X-Registry-Auth value for host; found is false when
// the file has no credentials for it. A host only a credential helper
// could answer for is an error that says so.
func (c Creds) For(host string) (encoded string, found bool, err error) {
	ac, ok := c.byHost[host]
	if !ok {
		if c.helpers[host] || c.store {
			return "", false, hint.Errorf("log in with a plain entry (docker login stores one when no helper is configured)", "%s leaves %s to a credential helper, which containerjob does not run", c.where(), host)
		}
		return "", false, nil
	}
	data, _ := json.Marshal(ac)
	return base64.URLEncoding.EncodeToString(data), true, nil
}

func (c Creds) where() string {
	if c.path == "" {
		return "your Docker configuration"
	}
	return c.path
}
