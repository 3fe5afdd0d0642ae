// Package advisory knows the published vulnerabilities of the components
// under containerjob that a node's admin must upgrade (runc, the NVIDIA
// Container Toolkit) and which fixed version to install: containerjob's
// own checks cannot stop a container that escapes through its runtime.
// The versions come from the advisories themselves (runc's GHSA pages and
// release notes, NVIDIA's security bulletins); `containerjob doctor`
// reports them.
package advisory

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Advisory is one published vulnerability of a component.
type Advisory struct {
	Component string   // "runc", "nvidia-container-toolkit"
	IDs       []string // CVE ids fixed together
	// Fixed are the first fixed release of each maintained line, oldest
	// line first ("1.2.8", "1.3.3", "1.4.0"); a version of a line not
	// listed and below the last entry is vulnerable, one of a newer line
	// is fixed.
	Fixed []string
	// Note qualifies the advice ("reported" where the vendor's own
	// bulletin was not read).
	Note string
}

// Known are the advisories doctor checks.
var Known = []Advisory{
	{Component: "runc", IDs: []string{"CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"}, Fixed: []string{"1.2.8", "1.3.3", "1.4.0"}},
	{Component: "runc", IDs: []string{"CVE-2026-41579"}, Fixed: []string{"1.3.6", "1.4.3"}},
	{Component: "nvidia-container-toolkit", IDs: []string{"CVE-2025-23266"}, Fixed: []string{"1.17.8"}},
	{Component: "nvidia-container-toolkit", IDs: []string{"CVE-2026-24260"}, Fixed: []string{"1.19.1"}, Note: "as reported; NVIDIA's bulletin names the fixed release"},
}

// Version is a release's number.
type Version struct {
	Major, Minor, Patch int
	// Pre is a pre-release ("rc.2"): below the release of the same number.
	Pre string
}

var versionRE = regexp.MustCompile(`(?:^|[^0-9.])v?(\d+)\.(\d+)\.(\d+)(?:-(rc\.?\d+))?`)

// ParseVersion finds the first release number in s ("1.1.5+ds1-1+deb12u1",
// "v1.1.14-0-g2c9f560", "runc version 1.3.6", "NVIDIA Container Toolkit
// CLI version 1.17.8").
func ParseVersion(s string) (Version, bool) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return Version{}, false
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	v.Pre = m[4]
	return v, true
}

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	return s
}

// less orders versions; a pre-release is below its release.
func (v Version) less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	if v.Patch != w.Patch {
		return v.Patch < w.Patch
	}
	return v.Pre != "" && (w.Pre == "" || v.Pre < w.Pre)
}

// Affects reports whether version v of the advisory's component is
// vulnerable, and the fixed release to install: the fix of v's own line,
// or the oldest fixed line above it.
func (a Advisory) Affects(v Version) (bool, string) {
	var fixed []Version
	for _, f := range a.Fixed {
		fv, _ := ParseVersion(f)
		fixed = append(fixed, fv)
	}
	for _, f := range fixed {
		if f.Major == v.Major && f.Minor == v.Minor {
			if v.less(f) {
				return true, f.String()
			}
			return false, ""
		}
	}
	last := fixed[len(fixed)-1]
	if !v.less(last) {
		return false, "" // a newer line than any the advisory names
	}
	for _, f := range fixed {
		if v.less(f) {
			return true, f.String()
		}
	}
	return true, last.String()
}

// Finding is one advisory that applies to an installed version.
type Finding struct {
	Advisory Advisory
	Install  string // the fixed version to install
}

func (f Finding) String() string {
	s := fmt.Sprintf("%s (fixed in %s", strings.Join(f.Advisory.IDs, ", "), strings.Join(f.Advisory.Fixed, ", "))
	if f.Advisory.Note != "" {
		s += "; " + f.Advisory.Note
	}
	return s + ")"
}

// Check returns the advisories that apply to component at version (as a
// tool prints it), the fixed version to install (the highest any of them
// needs), and whether the version could be read at all.
func Check(component, version string) (findings []Finding, install string, known bool) {
	v, ok := ParseVersion(version)
	if !ok {
		return nil, "", false
	}
	var need Version
	for _, a := range Known {
		if a.Component != component {
			continue
		}
		if hit, fix := a.Affects(v); hit {
			findings = append(findings, Finding{Advisory: a, Install: fix})
			if fv, _ := ParseVersion(fix); need.less(fv) {
				need = fv
			}
		}
	}
	if len(findings) > 0 {
		// The newest fix any of them needs, on v's own line where the
		// advisories' lines allow.
		install = need.String()
	}
	return findings, install, true
}
