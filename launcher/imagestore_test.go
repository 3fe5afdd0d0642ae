package launcher

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/policy"
)

// storeFake is an engine with images of known sizes on a 1000-byte disk
// that holds 100 bytes besides them.
type storeFake struct {
	images     map[string]storeImage
	containers []container.Summary
	removed    []string
}

type storeImage struct {
	tags []string
	size uint64
}

func (f *storeFake) Info(context.Context, client.InfoOptions) (client.SystemInfoResult, error) {
	return client.SystemInfoResult{Info: system.Info{DockerRootDir: "/var/lib/docker"}}, nil
}

func (f *storeFake) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{Items: f.containers}, nil
}

func (f *storeFake) ImageInspect(_ context.Context, id string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	img, ok := f.images[id]
	if !ok {
		return client.ImageInspectResult{}, notFound("No such image: " + id)
	}
	var r client.ImageInspectResult
	r.InspectResponse = image.InspectResponse{ID: id, RepoTags: img.tags, Size: int64(img.size)}
	return r, nil
}

func (f *storeFake) ImageRemove(_ context.Context, id string, _ client.ImageRemoveOptions) (client.ImageRemoveResult, error) {
	delete(f.images, id)
	f.removed = append(f.removed, id)
	return client.ImageRemoveResult{}, nil
}

func (f *storeFake) usage(string) (uint64, uint64, error) {
	used := uint64(100)
	for _, img := range f.images {
		used += img.size
	}
	return used, 1000, nil
}

func storeID(n int) string { return fmt.Sprintf("sha256:%064x", n) }

// TestStoreCollect: above the high watermark, images containerjob pulled go
// least recently used first, until below the low one; an image a container
// uses (even a stopped one), one an admin pinned and one containerjob did
// not pull always stay.
func TestStoreCollect(t *testing.T) {
	old := PulledDir
	PulledDir = t.TempDir()
	t.Cleanup(func() { PulledDir = old })
	pol, err := policy.Parse("/p.toml", []byte("[settings]\nimage_store_high = \"80%\"\nimage_store_low = \"50%\"\nimages_keep = [\"lab/pinned:*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	high, _ := policy.ParseWatermark(pol.Settings.ImageStoreHigh)
	low, _ := policy.ParseWatermark(pol.Settings.ImageStoreLow)
	fresh := func() *storeFake {
		f := &storeFake{images: map[string]storeImage{
			storeID(1): {[]string{"lab/old:1"}, 200},    // pulled first, unused: goes first
			storeID(2): {[]string{"lab/used:1"}, 150},   // a stopped container's
			storeID(3): {[]string{"lab/pinned:1"}, 150}, // images_keep
			storeID(4): {[]string{"lab/newer:1"}, 150},  // pulled last
			storeID(5): {[]string{"admin/loaded:1"}, 100},
		}, containers: []container.Summary{{ImageID: storeID(2), State: "exited"}}}
		base := time.Now().Add(-time.Hour)
		for i, n := range []int{1, 2, 3, 4} {
			markPulled("/run/test.sock", storeID(n), "ref")
			at := base.Add(time.Duration(i) * time.Minute)
			os.Chtimes(pulledPath("/run/test.sock", storeID(n)), at, at)
		}
		return f
	}
	collect := func(f *storeFake, dry bool) (bool, []string) {
		var told []string
		g := StoreGC{Socket: "/run/test.sock", High: high, Low: low, Keep: pol.KeepImage, Usage: f.usage, DryRun: dry,
			Removed: func(id, _ string, _ time.Time, _, _ uint64) { told = append(told, id) }}
		below, err := g.Collect(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		return below, told
	}

	// 850 of 1000 used: above 80%. Removing the oldest (200) gives 650,
	// still above 50%; the next unused pulled image (150) gives 500.
	f := fresh()
	below, told := collect(f, false)
	if !below || !slices.Equal(f.removed, []string{storeID(1), storeID(4)}) || !slices.Equal(told, f.removed) {
		t.Errorf("removed %v (told %v), below %v; want the oldest unused pulled images, oldest first", f.removed, told, below)
	}
	// The kept ones stay, and only those containerjob pulled are tracked.
	for _, n := range []int{2, 3, 5} {
		if _, ok := f.images[storeID(n)]; !ok {
			t.Errorf("image %d was removed", n)
		}
	}
	if _, err := os.Stat(pulledPath("/run/test.sock", storeID(1))); err == nil {
		t.Error("a removed image is still recorded")
	}

	// A dry run removes nothing and names what would go.
	f = fresh()
	if _, told := collect(f, true); len(f.removed) != 0 || !slices.Equal(told, []string{storeID(1), storeID(4)}) {
		t.Errorf("dry run removed %v, told %v", f.removed, told)
	}

	// Below the high watermark nothing goes.
	f = fresh()
	delete(f.images, storeID(5))
	f.images[storeID(1)] = storeImage{[]string{"lab/old:1"}, 50}
	if below, told := collect(f, false); !below || len(told) != 0 {
		t.Errorf("at 600 of 1000: removed %v", told)
	}

	// Nothing more may go and the disk stays above the low watermark.
	f = fresh()
	f.containers = append(f.containers, container.Summary{ImageID: storeID(1)}, container.Summary{ImageID: storeID(4)})
	if below, told := collect(f, false); below || len(told) != 0 {
		t.Errorf("with every pulled image in use: removed %v, below %v", told, below)
	}
}

func TestParseWatermark(t *testing.T) {
	for in, want := range map[string]policy.Watermark{"90%": {Percent: 90}, "12.5%": {Percent: 12.5}, "200GiB": {Bytes: 200 << 30}, "500M": {Bytes: 500 << 20}} {
		if got, err := policy.ParseWatermark(in); err != nil || got != want {
			t.Errorf("ParseWatermark(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0%", "101%", "x%", "lots", "-5G", ""} {
		if _, err := policy.ParseWatermark(bad); err == nil {
			t.Errorf("ParseWatermark(%q) accepted", bad)
		}
	}
	if _, err := policy.Parse("/p.toml", []byte("[settings]\nimage_store_high = \"50%\"\nimage_store_low = \"60%\"\n")); err == nil {
		t.Error("a low watermark above the high one was accepted")
	}
}
