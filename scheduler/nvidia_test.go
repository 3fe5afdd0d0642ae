package scheduler

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerjob/containerjob/internal/hint"
)

// The fixture is laid out as driver 580 keeps it (no nvidia-smi
// minor_number any more); its bus order and minors disagree on purpose.
func TestNvidiaUUIDs(t *testing.T) {
	got, err := NvidiaUUIDs("testdata/proc-nvidia-580")
	want := map[int]string{0: "GPU-0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6", 1: "GPU-5f9c4d0e-8a1b-4c2d-9e3f-0a1b2c3d4e5f"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("NvidiaUUIDs = %v, %v; want %v", got, err, want)
	}
	bad := t.TempDir()
	dir := filepath.Join(bad, "driver/nvidia/gpus/bus-01")
	os.MkdirAll(dir, 0o755)
	for _, tt := range []struct{ name, info, wantErr string }{
		{"no minor", "GPU UUID: \t GPU-1\n", "no Device Minor"},
		{"no uuid", "Device Minor: \t 0\n", "no Device Minor"},
		{"uuid that is not one", "Device Minor: 0\nGPU UUID: GPU-1, GPU-2\n", "no Device Minor"},
	} {
		os.WriteFile(filepath.Join(dir, "information"), []byte(tt.info), 0o644)
		if _, err := NvidiaUUIDs(bad); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := NvidiaUUIDs(t.TempDir()); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("no driver: err %v", err)
	}
}

// TestNameGPUs: each GPU gets the UUID the driver records for its minor,
// and a GPU the driver does not know fails rather than falling back.
func TestNameGPUs(t *testing.T) {
	proc := t.TempDir()
	for bus, info := range map[string]string{
		"0000:19:00.0": "Device Minor: \t 2\nGPU UUID: \t GPU-two\n",
		"0000:3b:00.0": "Device Minor: \t 0\nGPU UUID: \t GPU-zero\n",
	} {
		dir := filepath.Join(proc, "driver", "nvidia", "gpus", bus)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "information"), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gpus := []GPU{{Index: 0, Device: "/dev/nvidia2", Minor: 2}, {Index: 1, Device: "/dev/nvidia0", Minor: 0}}
	if err := nameGPUs(gpus, proc); err != nil || gpus[0].UUID != "GPU-two" || gpus[1].UUID != "GPU-zero" {
		t.Errorf("nameGPUs = %+v, %v", gpus, err)
	}
	missing := []GPU{{Index: 0, Device: "/dev/nvidia5", Minor: 5}}
	if err := nameGPUs(missing, proc); err == nil || !strings.Contains(err.Error(), "no GPU with device minor 5") || missing[0].UUID != "" {
		t.Errorf("a GPU the driver lacks: %+v, %v", missing, err)
	}
	if err := nameGPUs(gpus, t.TempDir()); err == nil || !strings.Contains(err.Error(), "names GPUs by UUID") || !strings.Contains(hint.Of(err), "gpus_mode = \"devices\"") {
		t.Errorf("no driver records: %v (hint %q)", err, hint.Of(err))
	}
}
