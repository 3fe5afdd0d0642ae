package launcher

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/launcher/guard"
	"github.com/containerjob/containerjob/policy"
)

// Account is the caller as the container's /etc/passwd and /etc/group
// show them, from the host's user database (trusted, unlike the image).
type Account struct {
	Name       string
	UID, GID   uint32
	Home       string
	LoginShell string  // the host's; used only where the image has it
	Groups     []Group // all the caller's groups, primary included
}

// Group is one of the caller's groups.
type Group struct {
	Name string
	GID  uint32
}

// imageAccounts is what an image's own account files hold, read once per
// image per node. Unsafe says why the image's /etc cannot take a bind
// mount (a symlink there would steer the mount elsewhere); then no entries
// are added.
type imageAccounts struct {
	Passwd string   `json:"passwd"`
	Group  string   `json:"group"`
	Shells []string `json:"shells"`
	Unsafe string   `json:"unsafe,omitempty"`
}

// AccountsCache holds imageAccounts per image ID: an image ID names its
// content, so an entry never goes stale. Root-owned, on tmpfs.
var AccountsCache = "/run/containerjob/accounts"

// maxAccountFile bounds what is read of an image's /etc/passwd or
// /etc/group: the image is the user's, its files may be anything.
const maxAccountFile = 4 << 20

// knownShells are the login shells looked for in an image; the caller's
// own is used where the image has it, /bin/sh otherwise.
var knownShells = []string{
	"/bin/bash", "/usr/bin/bash", "/bin/zsh", "/usr/bin/zsh", "/bin/tcsh", "/usr/bin/tcsh",
	"/bin/csh", "/usr/bin/csh", "/bin/ksh", "/usr/bin/ksh", "/usr/bin/fish", "/bin/fish",
}

// LabelProbe marks the never-started container an image's account files
// are read from; it has no job label, and gc removes one left by a killed
// launch (a created container of no job).
const LabelProbe = "org.containerjob.probe"

var probePids int64 = 1

var imageIDRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// addAccounts binds generated /etc/passwd and /etc/group into the request:
// the image's entries with the caller's user and groups in place of any
// that share their name or id. Skipped where the policy turns it off, where
// the caller mounts something over those files, or where the image's /etc
// is not plain (then the container simply lacks the entries).
func addAccounts(ctx context.Context, eng Engine, d *policy.Decision, imageID string, req *client.ContainerCreateOptions, stage *Stage, a *Account) error {
	if !d.UserEntries || a == nil {
		return nil
	}
	for _, m := range req.HostConfig.Mounts {
		for _, f := range []string{"/etc/passwd", "/etc/group"} {
			if m.Target == f || strings.HasPrefix(f, strings.TrimSuffix(m.Target, "/")+"/") {
				return nil // the caller's own mount decides
			}
		}
	}
	img, err := readImageAccounts(ctx, eng, d, imageID)
	if err != nil {
		return &Error{Code: ExitLaunchFailed, Err: fmt.Errorf("reading the image's /etc/passwd and /etc/group: %w (an admin may set user_entries = \"off\")", err)}
	}
	if img.Unsafe != "" {
		return nil
	}
	passwd, group := mergeAccounts(img, *a)
	for _, f := range []struct{ target, content string }{{"/etc/passwd", passwd}, {"/etc/group", group}} {
		src, err := stage.AddFile(filepath.Base(f.target), []byte(f.content), f.target)
		if err != nil {
			return &Error{Code: ExitLaunchFailed, Err: err}
		}
		req.HostConfig.Mounts = append(req.HostConfig.Mounts, bindReadOnly(src, f.target))
	}
	return nil
}

// mergeAccounts is pure: the image's lines first, minus those the
// caller's entries replace, then the caller's. Lines are kept byte for
// byte; only their first and third fields are read.
func mergeAccounts(img imageAccounts, a Account) (passwd, group string) {
	shell := "/bin/sh"
	if a.LoginShell != "" && slices.Contains(img.Shells, a.LoginShell) {
		shell = a.LoginShell
	}
	var pw strings.Builder
	for _, line := range accountLines(img.Passwd) {
		name, id := accountFields(line)
		if name == a.Name || id == strconv.FormatUint(uint64(a.UID), 10) {
			continue
		}
		pw.WriteString(line + "\n")
	}
	fmt.Fprintf(&pw, "%s:x:%d:%d::%s:%s\n", a.Name, a.UID, a.GID, a.Home, shell)

	var gr strings.Builder
	replaced := func(name, id string) bool {
		return slices.ContainsFunc(a.Groups, func(g Group) bool {
			return g.Name == name || strconv.FormatUint(uint64(g.GID), 10) == id
		})
	}
	for _, line := range accountLines(img.Group) {
		if name, id := accountFields(line); replaced(name, id) {
			continue
		}
		gr.WriteString(line + "\n")
	}
	for _, g := range a.Groups {
		members := a.Name
		if g.GID == a.GID {
			members = "" // the primary group lists no members
		}
		fmt.Fprintf(&gr, "%s:x:%d:%s\n", g.Name, g.GID, members)
	}
	return pw.String(), gr.String()
}

func accountLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// accountFields returns a passwd or group line's name and numeric id.
func accountFields(line string) (name, id string) {
	f := strings.SplitN(line, ":", 4)
	if len(f) < 3 {
		return line, ""
	}
	return f[0], f[2]
}

// ValidAccount says whether the host's entries can be written as lines:
// no field may hold a colon or a line break, and the names must not be
// empty. The user database is the admin's, but a bad entry must not
// produce a broken or extra line.
func ValidAccount(a Account) error {
	bad := func(s string) bool { return strings.ContainsAny(s, ":\n\r") }
	if a.Name == "" || bad(a.Name) || bad(a.Home) || bad(a.LoginShell) {
		return fmt.Errorf("user %q cannot be written to /etc/passwd", a.Name)
	}
	for _, g := range a.Groups {
		if g.Name == "" || bad(g.Name) {
			return fmt.Errorf("group %q cannot be written to /etc/group", g.Name)
		}
	}
	return nil
}

func bindReadOnly(src, target string) mount.Mount {
	return mount.Mount{Type: mount.TypeBind, Source: src, Target: target, ReadOnly: true,
		BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate}}
}

// readImageAccounts returns the image's account files, from the node's
// cache or from a container created (never started) for the purpose.
func readImageAccounts(ctx context.Context, eng Engine, d *policy.Decision, imageID string) (imageAccounts, error) {
	var img imageAccounts
	if !imageIDRE.MatchString(imageID) {
		return img, fmt.Errorf("image id %q is not a sha256 digest", imageID)
	}
	cache := filepath.Join(AccountsCache, strings.TrimPrefix(imageID, "sha256:")+".json")
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &img) == nil {
		return img, nil
	}
	img, err := probeImageAccounts(ctx, eng, d, imageID)
	if err != nil {
		return img, err
	}
	if b, err := json.Marshal(img); err == nil {
		writeNodeCache(cache, b)
	}
	return img, nil
}

func probeImageAccounts(ctx context.Context, eng Engine, d *policy.Decision, imageID string) (imageAccounts, error) {
	var img imageAccounts
	// Its uid label is nobody's, whom no launch is for, so no limit of a
	// real caller counts it.
	labels := map[string]string{policy.LabelManaged: "1", LabelProbe: "1", policy.LabelUID: "65534"}
	for _, l := range []string{policy.LabelNode, policy.LabelScheduler, policy.LabelVersion} {
		if v, ok := d.Labels[l]; ok {
			labels[l] = v
		}
	}
	req := client.ContainerCreateOptions{
		Config: &container.Config{
			Image: imageID, User: "65534:65534", Labels: labels, NetworkDisabled: true,
			Entrypoint: []string{"/containerjob-probe-is-never-started"}, Cmd: []string{},
		},
		HostConfig: &container.HostConfig{
			NetworkMode: "none", CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"}, ReadonlyRootfs: true,
			LogConfig: container.LogConfig{Type: "none"}, Resources: container.Resources{PidsLimit: &probePids},
		},
	}
	created, err := guardedCreate(ctx, eng, nil, req, guard.Expect{UID: 65534, GID: 65534})
	if err != nil {
		return img, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		eng.ContainerRemove(rctx, created.ID, client.ContainerRemoveOptions{Force: true})
	}()
	stat := func(p string) (container.PathStat, bool, error) {
		sctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		res, err := eng.ContainerStatPath(sctx, created.ID, client.ContainerStatPathOptions{Path: p})
		if cerrdefs.IsNotFound(err) {
			return res.Stat, false, nil
		}
		return res.Stat, err == nil, err
	}
	st, ok, err := stat("/etc")
	switch {
	case err != nil:
		return img, err
	case ok && !st.Mode.IsDir():
		img.Unsafe = "/etc is not a directory"
		return img, nil
	}
	for _, f := range []struct {
		path string
		into *string
	}{{"/etc/passwd", &img.Passwd}, {"/etc/group", &img.Group}} {
		st, ok, err := stat(f.path)
		switch {
		case err != nil:
			return img, err
		case !ok:
			continue
		case !st.Mode.IsRegular():
			img.Unsafe = f.path + " is not a regular file"
			return img, nil
		}
		content, err := copyFile(ctx, eng, created.ID, f.path)
		if err != nil {
			return img, err
		}
		*f.into = content
	}
	for _, sh := range knownShells {
		st, ok, err := stat(sh)
		if err != nil {
			return img, err
		}
		if ok && !st.Mode.IsDir() {
			img.Shells = append(img.Shells, sh)
		}
	}
	return img, nil
}

// copyFile reads one regular file out of a container: the first entry of
// the engine's tar stream, at most maxAccountFile bytes.
func copyFile(ctx context.Context, eng Engine, id, path string) (string, error) {
	var b bytes.Buffer
	err := readFromContainer(ctx, eng, id, path, func(h *tar.Header, r io.Reader) error {
		if h.Size > maxAccountFile {
			return fmt.Errorf("%s is larger than %d bytes", path, maxAccountFile)
		}
		if _, err := io.Copy(&b, io.LimitReader(r, maxAccountFile)); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return b.String(), nil
}

// readFromContainer hands read the header and content of the regular file
// path in container id, through the engine's copy (a tar stream whose
// first entry is the file), within apiTimeout.
func readFromContainer(ctx context.Context, eng Engine, id, path string, read func(h *tar.Header, r io.Reader) error) error {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	res, err := eng.CopyFromContainer(cctx, id, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		return err
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if h.Typeflag != tar.TypeReg {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return read(h, tr)
}
