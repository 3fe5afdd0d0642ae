// Package guard checks the final create request against what containerjob
// never allows, whatever the policy file says. It does not read the policy:
// a violation here means a bug upstream, and the launch is refused.
package guard

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Expect is what the guard knows independently of the policy: who the
// container must run as, and the few things an admin may have opted into.
type Expect struct {
	UID, GID         uint32
	Groups           []uint32
	AllowedCaps      []string
	AllowHostNetwork bool
	Runtime          string   // "" for the engine's default
	AllowedDevices   []string // host device paths of the job's allocation
	AllowedGPUIDs    []string // device request ids of the job's allocation
	CgroupParent     string   // the step's cgroup, when confine is cgroup-parent
	// AllowedPorts are the host bindings the decision approved, each
	// "IP:PORT/PROTO" (IPv6 in brackets).
	AllowedPorts []string
	// CallerCanAccess re-checks, just before create, that the caller can
	// still reach a mount source as themselves.
	CallerCanAccess func(path string) error
	// Staged maps the private staging paths of this launch to the user
	// paths they bind; every other source must be a plain host path.
	Staged    map[string]string
	StageRoot string
	// Generated maps the files this launch wrote under StageRoot (the
	// container's /etc/passwd and /etc/group) to the one target each may
	// be bound at, read-only.
	Generated map[string]string
	// AllowNestedMounts lets a bind target lie inside another bind
	// mount's target (policy nested_mounts = "allow", runc >= 1.1.14).
	AllowNestedMounts bool
	// AccountingParent is the launch's own accounting cgroup, the one
	// cgroup parent allowed besides the step's (launcher/acct.go).
	AccountingParent string
	// Own maps containerjob's own files outside the stage (its init,
	// launcher/handoff.go) to the one target each may be bound at,
	// read-only.
	Own map[string]string
}

type check struct {
	name string
	fn   func(client.ContainerCreateOptions, Expect) error
}

var checks = []check{
	{"privileged", checkPrivileged},
	{"user", checkUser},
	{"no-new-privileges", checkNoNewPrivileges},
	{"capabilities", checkCaps},
	{"namespaces", checkNamespaces},
	{"mounts", checkMounts},
	{"mount-targets", checkMountTargets},
	{"devices", checkDevices},
	{"security-opt", checkSecurityOpt},
	{"engine-knobs", checkEngineKnobs},
	{"ports", checkPorts},
}

// Violation is a create request that breaks an invariant.
type Violation struct {
	Check  string
	Detail string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("guard %q refused the container: %s (this is a containerjob bug; report it)", v.Check, v.Detail)
}

// Check runs every invariant; the first violation wins.
func Check(req client.ContainerCreateOptions, want Expect) error {
	if req.Config == nil || req.HostConfig == nil {
		return &Violation{Check: "request", Detail: "config or host config missing"}
	}
	for _, c := range checks {
		if err := c.fn(req, want); err != nil {
			return &Violation{Check: c.name, Detail: err.Error()}
		}
	}
	return nil
}

func checkPrivileged(r client.ContainerCreateOptions, _ Expect) error {
	if r.HostConfig.Privileged {
		return fmt.Errorf("privileged mode")
	}
	return nil
}

func checkUser(r client.ContainerCreateOptions, want Expect) error {
	wantUser := strconv.FormatUint(uint64(want.UID), 10) + ":" + strconv.FormatUint(uint64(want.GID), 10)
	if r.Config.User != wantUser {
		return fmt.Errorf("user %q, want %q", r.Config.User, wantUser)
	}
	if want.UID == 0 || want.GID == 0 {
		return fmt.Errorf("containers never run as uid or gid 0")
	}
	var wantGroups []string
	for _, g := range want.Groups {
		if g == 0 {
			return fmt.Errorf("supplementary group 0 is never added")
		}
		wantGroups = append(wantGroups, strconv.FormatUint(uint64(g), 10))
	}
	got := slices.Clone(r.HostConfig.GroupAdd)
	slices.Sort(got)
	slices.Sort(wantGroups)
	if !slices.Equal(got, wantGroups) {
		return fmt.Errorf("supplementary groups %v, want the caller's %v", got, wantGroups)
	}
	return nil
}

func checkNoNewPrivileges(r client.ContainerCreateOptions, _ Expect) error {
	if !slices.Contains(r.HostConfig.SecurityOpt, "no-new-privileges") && !slices.Contains(r.HostConfig.SecurityOpt, "no-new-privileges:true") {
		return fmt.Errorf("no-new-privileges is not set")
	}
	return nil
}

func checkCaps(r client.ContainerCreateOptions, want Expect) error {
	if !slices.ContainsFunc(r.HostConfig.CapDrop, func(c string) bool { return strings.EqualFold(c, "ALL") }) {
		return fmt.Errorf("capabilities are not all dropped")
	}
	for _, c := range r.HostConfig.CapAdd {
		norm := strings.ToUpper(strings.TrimPrefix(strings.ToUpper(c), "CAP_"))
		if norm == "ALL" || !slices.Contains(want.AllowedCaps, norm) {
			return fmt.Errorf("capability %q is not in the allow list", c)
		}
	}
	return nil
}

func checkNamespaces(r client.ContainerCreateOptions, want Expect) error {
	h := r.HostConfig
	switch {
	case h.PidMode != "" && h.PidMode != "private":
		return fmt.Errorf("pid namespace %q", h.PidMode)
	case h.IpcMode != "" && h.IpcMode != "private" && h.IpcMode != "none":
		return fmt.Errorf("ipc namespace %q", h.IpcMode)
	case h.UTSMode != "":
		return fmt.Errorf("uts namespace %q", h.UTSMode)
	case h.UsernsMode != "":
		return fmt.Errorf("user namespace %q", h.UsernsMode)
	case h.CgroupnsMode != "" && h.CgroupnsMode != "private":
		return fmt.Errorf("cgroup namespace %q", h.CgroupnsMode)
	case h.NetworkMode == "host" && !want.AllowHostNetwork:
		return fmt.Errorf("host network without an explicit allow")
	case strings.HasPrefix(string(h.NetworkMode), "container:"):
		return fmt.Errorf("network namespace of another container")
	case h.NetworkMode == "" || h.NetworkMode == "default" || h.NetworkMode == "bridge":
		return fmt.Errorf("the engine's shared default bridge, where containers reach each other's unpublished ports")
	}
	return nil
}

func checkMounts(r client.ContainerCreateOptions, want Expect) error {
	h := r.HostConfig
	if len(h.Binds) > 0 || len(h.VolumesFrom) > 0 || h.VolumeDriver != "" || len(h.Tmpfs) > 0 {
		return fmt.Errorf("binds, volumes-from, volume drivers and tmpfs strings are never used")
	}
	if len(r.Config.Volumes) > 0 {
		return fmt.Errorf("anonymous volumes are never declared")
	}
	for _, m := range h.Mounts {
		if m.Type != mount.TypeBind {
			return fmt.Errorf("mount of type %q", m.Type)
		}
		src := m.Source
		if !filepath.IsAbs(src) || filepath.Clean(src) != src {
			return fmt.Errorf("mount source %q is not absolute and clean", src)
		}
		if target, ok := want.Own[src]; ok {
			if m.Target != target || !m.ReadOnly {
				return fmt.Errorf("containerjob's file %q bound at %q (read-only %v), want read-only at %q", src, m.Target, m.ReadOnly, target)
			}
			continue
		}
		if want.StageRoot != "" && (src == want.StageRoot || strings.HasPrefix(src, want.StageRoot+"/")) {
			if target, ok := want.Generated[src]; ok {
				if m.Target != target || !m.ReadOnly {
					return fmt.Errorf("generated file %q bound at %q (read-only %v), want read-only at %q", src, m.Target, m.ReadOnly, target)
				}
				continue
			}
			orig, ok := want.Staged[src]
			if !ok {
				return fmt.Errorf("mount source %q is a staging path not made by this launch", src)
			}
			src = orig
		}
		if m.BindOptions != nil && m.BindOptions.Propagation != "" && m.BindOptions.Propagation != mount.PropagationRPrivate && m.BindOptions.Propagation != mount.PropagationPrivate {
			return fmt.Errorf("mount %q with %s propagation", src, m.BindOptions.Propagation)
		}
		if why := forbiddenSource(src); why != "" {
			return fmt.Errorf("mount source %q is %s", src, why)
		}
		if want.CallerCanAccess != nil {
			if err := want.CallerCanAccess(src); err != nil {
				return fmt.Errorf("mount source %q is not accessible to the caller: %v", src, err)
			}
		}
	}
	return nil
}

// checkMountTargets: no bind target inside another bind mount, whatever
// the policy decided, unless the site declared its runc safe for it: runc
// before 1.1.14 creates such a mountpoint through the outer mount's host
// directory, which its owner can swap for a symlink (CVE-2024-45310).
func checkMountTargets(r client.ContainerCreateOptions, want Expect) error {
	if want.AllowNestedMounts {
		return nil
	}
	ms := r.HostConfig.Mounts
	for _, m := range ms {
		t := filepath.Clean(m.Target)
		if t != m.Target || !filepath.IsAbs(t) || t == "/" {
			return fmt.Errorf("mount target %q is not an absolute, clean path other than /", m.Target)
		}
		for _, o := range ms {
			if o.Type == mount.TypeBind && o.Target != t && strings.HasPrefix(t, o.Target+"/") {
				return fmt.Errorf("mount target %q lies inside the bind mount at %q", t, o.Target)
			}
		}
	}
	return nil
}

func checkDevices(r client.ContainerCreateOptions, want Expect) error {
	h := r.HostConfig
	if len(h.DeviceCgroupRules) > 0 {
		return fmt.Errorf("device cgroup rules")
	}
	for _, d := range h.Devices {
		if !slices.Contains(want.AllowedDevices, d.PathOnHost) {
			return fmt.Errorf("device %q is not in the job's allocation", d.PathOnHost)
		}
	}
	for _, dr := range h.DeviceRequests {
		if dr.Count != 0 {
			return fmt.Errorf("device request by count (%d); only explicit ids from the allocation", dr.Count)
		}
		if len(dr.DeviceIDs) == 0 {
			return fmt.Errorf("device request without ids")
		}
		for _, id := range dr.DeviceIDs {
			if !slices.Contains(want.AllowedGPUIDs, id) {
				return fmt.Errorf("GPU %q is not in the job's allocation", id)
			}
		}
	}
	for _, kv := range r.Config.Env {
		v, ok := strings.CutPrefix(kv, "NVIDIA_VISIBLE_DEVICES=")
		if !ok || v == "void" {
			continue
		}
		for _, id := range strings.Split(v, ",") {
			if !slices.Contains(want.AllowedGPUIDs, id) {
				return fmt.Errorf("NVIDIA_VISIBLE_DEVICES=%q is not the job's allocation", v)
			}
		}
	}
	return nil
}

func checkSecurityOpt(r client.ContainerCreateOptions, _ Expect) error {
	for _, o := range r.HostConfig.SecurityOpt {
		switch {
		case o == "no-new-privileges" || o == "no-new-privileges:true":
		default:
			return fmt.Errorf("security option %q", o)
		}
	}
	return nil
}

// ownParent: a cgroup parent of containerjob's own, the caller's
// accounting cgroup (/containerjob/..., cgroupfs driver) or their slice
// (containerjob-uid_U.slice, systemd driver); never one a request names.
func ownParent(p string) bool {
	if strings.HasPrefix(p, "/containerjob/") {
		return true
	}
	uid, ok := strings.CutSuffix(strings.TrimPrefix(p, "containerjob-uid_"), ".slice")
	if !ok || !strings.HasPrefix(p, "containerjob-uid_") || uid == "" {
		return false
	}
	return strings.Trim(uid, "0123456789") == ""
}

func checkEngineKnobs(r client.ContainerCreateOptions, want Expect) error {
	h := r.HostConfig
	switch {
	case len(h.Sysctls) > 0:
		return fmt.Errorf("sysctls")
	case h.Runtime != want.Runtime:
		return fmt.Errorf("runtime %q, want %q", h.Runtime, want.Runtime)
	case h.CgroupParent != want.CgroupParent && !(want.CgroupParent == "" && want.AccountingParent != "" && h.CgroupParent == want.AccountingParent && ownParent(want.AccountingParent)):
		return fmt.Errorf("cgroup parent %q, want the step's %q", h.CgroupParent, want.CgroupParent)
	case h.OomKillDisable != nil && *h.OomKillDisable:
		return fmt.Errorf("OOM killer disabled")
	case h.PidsLimit == nil || *h.PidsLimit <= 0:
		return fmt.Errorf("no pids limit")
	case len(h.Links) > 0 || len(h.ExtraHosts) > 0:
		return fmt.Errorf("links or extra hosts")
	case r.Config.Labels["org.containerjob.uid"] != strconv.FormatUint(uint64(want.UID), 10):
		return fmt.Errorf("uid label %q does not match the caller", r.Config.Labels["org.containerjob.uid"])
	}
	return nil
}

// forbiddenSource is the guard's own list of host paths no container gets,
// kept apart from the policy package's on purpose: a bug there must not
// open a hole here.
func forbiddenSource(src string) string {
	switch src {
	case "/", "/etc", "/boot", "/root":
		return "a host system directory"
	}
	for _, dir := range []string{"/proc", "/sys", "/dev", "/var/lib/docker", "/run/containerd", "/var/lib/containerd"} {
		if src == dir || strings.HasPrefix(src, dir+"/") {
			return "under " + dir
		}
	}
	for _, sock := range []string{"/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"} {
		if src == sock || strings.HasPrefix(sock, src+"/") {
			return "the engine's socket (" + sock + ") or a directory holding it"
		}
	}
	return ""
}

// checkPorts: only the approved host bindings, each on a named address and
// an unprivileged port (below 1024 a user could pose as a system service),
// and nothing published wholesale.
func checkPorts(r client.ContainerCreateOptions, want Expect) error {
	h := r.HostConfig
	if h.PublishAllPorts {
		return fmt.Errorf("all exposed ports published")
	}
	if len(h.PortBindings) > 0 && (h.NetworkMode == "host" || h.NetworkMode == "none") {
		return fmt.Errorf("port bindings on network %q", h.NetworkMode)
	}
	for port, bindings := range h.PortBindings {
		for _, b := range bindings {
			if !b.HostIP.IsValid() {
				return fmt.Errorf("port %s bound on every address without an explicit 0.0.0.0", port)
			}
			n, err := strconv.ParseUint(b.HostPort, 10, 16)
			if err != nil || n < 1024 {
				return fmt.Errorf("host port %q for %s is not an unprivileged port number", b.HostPort, port)
			}
			ip := b.HostIP.String()
			if b.HostIP.Is6() {
				ip = "[" + ip + "]"
			}
			key := fmt.Sprintf("%s:%d/%s", ip, n, port.Proto())
			if !slices.Contains(want.AllowedPorts, key) {
				return fmt.Errorf("host binding %s not approved", key)
			}
		}
	}
	return nil
}
