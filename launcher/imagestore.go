package launcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/policy"
)

// PulledDir records the images containerjob pulled onto the node, per
// engine (its socket) and image ID, one file each, whose modification time
// is the image's last use by a launch: what `gc --images` may remove,
// least recently used first. Images an admin loaded or pulled by other
// means are never its to remove. Kept across reboots, like the images. A
// variable for tests.
var PulledDir = "/var/lib/containerjob/pulled"

var imageIDHex = regexp.MustCompile(`^sha256:([0-9a-f]{64})$`)

// storeDir is where the pulls into the engine at socket are recorded.
func storeDir(socket string) string {
	sum := sha256.Sum256([]byte(socket))
	return filepath.Join(PulledDir, hex.EncodeToString(sum[:8]))
}

func pulledPath(socket, id string) string {
	m := imageIDHex.FindStringSubmatch(id)
	if m == nil || socket == "" {
		return ""
	}
	return filepath.Join(storeDir(socket), m[1])
}

// imagesBefore is what the engine has before a pull: an image already
// there (an admin's, pulled by hand, under any name) is never recorded as
// containerjob's, whatever a later pull of it returns. Nil when the
// engine cannot say: then nothing is recorded.
func imagesBefore(ctx context.Context, eng interface {
	ImageList(context.Context, client.ImageListOptions) (client.ImageListResult, error)
}) map[string]bool {
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	res, err := eng.ImageList(lctx, client.ImageListOptions{All: true})
	if err != nil {
		return nil
	}
	ids := make(map[string]bool, len(res.Items))
	for _, img := range res.Items {
		ids[img.ID] = true
	}
	return ids
}

// markPulledNew records image id as pulled by containerjob only when the
// pull brought it: before (imagesBefore) known and without it.
func markPulledNew(socket, id, ref string, before map[string]bool) {
	if before == nil || before[id] {
		return
	}
	markPulled(socket, id, ref)
}

// markPulled records that containerjob pulled image id (as ref) into the
// engine at socket.
func markPulled(socket, id, ref string) {
	path := pulledPath(socket, id)
	if path == "" || os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	os.WriteFile(path, []byte(ref+"\n"), 0o600)
}

// markUsed moves a pulled image's last use to now; other images are not
// containerjob's to track.
func markUsed(socket, id string) {
	if path := pulledPath(socket, id); path != "" {
		now := time.Now()
		os.Chtimes(path, now, now)
	}
}

// StoreEngine is what the image store's collection needs of the engine.
type StoreEngine interface {
	Info(ctx context.Context, opts client.InfoOptions) (client.SystemInfoResult, error)
	ContainerList(ctx context.Context, opts client.ContainerListOptions) (client.ContainerListResult, error)
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageRemove(ctx context.Context, image string, opts client.ImageRemoveOptions) (client.ImageRemoveResult, error)
}

// exceeded reports whether used (of total) is above w.
func exceeded(w policy.Watermark, used, total uint64) bool {
	if w.Bytes > 0 {
		return used > w.Bytes
	}
	return total > 0 && float64(used)*100/float64(total) > w.Percent
}

// DiskUsage is the used and total bytes of the file system holding path.
func DiskUsage(path string) (used, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	total = st.Blocks * uint64(st.Bsize)
	return total - st.Bfree*uint64(st.Bsize), total, nil
}

// StoreGC is one collection of the image store.
type StoreGC struct {
	// Socket is the engine's socket path: whose pulls are collected.
	Socket    string
	High, Low policy.Watermark
	// Keep reports whether an admin pinned an image (by any of its names).
	Keep func(names []string) bool
	// Usage measures the engine's data file system (DiskUsage in use).
	Usage  func(root string) (used, total uint64, err error)
	DryRun bool
	// Removed is told of each image removed (or that would be), in order.
	Removed func(id, ref string, lastUse time.Time, used, total uint64)
}

// Collect removes images containerjob pulled that no container uses (any
// state) and no admin pinned, least recently used first, once the data
// file system is above the high watermark, until it is below the low one.
// It reports whether it ended below the low watermark.
func (g StoreGC) Collect(ctx context.Context, eng StoreEngine) (bool, error) {
	info, err := eng.Info(ctx, client.InfoOptions{})
	if err != nil {
		return false, fmt.Errorf("asking the engine for its data root: %v", err)
	}
	root := info.Info.DockerRootDir
	used, total, err := g.Usage(root)
	if err != nil {
		return false, fmt.Errorf("measuring %s: %w", root, err)
	}
	if !exceeded(g.High, used, total) {
		return true, nil
	}
	cs, err := eng.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return false, fmt.Errorf("listing containers: %v", err)
	}
	inUse := map[string]bool{}
	for _, c := range cs.Items {
		inUse[c.ImageID] = true
	}
	entries, err := os.ReadDir(storeDir(g.Socket))
	if err != nil && !os.IsNotExist(err) {
		return false, err
	}
	type candidate struct {
		id, ref string
		last    time.Time
		size    uint64
	}
	var cands []candidate
	for _, e := range entries {
		id := "sha256:" + e.Name()
		fi, err := e.Info()
		if err != nil || pulledPath(g.Socket, id) == "" || inUse[id] {
			continue
		}
		img, err := eng.ImageInspect(ctx, id)
		if err != nil {
			if !g.DryRun {
				os.Remove(pulledPath(g.Socket, id)) // gone by other means
			}
			continue
		}
		names := append(append([]string{}, img.RepoTags...), img.RepoDigests...)
		if g.Keep != nil && g.Keep(names) {
			continue
		}
		ref, _ := os.ReadFile(pulledPath(g.Socket, id))
		cands = append(cands, candidate{id, strings.TrimSpace(string(ref)), fi.ModTime(), uint64(max(img.Size, 0))})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].last.Before(cands[j].last) })
	for _, c := range cands {
		if !exceeded(g.Low, used, total) {
			break
		}
		if g.DryRun {
			// What removing it would free, at most: layers it shares
			// with other images stay.
			used -= min(used, c.size)
		} else {
			if _, err := eng.ImageRemove(ctx, c.id, client.ImageRemoveOptions{Force: false, PruneChildren: true}); err != nil {
				// A container made from it since the list: it stays.
				continue
			}
			os.Remove(pulledPath(g.Socket, c.id))
			if used, total, err = g.Usage(root); err != nil {
				return false, fmt.Errorf("measuring %s: %w", root, err)
			}
		}
		if g.Removed != nil {
			g.Removed(c.id, c.ref, c.last, used, total)
		}
	}
	return !exceeded(g.Low, used, total), nil
}
