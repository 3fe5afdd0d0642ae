package scheduler

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// NvidiaUUIDs maps each NVIDIA device minor (N of /dev/nvidiaN) to its GPU
// UUID, from the driver's own records, /proc/driver/nvidia/gpus/BUS/
// information: one file per GPU holding both its "Device Minor:" and its
// "GPU UUID:", the source nvidia-container-toolkit reads as well. Both
// come from the same record, so the UUID is provably that device's; no
// tool's numbering (nvidia-smi's index, which need not follow the minors,
// and whose minor_number field current drivers dropped) is involved.
// procRoot is "/proc" (tests pass a directory of recorded files).
func NvidiaUUIDs(procRoot string) (map[int]string, error) {
	dir := filepath.Join(procRoot, "driver", "nvidia", "gpus")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("the NVIDIA driver's GPU records cannot be read (%w)", err)
	}
	out := map[int]string{}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name(), "information")
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		minor, uuid := -1, ""
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch strings.TrimSpace(k) {
			case "Device Minor":
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					minor = n
				}
			case "GPU UUID":
				if strings.HasPrefix(v, "GPU-") && !strings.ContainsAny(v, " ,") {
					uuid = v
				}
			}
		}
		if minor < 0 || uuid == "" {
			return nil, fmt.Errorf("%s has no Device Minor and GPU UUID lines", path)
		}
		if prev, dup := out[minor]; dup && prev != uuid {
			return nil, fmt.Errorf("two GPUs claim device minor %d", minor)
		}
		out[minor] = uuid
	}
	return out, nil
}
