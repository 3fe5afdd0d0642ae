package advisory

import (
	"strings"
	"testing"
)

// TestCheck: each advisory's verdict for versions below, at and above its
// fixes, on each line, and the one version to install for all of them.
func TestCheck(t *testing.T) {
	tests := []struct {
		component, version string
		cves               string // the CVEs found, joined
		install            string
	}{
		// runc: 31133/52565/52881 fixed in 1.2.8, 1.3.3, 1.4.0; 41579 in 1.3.6, 1.4.3.
		{"runc", "1.1.5+ds1-1+deb12u1", "CVE-2025-31133 CVE-2026-41579", "1.3.6"},
		{"runc", "v1.1.14-0-g2c9f560", "CVE-2025-31133 CVE-2026-41579", "1.3.6"},
		{"runc", "1.2.7", "CVE-2025-31133 CVE-2026-41579", "1.3.6"},
		{"runc", "1.2.8", "CVE-2026-41579", "1.3.6"},
		{"runc", "1.3.2", "CVE-2025-31133 CVE-2026-41579", "1.3.6"},
		{"runc", "1.3.3", "CVE-2026-41579", "1.3.6"},
		{"runc", "runc version 1.3.6\ncommit: v1.3.6-0-g1234", "", ""},
		{"runc", "1.4.0-rc.2", "CVE-2025-31133 CVE-2026-41579", "1.4.3"},
		{"runc", "1.4.0", "CVE-2026-41579", "1.4.3"},
		{"runc", "1.4.2", "CVE-2026-41579", "1.4.3"},
		{"runc", "1.4.3", "", ""},
		{"runc", "1.5.0", "", ""},
		// NVIDIA Container Toolkit: 23266 fixed in 1.17.8, 24260 in 1.19.1.
		{"nvidia-container-toolkit", "NVIDIA Container Toolkit CLI version 1.17.7", "CVE-2025-23266 CVE-2026-24260", "1.19.1"},
		{"nvidia-container-toolkit", "1.17.8", "CVE-2026-24260", "1.19.1"},
		{"nvidia-container-toolkit", "cli-version: 1.18.2", "CVE-2026-24260", "1.19.1"},
		{"nvidia-container-toolkit", "1.19.1", "", ""},
		{"nvidia-container-toolkit", "1.20.0", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.component+" "+tt.version, func(t *testing.T) {
			fs, install, known := Check(tt.component, tt.version)
			if !known {
				t.Fatal("version not read")
			}
			var ids []string
			for _, f := range fs {
				ids = append(ids, f.Advisory.IDs[0])
			}
			if got := strings.Join(ids, " "); got != tt.cves || install != tt.install {
				t.Errorf("found %q, install %q; want %q, %q", got, install, tt.cves, tt.install)
			}
		})
	}
	if _, _, known := Check("runc", "unknown"); known {
		t.Error("a version without a number was read")
	}
}
