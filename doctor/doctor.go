// Package doctor checks a node's installation for containerjob doctor:
// the engine, the policy, sudoers, the binary, the Slurm wiring, cgroups,
// GPUs and fabric devices, each a Check with what to do when it fails.
// It prints nothing; the CLI does.
package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/advisory"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// Check is one line of `containerjob doctor`: what was checked, whether it
// passed, and what to do when not.
type Check struct {
	Name string
	OK   bool
	Skip bool
	// Warn: passed, with something the admin should act on (a known
	// vulnerable version a distribution may have patched): printed WARN
	// with its fix, not counted as a failure.
	Warn bool
	Info string
	Fix  string
}

// Node is what the checks look at besides the node's own files.
type Node struct {
	// PolicyPath is the policy file's path, Policy the policy read from it
	// (nil with PolicyErr when it could not be used).
	PolicyPath string
	Policy     *policy.Policy
	PolicyErr  error
	// Binary is containerjob's installed path: the one the sudoers rule
	// must name.
	Binary string
	// Engine is the node's engine as the policy names it (the built-in
	// address without a usable policy), EngineErr why there is none.
	Engine    launcher.Engine
	EngineErr error
}

// Run checks this node's installation, in the order doctor prints them.
func Run(n Node) []Check {
	var out []Check
	pol := n.Policy
	if n.PolicyErr != nil || pol == nil {
		info := "no policy"
		if n.PolicyErr != nil {
			info = n.PolicyErr.Error()
		}
		out = append(out, Check{Name: "policy", Info: info, Fix: "containerjob policy check " + n.PolicyPath})
		pol = nil
	} else {
		findings := pol.Check(policy.Lookup{})
		c := Check{Name: "policy", OK: true, Info: n.PolicyPath + " valid, root-owned"}
		if len(findings) > 0 {
			c.OK, c.Info, c.Fix = false, fmt.Sprintf("%d problem(s), first: %s", len(findings), findings[0]), "containerjob policy check "+n.PolicyPath
		}
		out = append(out, c)
	}
	host := "unix:///var/run/docker.sock"
	if pol != nil {
		host = pol.Settings.DockerHost
	}
	out = append(out, engineChecks(n.Engine, n.EngineErr, host, pol)...)
	out = append(out, FileOwnedBy("binary "+n.Binary, n.Binary, 0o022, "chown root:root "+n.Binary+" && chmod 0755 "+n.Binary))
	out = append(out, sudoersCheck(n.Binary))
	out = append(out, initCheck(launcher.InitPath))
	out = append(out, slurmChecks(pol)...)
	out = append(out, cgroupCheck())
	if pol != nil {
		out = append(out, fabricCheck(pol.Settings.FabricDevices, "/dev/infiniband"))
	}
	return out
}

// fabricCheck reports the node's RDMA devices and which of them the policy
// gives to job steps (fabric_devices).
func fabricCheck(listed []string, dir string) Check {
	var found []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Type()&os.ModeCharDevice != 0 {
			found = append(found, filepath.Join(dir, e.Name()))
		}
	}
	var passed, missing []string
	for _, d := range listed {
		if slices.Contains(found, d) {
			passed = append(passed, d)
		} else {
			missing = append(missing, d)
		}
	}
	switch {
	case len(found) == 0 && len(listed) == 0:
		return Check{Name: "fabric devices", Skip: true, Info: "no " + dir + " devices on this node and none in fabric_devices"}
	case len(missing) > 0 && len(found) > 0:
		return Check{Name: "fabric devices", Info: fmt.Sprintf("fabric_devices lists %v, which this node lacks (it has %v)", missing, found), Fix: "list only devices the nodes have"}
	case len(found) > 0 && len(passed) == 0:
		return Check{Name: "fabric devices", Skip: true, Info: fmt.Sprintf("the node has %v; fabric_devices passes none to job steps (add them for MPI over RDMA, with ulimits memlock=-1)", found)}
	case len(found) == 0:
		return Check{Name: "fabric devices", Skip: true, Info: fmt.Sprintf("fabric_devices lists %v; this node has none (fine on nodes without RDMA)", listed)}
	}
	return Check{Name: "fabric devices", OK: true, Info: fmt.Sprintf("job steps get %v of the node's %v", passed, found)}
}

// initCheck: containerjob-init, which hands a container the job's own
// output files and pipes (launcher/handoff.go). Without it launches work,
// their output through the engine.
func initCheck(path string) Check {
	const name = "output handoff"
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return Check{Name: name, Skip: true, Info: path + " is not installed: containers' output goes through the engine (about 3x slower for a batch job writing much output)"}
	}
	c := FileOwnedBy(name, path, 0o022, "chown root:root "+path+" && chmod 0755 "+path)
	if c.OK {
		c.Info = path + " " + c.Info + ": containers write to the job's output files and pipes themselves"
	}
	return c
}

// FileOwnedBy: path is root's and has none of the forbidden mode bits.
func FileOwnedBy(name, path string, forbidden os.FileMode, fix string) Check {
	fi, err := os.Stat(path)
	if err != nil {
		return Check{Name: name, Info: err.Error(), Fix: fix}
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || fi.Mode().Perm()&forbidden != 0 {
		return Check{Name: name, Info: fmt.Sprintf("owner uid %d, mode %v", st.Uid, fi.Mode().Perm()), Fix: fix}
	}
	return Check{Name: name, OK: true, Info: fmt.Sprintf("root-owned, mode %v", fi.Mode().Perm())}
}

func sudoersCheck(selfPath string) Check {
	const path = "/etc/sudoers.d/containerjob"
	c := FileOwnedBy("sudoers drop-in", path, 0o337, "make install (installs "+path+" as 0440 root)")
	if !c.OK {
		return c
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Check{Name: "sudoers drop-in", Info: err.Error()}
	}
	text := string(data)
	switch {
	case !strings.Contains(text, "NOPASSWD: "+selfPath):
		return Check{Name: "sudoers drop-in", Info: "no NOPASSWD rule for " + selfPath, Fix: "reinstall contrib/sudoers.d/containerjob with BINDIR matching this binary"}
	case !strings.Contains(text, "env_reset") || !strings.Contains(text, "closefrom_override"):
		return Check{Name: "sudoers drop-in", Info: "env_reset or closefrom_override missing", Fix: "reinstall contrib/sudoers.d/containerjob"}
	}
	if out, err := exec.Command("visudo", "-cf", path).CombinedOutput(); err != nil {
		return Check{Name: "sudoers drop-in", Info: strings.TrimSpace(string(out)), Fix: "fix the syntax; sudo ignores a broken drop-in"}
	}
	return Check{Name: "sudoers drop-in", OK: true, Info: path + ": rule for " + selfPath + ", environment reset"}
}

func engineChecks(cli launcher.Engine, connErr error, host string, pol *policy.Policy) []Check {
	if connErr != nil || cli == nil {
		info := "no engine connection"
		if connErr != nil {
			info = connErr.Error()
		}
		return []Check{{Name: "engine", Info: info}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return []Check{{Name: "engine", Info: err.Error(), Fix: "start dockerd; check docker_host in the policy"}}
	}
	out := []Check{{Name: "engine", OK: true, Info: fmt.Sprintf("%s, API %s at %s", v.Version, v.APIVersion, host)}}
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return append(out, Check{Name: "engine info", Info: err.Error()})
	}
	out = append(out, Check{Name: "engine cgroups", OK: true, Info: fmt.Sprintf("driver %s, cgroup v%s", info.Info.CgroupDriver, info.Info.CgroupVersion)})
	if pol != nil && pol.Settings.Confine == "cgroup-parent" && info.Info.CgroupDriver != "cgroupfs" {
		out = append(out, Check{Name: "confine cgroup-parent", Info: "needs the cgroupfs driver, engine uses " + info.Info.CgroupDriver, Fix: "use confine = \"limits\", or run dockerd with --exec-opt native.cgroupdriver=cgroupfs"})
	}
	switch info.Info.CgroupDriver {
	case "cgroupfs":
		out = append(out, Check{Name: "per-user cgroup", OK: true, Info: "containers go under /containerjob/uid_UID: exact usage, pids_limit_per_user enforced"})
	case "systemd":
		out = append(out, Check{Name: "per-user cgroup", OK: true, Info: "containers go in the slice containerjob-uid_UID.slice, whose TasksMax is pids_limit_per_user (systemctl set-property --runtime); usage is sampled (0.5 s): systemd removes a slice with its last unit, so no launch's totals outlive its container"})
	default:
		out = append(out, Check{Name: "per-user cgroup", Skip: true, Info: "the " + info.Info.CgroupDriver + " cgroup driver: usage is sampled (0.5 s) and pids_limit_per_user is not enforced; pids_limit per container holds"})
	}
	out = append(out, runcCheck(info.Info.RuncCommit.ID, pol))
	out = append(out, advisoryCheck("runc advisories", "runc", info.Info.RuncCommit.ID))
	if v, ok := toolkitVersion(); ok {
		out = append(out, advisoryCheck("nvidia toolkit advisories", "nvidia-container-toolkit", v))
	}
	if pol == nil {
		return out
	}
	switch pol.Settings.GPUsMode {
	case "nvidia":
		_, hasRuntime := info.Info.Runtimes["nvidia"]
		cfg, _ := os.ReadFile("/etc/nvidia-container-runtime/config.toml")
		locked := regexp.MustCompile(`(?m)^\s*accept-nvidia-visible-devices-envvar-when-unprivileged\s*=\s*false`).Match(cfg)
		switch {
		case !hasRuntime && len(cfg) == 0:
			out = append(out, Check{Name: "gpus_mode nvidia", Skip: true, Info: "no nvidia runtime or toolkit on this node (fine on nodes without GPUs)"})
		case !locked:
			out = append(out, Check{Name: "gpus_mode nvidia", Info: "accept-nvidia-visible-devices-envvar-when-unprivileged is not false: an image's NVIDIA_VISIBLE_DEVICES=all could widen a request", Fix: "set it to false in /etc/nvidia-container-runtime/config.toml"})
		default:
			out = append(out, Check{Name: "gpus_mode nvidia", OK: true, Info: "toolkit ignores NVIDIA_VISIBLE_DEVICES from unprivileged containers"})
		}
	case "cdi":
		names, err := scheduler.CDINames(scheduler.DefaultCDISpecDirs)
		out = append(out, cdiCheck(info.Info.CDISpecDirs, names, err, nodeGPUs()))
	default:
		out = append(out, Check{Name: "gpus_mode " + pol.Settings.GPUsMode, OK: true, Info: "no engine prerequisites"})
	}
	return out
}

// cdiCheck: the engine reads CDI specs from where containerjob looks for
// them, and they give every GPU of this node (device file -> "MAJ:MIN")
// a device of its own; containerjob names each job's GPUs from them.
func cdiCheck(engineDirs []string, names map[string]string, namesErr error, gpus map[string]string) Check {
	const name = "gpus_mode cdi"
	switch {
	case len(engineDirs) == 0:
		return Check{Name: name, Info: "the engine has CDI disabled or too old (needs API 1.44+)", Fix: "set \"features\": {\"cdi\": true} in daemon.json, or use gpus_mode nvidia/devices"}
	case namesErr != nil:
		return Check{Name: name, Info: namesErr.Error(), Fix: "regenerate the spec: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"}
	}
	for _, d := range engineDirs {
		if !slices.Contains(scheduler.DefaultCDISpecDirs, d) {
			return Check{Name: name, Info: "the engine reads CDI specs from " + d + ", containerjob from " + strings.Join(scheduler.DefaultCDISpecDirs, " and "), Fix: "keep the engine's cdi-spec-dirs at their defaults"}
		}
	}
	var missing []string
	for path, dev := range gpus {
		if _, ok := names[dev]; !ok {
			missing = append(missing, path)
		}
	}
	sort.Strings(missing)
	switch {
	case len(gpus) == 0:
		return Check{Name: name, Skip: true, Info: "no /dev/nvidiaN on this node (fine on nodes without GPUs)"}
	case len(missing) > 0:
		return Check{Name: name, Info: "no CDI device of its own for " + strings.Join(missing, ", ") + ": jobs holding them fail", Fix: "regenerate the spec: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"}
	}
	return Check{Name: name, OK: true, Info: fmt.Sprintf("the CDI specs name each of the node's %d GPUs", len(gpus))}
}

var gpuDevice = regexp.MustCompile(`^/dev/nvidia[0-9]+$`)

// nodeGPUs is this node's GPU device files and their numbers.
func nodeGPUs() map[string]string {
	out := map[string]string{}
	paths, _ := filepath.Glob("/dev/nvidia[0-9]*")
	for _, p := range paths {
		var st unix.Stat_t
		if gpuDevice.MatchString(p) && unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
			out[p] = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
	return out
}

// slurmConfValue reads KEY=VALUE from slurm.conf (last one wins).
func slurmConfValue(conf []byte, key string) string {
	v := ""
	sc := bufio.NewScanner(strings.NewReader(string(conf)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, val, ok := strings.Cut(line, "="); ok && strings.EqualFold(strings.TrimSpace(k), key) {
			v = strings.TrimSpace(val)
		}
	}
	return v
}

func slurmChecks(pol *policy.Policy) []Check {
	confPath := "/etc/slurm/slurm.conf"
	if pol != nil && pol.Settings.SlurmConf != "" {
		confPath = pol.Settings.SlurmConf
	}
	conf, err := os.ReadFile(confPath)
	if err != nil {
		// Slurm may run with its configuration elsewhere: then every job
		// would fail to be verified, so say where it is.
		if real := runningSlurmConf(); real != "" && real != confPath {
			return []Check{{Name: "slurm_conf", Info: fmt.Sprintf("Slurm runs with %s, the policy reads %s", real, confPath),
				Fix: fmt.Sprintf("set slurm_conf = %q in [settings]", real)}}
		}
		return []Check{{Name: "slurm", Skip: true, Info: "no " + confPath + " (not a Slurm node, or set slurm_conf)"}}
	}
	var out []Check
	plug := slurmConfValue(conf, "PlugStackConfig")
	if plug == "" {
		plug = filepath.Join(filepath.Dir(confPath), "plugstack.conf")
	}
	data, _ := os.ReadFile(plug)
	if strings.Contains(string(data), "spank_containerjob.so") {
		out = append(out, Check{Name: "SPANK plugin", OK: true, Info: "listed in " + plug})
	} else {
		out = append(out, Check{Name: "SPANK plugin", Info: "not in " + plug, Fix: "add the line from share/containerjob/slurm/plugstack.conf"})
	}
	for _, k := range []string{"Prolog", "Epilog"} {
		v := slurmConfValue(conf, k)
		if strings.Contains(v, "containerjob") {
			out = append(out, Check{Name: k, OK: true, Info: v})
		} else {
			out = append(out, Check{Name: k, Info: fmt.Sprintf("%s=%q in %s", k, v, confPath), Fix: "set " + k + "= from share/containerjob/slurm/slurm.conf.snippet"})
		}
	}
	if pol != nil {
		out = append(out, killWaitCheck(slurmConfValue(conf, "KillWait"), pol.Settings.StopGraceSeconds))
	}
	if v := slurmConfValue(conf, "ProctrackType"); v != "proctrack/cgroup" {
		out = append(out, Check{Name: "ProctrackType", Info: v, Fix: "use proctrack/cgroup: containerjob takes the job from the caller's cgroup"})
	} else {
		out = append(out, Check{Name: "ProctrackType", OK: true, Info: v})
	}
	return out
}

func cgroupCheck() Check {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return Check{Name: "cgroups", OK: true, Info: "v2 (unified)"}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		return Check{Name: "cgroups", OK: true, Info: "v1"}
	}
	return Check{Name: "cgroups", Info: "no cgroup hierarchy found", Fix: "mount cgroups; containers cannot be confined"}
}

// runcCheck reports the engine's runc and whether the policy's
// nested_mounts may rely on it: runc before 1.1.14 can be raced into
// creating a nested mount's mountpoint on the host (CVE-2024-45310), so
// nested_mounts = "allow" fails the check there; "refuse" (the default)
// is safe with any runc.
func runcCheck(commit string, pol *policy.Policy) Check {
	fixed, known := runcFixed(commit)
	allow := pol != nil && pol.Settings.NestedMounts == "allow"
	info := fmt.Sprintf("runc %s", commit)
	switch {
	case allow && !fixed:
		why := "older than 1.1.14"
		if !known {
			why = "of unknown version"
		}
		return Check{Name: "runc", Info: info + ", " + why + ", but nested_mounts = \"allow\"",
			Fix: "upgrade runc to 1.1.14 or later, or set nested_mounts = \"refuse\" (CVE-2024-45310)"}
	case fixed:
		return Check{Name: "runc", OK: true, Info: info + " (has the CVE-2024-45310 fix)"}
	}
	return Check{Name: "runc", OK: true, Info: info + " lacks the CVE-2024-45310 fix (< 1.1.14): nested mount targets stay refused (nested_mounts = \"refuse\")"}
}

var runcVersionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// runcFixed reads the version at the start of the engine's RuncCommit id
// ("1.1.5+ds1-1+deb12u1", "v1.1.14-0-g2c9f560", "1.2.5"); a distribution
// patch level (+debNuN) is not trusted to carry the fix.
func runcFixed(commit string) (fixed, known bool) {
	m := runcVersionRE.FindStringSubmatch(commit)
	if m == nil {
		return false, false
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v[0] > 1 || (v[0] == 1 && (v[1] > 1 || (v[1] == 1 && v[2] >= 14))), true
}

// advisoryCheck reports the published vulnerabilities of a component's
// installed version and the fixed version to install. A WARN, not a
// failure: a distribution's build (1.1.5+ds1-1+deb12u1) may carry the fix
// under its old number, which only its own advisory tells.
func advisoryCheck(name, component, version string) Check {
	findings, install, known := advisory.Check(component, version)
	switch {
	case !known:
		return Check{Name: name, Skip: true, Info: fmt.Sprintf("version %q not read", version)}
	case len(findings) == 0:
		return Check{Name: name, OK: true, Info: fmt.Sprintf("%s %s: no known advisory applies", component, version)}
	}
	var what []string
	for _, f := range findings {
		what = append(what, f.String())
	}
	return Check{Name: name, OK: true, Warn: true,
		Info: fmt.Sprintf("%s %s is affected by %s", component, version, strings.Join(what, "; ")),
		Fix:  fmt.Sprintf("install %s %s or later (or your distribution's build that carries these fixes: check its security tracker)", component, install)}
}

// toolkitVersion is the NVIDIA Container Toolkit's version, where it is
// installed (nvidia-ctk, else nvidia-container-cli), asked within 5 s.
func toolkitVersion() (string, bool) {
	for _, tool := range [][]string{{"nvidia-ctk", "--version"}, {"nvidia-container-cli", "--version"}} {
		path, err := exec.LookPath(tool[0])
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, path, tool[1:]...).Output()
		cancel()
		if err == nil {
			return string(out), true
		}
	}
	return "", false
}

// killWaitCheck: Slurm sends SIGKILL KillWait seconds after SIGTERM; the
// container must have been stopped (and removed) by containerjob before
// that, so stop_grace_seconds must be shorter, with a few seconds to spare
// for the removal.
func killWaitCheck(killWait string, grace int) Check {
	kw := 30 // Slurm's default
	if killWait != "" {
		n, err := strconv.Atoi(killWait)
		if err != nil {
			return Check{Name: "KillWait", Info: fmt.Sprintf("KillWait=%q is not a number of seconds", killWait), Fix: "set KillWait in slurm.conf"}
		}
		kw = n
	}
	if kw < grace+5 {
		return Check{Name: "KillWait", Info: fmt.Sprintf("KillWait=%d but stop_grace_seconds=%d: Slurm kills containerjob before the container is stopped and removed", kw, grace),
			Fix: fmt.Sprintf("set KillWait to at least %d in slurm.conf, or lower stop_grace_seconds", grace+5)}
	}
	return Check{Name: "KillWait", OK: true, Info: fmt.Sprintf("%d s, above stop_grace_seconds %d s with time to remove", kw, grace)}
}

// runningSlurmConf is the configuration file the Slurm tools on this node
// use (scontrol show config), or "".
func runningSlurmConf() string {
	out, err := exec.Command("/usr/bin/scontrol", "show", "config").Output()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "SLURM_CONF" && f[1] == "=" {
			return f[2]
		}
	}
	return ""
}
