package policy

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // substrings, one per expected finding, in order
	}{
		{"clean", "[defaults]\nimages_allow = [\"alpine:*\"]\nmounts_allow = [\"$HOME\", \"/scratch/$USER\"]\n", nil},
		{"allow everything", "[defaults]\nimages_allow = [\"**\"]\n", []string{`/p.toml:2: warning: images_allow in [defaults]: pattern "**" allows every image`}},
		{"regexp allowing everything", "[defaults]\nimages_allow = [\n  \"alpine\",\n  \"re:.*\",\n]\n", []string{`/p.toml:4: warning: images_allow in [defaults]: pattern "re:.*"`}},
		{"root mount", "[group.x]\nimages_allow = [\"a\"]\nmounts_allow = [\"/\"]\n", []string{`/p.toml:3: error: mounts_allow in [group.x]: "/" is the host's root directory`}},
		{"docker socket dir", "[defaults]\nimages_allow = [\"a\"]\nmounts_allow = [\"/run\"]\n", []string{"Docker socket"}},
		{"forced etc file is fine", "[defaults]\nimages_allow = [\"a\"]\nmounts_always = [\"/etc/passwd:ro\"]\n", nil},
		{"whole home", "[defaults]\nimages_allow = [\"a\"]\nmounts_allow = [\"/home\"]\n", []string{"hands out a whole system directory"}},
		{"host network", "[defaults]\nimages_allow = [\"a\"]\nnetworks_allow = [\"none\", \"host\"]\n", []string{"host networking"}},
		{"unknown group and user", "[defaults]\nimages_allow = [\"a\"]\n[group.nosuch]\npull = []\n[user.ghost]\npull = []\n", []string{
			"/p.toml:3: warning:  in [group.nosuch]: no such group", "/p.toml:5: warning:  in [user.ghost]: no such user"}},
		{"root-equivalent capability", "[defaults]\nimages_allow = [\"a\"]\ncapabilities_allow = [\"NET_RAW\", \"SYS_ADMIN\"]\n", []string{`/p.toml:3: error: capabilities_allow in [defaults]: capability SYS_ADMIN is root-equivalent`}},
		{"loopback ports are fine", "[defaults]\nimages_allow = [\"a\"]\nports_allow = [\"8000-8999\"]\n", nil},
		{"privileged ports", "[defaults]\nimages_allow = [\"a\"]\nports_allow = [\"80\"]\n", []string{`/p.toml:3: error: ports_allow in [defaults]: "80" covers privileged ports`}},
		{"ports on every interface", "[defaults]\nimages_allow = [\"a\"]\nports_allow = [\"0.0.0.0:8000-8999\"]\n", []string{"publishes on every interface"}},
		{"default mount of a system directory", "[defaults]\nimages_allow = [\"a\"]\nmounts_default = [\"/proc\"]\n", []string{`error: mounts_default in [defaults]: "/proc" is under /proc`}},
		{"nothing allowed at all", "[defaults]\npull = [\"never\"]\n", []string{"no table allows any image"}},
	}
	look := Lookup{User: func(n string) bool { return n == "alice" }, Group: func(n string) bool { return n == "x" }}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("/p.toml", []byte(tt.text))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := p.Check(look)
			if len(got) != len(tt.want) {
				t.Fatalf("Check(%q) = %v, want %d findings %q", tt.text, got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].String(), w) {
					t.Errorf("finding %d = %q, want containing %q", i, got[i], w)
				}
			}
		})
	}
}
