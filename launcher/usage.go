package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// Usage is what a container consumed: CPU time and peak memory, read from
// its own cgroup while it runs.
type Usage struct {
	CPU        time.Duration
	PeakMemory int64
	Sampled    bool
}

// usageInterval is how often the container's cgroup is read. The cgroup is
// gone once the container exits, so the last interval's CPU time can be
// missed; peak memory is a high-water mark and is not.
const usageInterval = 500 * time.Millisecond

// usageSampler reads the cgroup of a running container's init process.
type usageSampler struct {
	mu    sync.Mutex
	last  Usage
	stop  chan struct{}
	done  chan struct{}
	files cgroupFiles
	oom   oomWatch // the OOM kills above the container (cgroup v2)
}

type cgroupFiles struct {
	cpu, cpuV2, mem, memV2 string
}

// startUsage finds the container's cgroup through its init pid and samples
// it until stopped. Failure to find it only means no usage is reported.
func startUsage(ctx context.Context, eng Engine, id string) *usageSampler {
	ictx, cancel := context.WithTimeout(ctx, apiTimeout)
	c, err := eng.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	cancel()
	if err != nil || c.Container.State == nil || c.Container.State.Pid <= 0 {
		return idleUsage()
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.Container.State.Pid))
	if err != nil {
		return idleUsage()
	}
	s := &usageSampler{stop: make(chan struct{}), done: make(chan struct{})}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls := "," + parts[1] + ","
		switch {
		case strings.Contains(ctrls, ",cpuacct,"):
			s.files.cpu = filepath.Join("/sys/fs/cgroup/cpuacct", parts[2], "cpuacct.usage")
		case strings.Contains(ctrls, ",memory,"):
			s.files.mem = filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.max_usage_in_bytes")
		case parts[0] == "0" && parts[1] == "":
			s.files.cpuV2 = filepath.Join("/sys/fs/cgroup", parts[2], "cpu.stat")
			s.files.memV2 = filepath.Join("/sys/fs/cgroup", parts[2], "memory.peak")
			s.oom = watchOOM(filepath.Join("/sys/fs/cgroup", filepath.Dir(parts[2]), "memory.events"))
		}
	}
	go s.loop()
	return s
}

// idleUsage samples nothing and reports no usage.
func idleUsage() *usageSampler {
	s := &usageSampler{stop: make(chan struct{}), done: make(chan struct{})}
	close(s.done)
	return s
}

func (s *usageSampler) loop() {
	defer close(s.done)
	t := time.NewTicker(usageInterval)
	defer t.Stop()
	s.sample()
	for {
		select {
		case <-s.stop:
			s.sample()
			return
		case <-t.C:
			s.sample()
		}
	}
}

func readInt(path string) (int64, bool) {
	if path == "" {
		return 0, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// readKey is the value of key in a cgroup's flat-keyed file (cpu.stat,
// memory.events: "KEY VALUE" lines).
func readKey(path, key string) (int64, bool) {
	if path == "" {
		return 0, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func (s *usageSampler) sample() {
	var u Usage
	if ns, ok := readInt(s.files.cpu); ok {
		u.CPU, u.Sampled = time.Duration(ns), true
	} else if cpu, ok := cpuStatUsec(s.files.cpuV2); ok {
		u.CPU, u.Sampled = cpu, true
	}
	if m, ok := readInt(s.files.mem); ok {
		u.PeakMemory = m
	} else if m, ok := readInt(s.files.memV2); ok {
		u.PeakMemory = m
	}
	if !u.Sampled {
		return
	}
	s.mu.Lock()
	if u.CPU >= s.last.CPU {
		s.last.CPU = u.CPU
	}
	if u.PeakMemory > s.last.PeakMemory {
		s.last.PeakMemory = u.PeakMemory
	}
	s.last.Sampled = true
	s.mu.Unlock()
}

// finish stops sampling (one last read, if the cgroup still exists) and
// returns what was seen.
func (s *usageSampler) finish() Usage {
	select {
	case <-s.done:
	default:
		close(s.stop)
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// oomWatch counts the OOM kills in a cgroup v2 memory.events file, whose
// counts are hierarchical: that of the cgroup above a container (the
// launch's accounting cgroup, else the user's slice or the step's cgroup)
// still holds a kill in the container after its own cgroup is gone. It
// is how an OOM kill is known when the engine has not told it (yet):
// the engine learns of one from an event of its own, which can come after
// the exit it reports. In a cgroup shared with other containers (a slice)
// a kill in another container in the same moment would count too.
type oomWatch struct {
	file   string // "" where there is none (cgroup v1: the engine's event is prompt)
	before int64
}

// watchOOM starts counting from the kills file already has.
func watchOOM(file string) oomWatch {
	n, ok := oomKills(file)
	if !ok {
		return oomWatch{}
	}
	return oomWatch{file: file, before: n}
}

// fired reports whether an OOM kill was counted since the watch began.
func (w oomWatch) fired() bool {
	if w.file == "" {
		return false
	}
	n, ok := oomKills(w.file)
	return ok && n > w.before
}

// oomKills is the oom_kill count of a memory.events file.
func oomKills(file string) (int64, bool) { return readKey(file, "oom_kill") }

// oomWatch is how an OOM kill of the launch's container is counted: in
// the launch's own accounting cgroup (fresh, so from zero), else above
// the container as the sampler found it.
func (a *acctParent) oomWatch(u *usageSampler) oomWatch {
	if a != nil && !a.sliceOnly {
		file := filepath.Join(cgroupRoot, a.path, "memory.events")
		if _, ok := oomKills(file); !ok {
			return oomWatch{}
		}
		return oomWatch{file: file} // made for this launch: every kill in it is its container's
	}
	if u != nil {
		return u.oom
	}
	return oomWatch{}
}
