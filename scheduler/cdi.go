package scheduler

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
)

// DefaultCDISpecDirs are where the engine (Docker's default, and the CDI
// library's) reads CDI specs; `nvidia-ctk cdi generate` writes there.
var DefaultCDISpecDirs = []string{"/etc/cdi", "/var/run/cdi"}

// CDIKind is the kind of device nvidia-ctk's specs declare for GPUs.
const CDIKind = "nvidia.com/gpu"

// cdiSpec is the part of a CDI spec (JSON or YAML; YAML reads both) that
// says which device nodes each named device brings.
type cdiSpec struct {
	Kind    string `yaml:"kind"`
	Devices []struct {
		Name  string `yaml:"name"`
		Edits struct {
			DeviceNodes []struct {
				Path     string `yaml:"path"`
				HostPath string `yaml:"hostPath"`
			} `yaml:"deviceNodes"`
		} `yaml:"containerEdits"`
	} `yaml:"devices"`
}

var cdiName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

// nvidiaControlMinors are the NVIDIA driver's fixed minors of its shared
// device files (nvidia-modeset 254, nvidiactl 255): a CDI device may bring
// them along with its one GPU.
var nvidiaControlMinors = map[uint32]bool{254: true, 255: true}

// CDINames maps each device number ("MAJ:MIN") of a GPU device file to the
// fully qualified CDI name ("nvidia.com/gpu=NAME") of a device in the
// specs that brings exactly that GPU: nvidia-ctk names one GPU by its
// index and by its UUID, and the index follows nvidia-smi's order, not
// the device minors, so no name is trusted to mean a GPU; what the spec
// will put in the container is. A device that brings more than one GPU
// ("all") is never chosen. Of several names for one GPU the UUID (GPU-...)
// is taken, else the first in order. Spec files are the engine's own
// input (root's to write); unreadable ones are an error, not skipped, so a
// broken spec is seen before the engine meets it.
func CDINames(dirs []string) (map[string]string, error) {
	found := map[string][]string{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("CDI spec directory %s: %w", dir, err)
		}
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("CDI spec %s: %w", path, err)
			}
			var spec cdiSpec
			if err := yaml.Unmarshal(data, &spec); err != nil {
				return nil, fmt.Errorf("CDI spec %s is neither JSON nor YAML: %w", path, err)
			}
			if spec.Kind != CDIKind {
				continue
			}
			for _, d := range spec.Devices {
				if !cdiName.MatchString(d.Name) {
					continue
				}
				gpu := ""
				for _, n := range d.Edits.DeviceNodes {
					host := n.HostPath
					if host == "" {
						host = n.Path
					}
					var st unix.Stat_t
					if unix.Stat(host, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
						continue
					}
					maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
					if maj == nvidiaMajor && nvidiaControlMinors[min] || maj != nvidiaMajor {
						continue
					}
					dev := fmt.Sprintf("%d:%d", maj, min)
					if gpu != "" && gpu != dev {
						gpu = "many"
						break
					}
					gpu = dev
				}
				if gpu != "" && gpu != "many" {
					found[gpu] = append(found[gpu], CDIKind+"="+d.Name)
				}
			}
		}
	}
	out := map[string]string{}
	for dev, names := range found {
		sort.Slice(names, func(i, j int) bool {
			ui, uj := strings.HasPrefix(names[i], CDIKind+"=GPU-"), strings.HasPrefix(names[j], CDIKind+"=GPU-")
			if ui != uj {
				return ui
			}
			return names[i] < names[j]
		})
		out[dev] = names[0]
	}
	return out, nil
}

// nvidiaMajor is the NVIDIA driver's character device major. A variable:
// unit tests stand in another major's devices (/dev/null's 1) for GPUs.
var nvidiaMajor uint32 = 195

// nameCDI sets each GPU's CDI name from the specs in dirs, or fails
// naming what the admin does.
func nameCDI(gpus []GPU, dirs []string) error {
	names, err := CDINames(dirs)
	if err != nil {
		return hint.Errorf("the admin fixes or regenerates the spec (nvidia-ctk cdi generate)", "gpus_mode \"cdi\": %w", err)
	}
	for i, g := range gpus {
		var st unix.Stat_t
		if err := unix.Stat(g.Device, &st); err != nil {
			return fmt.Errorf("GPU device %s: %w", g.Device, err)
		}
		dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		name, ok := names[dev]
		if !ok {
			return hint.Errorf("the admin regenerates the spec (nvidia-ctk cdi generate)", "gpus_mode \"cdi\": no %s device in the CDI specs (%s) brings %s (%s, the job's) alone", CDIKind, strings.Join(dirs, ", "), g.Device, dev)
		}
		gpus[i].CDI = name
	}
	return nil
}
