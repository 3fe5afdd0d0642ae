package policy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Finding is one problem `policy check` reports.
type Finding struct {
	Origin  Origin
	Warning bool // a warning still fails `policy check`, but not a launch
	Message string
	Hint    string
}

func (f Finding) String() string {
	sev := "error"
	if f.Warning {
		sev = "warning"
	}
	s := fmt.Sprintf("%s:%d: %s: %s in [%s]: %s", f.Origin.File, f.Origin.Line, sev, f.Origin.Key, f.Origin.Table, f.Message)
	if f.Hint != "" {
		s += "; hint: " + f.Hint
	}
	return s
}

// Lookup answers whether names exist in the user database; nil skips
// those checks (pure tests).
type Lookup struct {
	User  func(name string) bool
	Group func(name string) bool
}

// everything are images no reference escapes.
var everythingProbes = []string{
	"docker.io/library/anything:1", "quay.io/any/thing:1", "registry.example:5000/a/b/c:d",
}

// Check looks for rules that are valid TOML but unwise or dangerous: a
// pattern that allows every image, a mount prefix that hands out the node,
// host networking, tables for names that do not exist.
func (p *Policy) Check(look Lookup) []Finding {
	var out []Finding
	add := func(t table, key, value string, warn bool, msg, hint string) {
		out = append(out, Finding{Origin: t.origin(key, value), Warning: warn, Message: msg, Hint: hint})
	}
	for _, t := range p.tables() {
		r := t.rules
		for _, pat := range r.ImagesAllow {
			c := p.compiled[pat]
			all := true
			for _, probe := range everythingProbes {
				ref, _ := NormalizeImage(probe)
				if !c.matches(ref, nil) {
					all = false
				}
			}
			if all {
				add(t, "images_allow", pat, true, fmt.Sprintf("pattern %q allows every image from every registry", pat),
					"name the registries or repositories users may run, e.g. \"registry.local/**\"")
			}
		}
		for _, m := range append(append(append([]string{}, r.MountsAllow...), r.MountsAlways...), r.MountsDefault...) {
			raw, _, _ := splitMountRule(m)
			if strings.HasPrefix(raw, "$") {
				continue
			}
			clean := filepath.Clean(raw)
			key := "mounts_allow"
			if slices.Contains(r.MountsAlways, m) {
				key = "mounts_always"
			} else if slices.Contains(r.MountsDefault, m) {
				key = "mounts_default"
			}
			if why := ForbiddenMountSource(clean); why != "" && !(key == "mounts_always" && strings.HasPrefix(clean, "/etc/")) {
				add(t, key, m, false, fmt.Sprintf("%q is %s and can never be mounted", m, why), "remove it; containerjob refuses it whatever the policy says")
			} else if clean == "/home" || clean == "/var" || clean == "/usr" || clean == "/run" || clean == "/tmp" && key == "mounts_allow" {
				add(t, key, m, true, fmt.Sprintf("%q hands out a whole system directory", m), "allow $HOME or a per-user path such as /scratch/$USER")
			}
		}
		for _, c := range r.CapabilitiesAllow {
			if rootEquivalentCaps[c] {
				add(t, "capabilities_allow", c, false, fmt.Sprintf("capability %s is root-equivalent (or close to it) on the host", c),
					"remove it; containers must not be able to become root")
			}
		}
		for _, n := range r.NetworksAllow {
			if n == "host" {
				add(t, "networks_allow", n, true, "host networking lets containers bind the node's ports and reach services on localhost",
					"allow it only in a [group.NAME] for users who need it")
			}
		}
		for _, pr := range r.PortsAllow {
			if rule, err := parsePortRule(pr); err == nil && rule.low < 1024 {
				add(t, "ports_allow", pr, false, fmt.Sprintf("%q covers privileged ports (below 1024), where a user could pose as a system service", pr),
					"allow ports from 1024 up; containerjob refuses lower host ports whatever the policy says")
			}
			if rule, err := parsePortRule(pr); err == nil && rule.ip.IsUnspecified() {
				add(t, "ports_allow", pr, true, fmt.Sprintf("%q publishes on every interface of the node, reachable from the whole network", pr),
					"leave out the address to allow 127.0.0.1 only (users reach it with ssh -L)")
			}
		}
		for _, pm := range r.Pull {
			if pm == "always" {
				add(t, "pull", pm, true, "pull mode always lets users re-pull a tag every other user also runs", "prefer never or missing")
			}
		}
		if strings.HasPrefix(t.name, "group.") && look.Group != nil && !look.Group(strings.TrimPrefix(t.name, "group.")) {
			add(t, "", "", true, "no such group in the user database", "check the spelling; this table applies to nobody")
		}
		if strings.HasPrefix(t.name, "user.") && look.User != nil && !look.User(strings.TrimPrefix(t.name, "user.")) {
			add(t, "", "", true, "no such user in the user database", "check the spelling; this table applies to nobody")
		}
	}
	if len(p.defaults.rules.ImagesAllow) == 0 && len(p.groups) == 0 && len(p.users) == 0 {
		add(p.defaults, "images_allow", "", true, "no table allows any image: every launch will be refused", "add images_allow to [defaults]")
	}
	return out
}

// rootEquivalentCaps can each be turned into root on the host, or into
// reading and writing any file.
var rootEquivalentCaps = map[string]bool{
	"SYS_ADMIN": true, "SYS_MODULE": true, "SYS_RAWIO": true, "SYS_PTRACE": true, "SYS_BOOT": true,
	"DAC_OVERRIDE": true, "DAC_READ_SEARCH": true, "FOWNER": true, "CHOWN": true, "SETUID": true,
	"SETGID": true, "SETFCAP": true, "SETPCAP": true, "MKNOD": true, "NET_ADMIN": true, "BPF": true,
	"SYS_CHROOT": true, "LINUX_IMMUTABLE": true, "MAC_ADMIN": true, "MAC_OVERRIDE": true, "SYSLOG": true,
	"PERFMON": true, "CHECKPOINT_RESTORE": true,
}
