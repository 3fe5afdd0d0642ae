package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Device files stand in for GPUs in these tests: /dev/null (1:3), /dev/zero
// (1:5) and /dev/full (1:7) exist everywhere, with major 1 playing the
// NVIDIA driver's 195.
const cdiYAML = `---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
containerEdits:
  deviceNodes:
  - path: /dev/nvidiactl
devices:
# nvidia-smi's index 0 is the device with minor 5: index and minor disagree.
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/zero
- name: GPU-zero
  containerEdits:
    deviceNodes:
    - path: /dev/zero
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/null
- name: GPU-null
  containerEdits:
    deviceNodes:
    - path: /dev/null
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/zero
    - path: /dev/null
    - path: /dev/full
`

// An index-only spec in JSON, a device whose container path differs from
// its host path, and a spec of another kind that must not count.
const cdiJSON = `{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [
 {"name": "2", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia2", "hostPath": "/dev/full"}]}}]}`
const otherKind = `{"cdiVersion": "0.5.0", "kind": "vendor.com/fpga", "devices": [
 {"name": "GPU-0", "containerEdits": {"deviceNodes": [{"path": "/dev/null"}]}}]}`

func cdiDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCDINames(t *testing.T) {
	old := nvidiaMajor
	nvidiaMajor = 1
	t.Cleanup(func() { nvidiaMajor = old })
	dir := cdiDir(t, map[string]string{"nvidia.yaml": cdiYAML, "extra.json": cdiJSON, "fpga.json": otherKind, "README": "not a spec"})
	got, err := CDINames([]string{dir, "/nonexistent/cdi"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"1:3": "nvidia.com/gpu=GPU-null", // the UUID name, not index "1"
		"1:5": "nvidia.com/gpu=GPU-zero",
		"1:7": "nvidia.com/gpu=2", // index alone, by its host path; never "all"
	}
	if len(got) != len(want) {
		t.Errorf("CDINames = %v; want %v", got, want)
	}
	for dev, name := range want {
		if got[dev] != name {
			t.Errorf("CDINames[%s] = %q; want %q", dev, got[dev], name)
		}
	}

	gpus := []GPU{{Index: 0, Device: "/dev/null", Minor: 3}, {Index: 1, Device: "/dev/full", Minor: 7}}
	if err := nameCDI(gpus, []string{dir}); err != nil || gpus[0].CDI != "nvidia.com/gpu=GPU-null" || gpus[1].CDI != "nvidia.com/gpu=2" {
		t.Errorf("nameCDI = %v, %+v", err, gpus)
	}
	// A GPU that no device brings alone (only "all" has it) fails the
	// launch rather than borrowing a name.
	onlyAll := cdiDir(t, map[string]string{"nvidia.yaml": cdiYAML})
	err = nameCDI([]GPU{{Device: "/dev/full", Minor: 7}}, []string{onlyAll})
	if err == nil || !strings.Contains(err.Error(), `gpus_mode "cdi": no nvidia.com/gpu device`) || !strings.Contains(err.Error(), "/dev/full") {
		t.Errorf("nameCDI of a GPU without its own device = %v", err)
	}
	broken := cdiDir(t, map[string]string{"nvidia.yaml": "kind: [unclosed"})
	if err := nameCDI(gpus, []string{broken}); err == nil || !strings.Contains(err.Error(), "neither JSON nor YAML") {
		t.Errorf("nameCDI with a broken spec = %v", err)
	}
}
