package policy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// mountVars expands $HOME, $USER and $JOB_DIR in mount rules (the only
// variables splitMountRule accepts).
type mountVars struct{ home, user, jobDir string }

func (v mountVars) Replace(s string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	s = strings.ReplaceAll(s, "$JOB_DIR", v.jobDir)
	s = strings.ReplaceAll(s, "$HOME", v.home)
	return strings.ReplaceAll(s, "$USER", v.user)
}

// Paths no policy can make mountable: they hand out the node.
var neverMount = []string{"/proc", "/sys", "/dev"}

// ForbiddenMountSource reports why a resolved host path can never be bind
// mounted, or "" if it may be.
func ForbiddenMountSource(src string) string {
	switch src {
	case "/":
		return "the host's root directory"
	case "/etc":
		return "the host's /etc"
	}
	for _, p := range neverMount {
		if Within(src, p) {
			return "under " + p
		}
	}
	for _, sock := range []string{"/var/run/docker.sock", "/run/docker.sock"} {
		if Within(sock, src) {
			return "the Docker socket or a directory holding it"
		}
	}
	if Within(src, "/run/containerd") || Within(src, "/var/lib/docker") {
		return "the container engine's state"
	}
	return ""
}

// Within reports whether path is dir or below it; both must be clean.
func Within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func underAnyMount(path string, mounts []specs.Mount) bool {
	for _, m := range mounts {
		if Within(path, m.Destination) {
			return true
		}
	}
	return false
}

func (p *Policy) decideMounts(d *Decision, req Request, caller Caller, job Job, eff *Effective) error {
	vars := mountVars{home: caller.Home, user: caller.User, jobDir: job.Dir}
	targets := map[string]bool{}
	add := func(src, dst string, ro bool) {
		opts := []string{"rbind", "rprivate"}
		if ro {
			opts = append(opts, "ro")
		}
		d.Spec.Mounts = append(d.Spec.Mounts, specs.Mount{Type: "bind", Source: src, Destination: dst, Options: opts})
		targets[dst] = true
	}
	if eff.MountJobDir.Value && job.Dir != "" {
		if why := ForbiddenMountSource(job.Dir); why != "" {
			return &Refusal{Item: fmt.Sprintf("job directory %q (%s)", job.Dir, why), Reason: "cannot be mounted", Rule: builtin("never-mount"), Hint: "submit the job from a directory of your own (sbatch -D DIR)"}
		}
		add(job.Dir, job.Dir, false)
		d.StageSources = append(d.StageSources, job.Dir)
		d.Trail = append(d.Trail, Applied{Item: "mount " + job.Dir + " (job directory)", Action: "forced", Rule: eff.MountJobDir.Origin})
	}
	for _, f := range job.Files {
		if !targets[f] {
			add(f, f, true)
			d.StageSources = append(d.StageSources, f)
			d.Trail = append(d.Trail, Applied{Item: "mount " + f + " (job file)", Action: "forced", Rule: builtin("job-files")})
		}
	}
	for _, dir := range job.MPIDirs {
		if !targets[dir] {
			add(dir, dir, false)
			d.StageSources = append(d.StageSources, dir)
			d.Trail = append(d.Trail, Applied{Item: "mount " + dir + " (the step's PMIx server)", Action: "forced", Rule: builtin("pmix")})
		}
	}
	for _, e := range eff.MountsAlways {
		raw, ro, _ := splitMountRule(e.Value)
		path := filepath.Clean(vars.Replace(raw))
		if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
			continue
		}
		if targets[path] {
			continue
		}
		add(path, path, ro)
		if strings.Contains(raw, "$") {
			// A path under the user's name may be theirs to replace (a
			// symlink in a world-writable parent): open it as they would.
			d.StageSources = append(d.StageSources, path)
		}
		d.Trail = append(d.Trail, Applied{Item: "mount " + path, Action: "forced", Rule: e.Origin})
	}
	plan := defaultMounts(eff, vars, job)
	if len(req.DefaultMounts) > len(plan) {
		return &Refusal{Item: "a request with more default mounts than the policy lists", Reason: "is refused", Rule: builtin("default-mounts")}
	}
	for i, dm := range plan {
		src := ""
		if i < len(req.DefaultMounts) {
			got := req.DefaultMounts[i]
			if got.Path != dm.Path || got.ReadOnly != dm.ReadOnly {
				return &Refusal{Item: fmt.Sprintf("default mount %q in the request", got.Path), Reason: "is not the policy's (the request must answer DefaultMounts' own list)", Rule: builtin("default-mounts")}
			}
			src = got.Source
		}
		switch {
		case slices.Contains(req.NoDefaultMounts, dm.Path) || slices.Contains(req.NoDefaultMounts, "all"):
			d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "skipped, opted out", Rule: dm.Origin})
			continue
		case src == "":
			d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "skipped, absent", Rule: dm.Origin})
			continue
		case targets[dm.Path]:
			continue
		}
		if why := ForbiddenMountSource(src); why != "" {
			return &Refusal{Item: fmt.Sprintf("default mount %q resolves to %q (%s) and", dm.Path, src, why), Reason: "can never be mounted", Rule: dm.Origin, Hint: "opt out with --no-default-mount=" + dm.Path + ", or ask the admin about the rule"}
		}
		add(src, dm.Path, dm.ReadOnly)
		d.StageSources = append(d.StageSources, src)
		d.Trail = append(d.Trail, Applied{Item: "mount " + dm.Path + " (default)", Action: "allowed", Rule: dm.Origin})
	}
	for _, m := range req.Mounts {
		if !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) != m.Target || m.Target == "/" || strings.ContainsRune(m.Target, 0) {
			return &Refusal{Item: fmt.Sprintf("mount target %q", truncate(m.Target, 256)), Reason: "must be an absolute, clean path other than /", Rule: builtin("mount-target")}
		}
		if targets[m.Target] {
			// The same source at the same target is the same mount
			// (--container-mounts="$PWD:$PWD" in the job directory):
			// nothing new is mounted; read-only narrows it.
			i := slices.IndexFunc(d.Spec.Mounts, func(x specs.Mount) bool { return x.Destination == m.Target })
			if i < 0 || d.Spec.Mounts[i].Source != m.Source {
				return &Refusal{Item: fmt.Sprintf("mount target %q", m.Target), Reason: "is already taken by a mount the admin forces", Rule: builtin("mount-target"), Hint: "mount it at another path"}
			}
			if m.ReadOnly && !slices.Contains(d.Spec.Mounts[i].Options, "ro") {
				d.Spec.Mounts[i].Options = append(d.Spec.Mounts[i].Options, "ro")
			}
			d.Trail = append(d.Trail, Applied{Item: "mount " + m.Source + ":" + m.Target, Action: "the same as a mount already made", Rule: builtin("mount-target")})
			continue
		}
		if why := ForbiddenMountSource(m.Source); why != "" {
			return &Refusal{Item: fmt.Sprintf("mount source %q (%s)", m.Given, why), Reason: "can never be mounted", Rule: builtin("never-mount")}
		}
		// The longest allowed prefix decides, so an admin can allow /data
		// read-only and /data/$USER read-write.
		best, bestLen, bestRO := Origin{}, -1, false
		for _, e := range eff.MountsAllow {
			raw, ro, _ := splitMountRule(e.Value)
			prefix := filepath.Clean(vars.Replace(raw))
			if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
				continue
			}
			if Within(m.Source, prefix) && len(prefix) > bestLen {
				best, bestLen, bestRO = e.Origin, len(prefix), ro
			}
		}
		if bestLen < 0 {
			return &Refusal{Item: fmt.Sprintf("mount source %q", m.Given), Reason: "is not under any path allowed", Rule: eff.MountsAllow.missing("mounts_allow")}
		}
		ro := m.ReadOnly || bestRO
		add(m.Source, m.Target, ro)
		d.StageSources = append(d.StageSources, m.Source)
		action := "allowed"
		if bestRO && !m.ReadOnly {
			action = "forced read-only"
		}
		d.Trail = append(d.Trail, Applied{Item: "mount " + m.Source + ":" + m.Target, Action: action, Rule: best})
	}
	return nil
}

// decideNesting drops the bind mounts that another one already shows at
// the same place (the job directory inside a default $HOME mount) and
// refuses any other bind target inside a bind mount: the engine's runc
// would create that mountpoint through a host path the caller may swap
// for a symlink while the container starts (CVE-2024-45310, fixed in runc
// 1.1.14). nested_mounts = "allow" lifts the refusal.
func (p *Policy) decideNesting(d *Decision) error {
	d.NestedMounts = p.Settings.NestedMounts == "allow"
	mounts := d.Spec.Mounts
	var kept []specs.Mount
	for i, m := range mounts {
		if m.Type != "bind" {
			kept = append(kept, m)
			continue
		}
		covered := false
		var outer *specs.Mount
		for j := range mounts {
			o := &mounts[j]
			if j == i || o.Type != "bind" || o.Destination == m.Destination || !Within(m.Destination, o.Destination) {
				continue
			}
			rel := strings.TrimPrefix(m.Destination, o.Destination)
			if o.Destination == "/" {
				rel = m.Destination
			}
			if filepath.Clean(o.Source+rel) == m.Source && (isReadOnly(m) || !isReadOnly(*o)) {
				covered = true
				break
			}
			outer = o
		}
		switch {
		case covered:
			d.Trail = append(d.Trail, Applied{Item: "mount " + m.Source + ":" + m.Destination, Action: "already shown by an enclosing mount; not mounted again", Rule: builtin("nested-mount")})
		case outer != nil && !d.NestedMounts:
			return &Refusal{
				Item:   fmt.Sprintf("mount target %q lies inside the mount of %q, a host directory whose contents the caller may change while the container starts, and", m.Destination, outer.Destination),
				Reason: "is refused (runc before 1.1.14 can be raced into creating it outside the container, CVE-2024-45310)", Rule: Origin{Table: "settings", Key: "nested_mounts"},
				Hint: "mount it outside " + outer.Destination + ", e.g. under /mnt"}
		default:
			kept = append(kept, m)
		}
	}
	d.Spec.Mounts = kept
	// A dropped mount's source is not staged either, unless a kept one uses it.
	d.StageSources = slices.DeleteFunc(d.StageSources, func(src string) bool {
		return !slices.ContainsFunc(kept, func(m specs.Mount) bool { return m.Source == src })
	})
	return nil
}

func isReadOnly(m specs.Mount) bool { return slices.Contains(m.Options, "ro") }

// DefaultMount is one mounts_default entry as it applies to a caller and job.
type DefaultMount struct {
	Path     string // host path and container path, variables expanded
	ReadOnly bool
	Origin   Origin
	// Source is filled in by the caller of DefaultMounts, never by policy:
	// where Path resolves on this node, as the caller; "" when absent.
	Source string
}

// DefaultMounts is the first half of an explicit exchange: the caller's
// default mounts (mounts_default), for the launch to resolve as the
// caller (policy does no I/O). The launch sets each entry's Source and
// hands the list back as Request.DefaultMounts; Decide holds it to this
// same list. Entries naming $JOB_DIR are left out outside a job.
func (p *Policy) DefaultMounts(caller Caller, job Job) []DefaultMount {
	return defaultMounts(p.Effective(caller), mountVars{home: caller.Home, user: caller.User, jobDir: job.Dir}, job)
}

func defaultMounts(eff *Effective, vars mountVars, job Job) []DefaultMount {
	var out []DefaultMount
	for _, e := range eff.MountsDefault {
		raw, ro, _ := splitMountRule(e.Value)
		if strings.Contains(raw, "$JOB_DIR") && job.Dir == "" {
			continue
		}
		path := filepath.Clean(vars.Replace(raw))
		if !slices.ContainsFunc(out, func(m DefaultMount) bool { return m.Path == path }) {
			out = append(out, DefaultMount{Path: path, ReadOnly: ro, Origin: e.Origin})
		}
	}
	return out
}

// decidePorts judges -p: each host address, port and protocol must be
