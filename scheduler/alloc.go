package scheduler

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Allocation is what the job may use on this node, each part read from a
// source the caller cannot forge: the kernel (affinity, cgroups) and
// slurmctld (GPU indices).
type Allocation struct {
	CPUs string // cpuset list, e.g. "0-1,4"; "" unknown
	// StepCPUs are all the CPUs of the step on this node (its cpuset
	// cgroup), of which a task's binding (CPUs) is a part: a container the
	// step's tasks share gets these. "" unknown.
	StepCPUs    string
	MemoryBytes int64 // 0 unknown or unlimited
	GPUs        []GPU
}

// GPU is one allocated GPU: Slurm's index on the node and its device file.
type GPU struct {
	Index  int
	Device string // /dev/nvidiaN
	Minor  int    // N, the NVIDIA device minor
	// UUID is the driver's name for this very device, set by Detect when
	// the site names GPUs by UUID; "" otherwise.
	UUID string
	// CDI is the qualified CDI name ("nvidia.com/gpu=NAME") of the spec's
	// device that brings this very device file, set by Detect under
	// gpus_mode "cdi"; "" otherwise.
	CDI string
}

// CPUsFromAffinity is this process's affinity: inherited from the task,
// confined by the kernel to the step's cpuset and narrowed by the step's
// own binding (task/affinity, --cpu-bind). A process can narrow it, never
// widen it beyond the cpuset.
func CPUsFromAffinity() (string, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "", err
	}
	var cpus []int
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return FormatCPUList(cpus), nil
}

// FormatCPUList renders [0 1 2 5] as "0-2,5".
func FormatCPUList(cpus []int) string {
	sort.Ints(cpus)
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(cpus[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

var cpuListRE = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

// StepCPUs reads the CPUs of the Slurm step whose cgroup holds the
// process from the step's cpuset (v1: cpuset.cpus of the step's cpuset
// cgroup; v2: cpuset.cpus.effective of the step's directory). Only a
// step-level directory (…/step_S) is read, never a task's; "" when
// unknown.
func StepCPUs(procCgroup []byte, root string) string {
	for _, line := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[1] == "cpuset" || strings.Contains(","+parts[1]+",", ",cpuset,"):
			file = filepath.Join(root, parts[1], stepLevel(parts[2]), "cpuset.cpus")
		case parts[0] == "0" && parts[1] == "":
			file = filepath.Join(root, stepLevel(parts[2]), "cpuset.cpus.effective")
		default:
			continue
		}
		if stepLevel(parts[2]) == "" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if v := strings.TrimSpace(string(data)); cpuListRE.MatchString(v) {
			return v
		}
	}
	return ""
}

// stepLevel trims a cgroup path to its step level (…/step_S), "" when it
// names none.
func stepLevel(p string) string {
	parts := strings.Split(p, "/")
	for i, c := range parts {
		if strings.HasPrefix(c, "step_") {
			return strings.Join(parts[:i+1], "/")
		}
	}
	return ""
}

// unlimitedV1 is what cgroup v1 reports for "no limit" (page-rounded).
const unlimitedV1 = int64(1) << 62

// MemoryLimit is the tightest memory limit on the path from the caller's
// memory cgroup to the root (Slurm sets it on the job and/or step, not
// always on the task). root is the cgroup mount, /sys/fs/cgroup.
func MemoryLimit(procCgroup []byte, root string) int64 {
	var best int64
	consider := func(file string) {
		data, err := os.ReadFile(file)
		if err != nil {
			return
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			return
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 || v >= unlimitedV1 {
			return
		}
		if best == 0 || v < best {
			best = v
		}
	}
	for _, line := range strings.Split(string(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var base, file string
		switch {
		case parts[1] == "memory" || strings.Contains(","+parts[1]+",", ",memory,"):
			base, file = filepath.Join(root, "memory"), "memory.limit_in_bytes"
		case parts[0] == "0" && parts[1] == "":
			base, file = root, "memory.max"
		default:
			continue
		}
		for p := filepath.Clean(parts[2]); ; p = filepath.Dir(p) {
			consider(filepath.Join(base, p, file))
			if p == "/" || p == "." {
				break
			}
		}
	}
	return best
}

var gresFileRE = regexp.MustCompile(`(?i)\bFile=(\S+)`)

// GPUDevices maps Slurm's GPU indices on this node to device files, in
// gres.conf order (Slurm numbers a node's GPUs in the order gres.conf
// lists their files). Without usable gres.conf lines (AutoDetect=nvml),
// index N is /dev/nvidiaN, which holds when devices are numbered in PCI
// order.
func GPUDevices(indices []int, gresConf []byte, node string) ([]GPU, error) {
	var files []string
	sc := bufio.NewScanner(bytes.NewReader(gresConf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if !regexp.MustCompile(`(?i)\bName=gpu\b`).MatchString(line) {
			continue
		}
		if m := regexp.MustCompile(`(?i)\bNodeName=(\S+)`).FindStringSubmatch(line); m != nil {
			nodes, err := ExpandHostlist(m[1])
			if err != nil {
				return nil, err
			}
			if !slices.Contains(nodes, node) {
				continue
			}
		}
		m := gresFileRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		expanded, err := ExpandHostlist(m[1])
		if err != nil {
			return nil, fmt.Errorf("gres.conf File=%s: %w", m[1], err)
		}
		files = append(files, expanded...)
	}
	out := make([]GPU, 0, len(indices))
	for _, idx := range indices {
		dev := fmt.Sprintf("/dev/nvidia%d", idx)
		if len(files) > 0 {
			if idx < 0 || idx >= len(files) {
				return nil, fmt.Errorf("GPU index %d is not in gres.conf's %d devices for %s", idx, len(files), node)
			}
			dev = files[idx]
		}
		minor, err := strconv.Atoi(strings.TrimPrefix(dev, "/dev/nvidia"))
		if err != nil || !strings.HasPrefix(dev, "/dev/nvidia") {
			return nil, fmt.Errorf("GPU device %q is not /dev/nvidiaN", dev)
		}
		out = append(out, GPU{Index: idx, Device: dev, Minor: minor})
	}
	return out, nil
}

// StepGPUs keeps the job's GPUs that this step may open. scontrol reports
// the job's GPUs on the node, but a step can hold fewer (srun --gres=gpu:1
// in a job of 4, or --gres=none); only the kernel's device controller
// knows the step's: Slurm's devices.list on cgroup v1 (where 24.11 leaves
// "a *:* rwm" and denies the others, so the list cannot be read for it) or
// its eBPF program on cgroup v2. access(2) asks that controller for the
// very device file without opening it (no driver is woken), from this
// process, which runs in the step's task cgroup. EPERM is a GPU of the
// job that is not the step's: it is left out. Where devices are not
// constrained every GPU of the job passes, as before.
func StepGPUs(gpus []GPU, access func(path string) error) ([]GPU, error) {
	var out []GPU
	for _, g := range gpus {
		switch err := access(g.Device); {
		case err == nil:
			out = append(out, g)
		case errors.Is(err, unix.EPERM):
		default:
			return nil, fmt.Errorf("GPU device %s: %w", g.Device, err)
		}
	}
	return out, nil
}

// DeviceAccess is StepGPUs' access: read and write, as the real uid (root
// under sudo; the plain faccessat, which the kernel answers itself).
func DeviceAccess(path string) error {
	return unix.Faccessat(unix.AT_FDCWD, path, unix.R_OK|unix.W_OK, 0)
}
