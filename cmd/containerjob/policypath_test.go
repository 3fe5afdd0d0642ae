package main

import (
	"errors"
	"testing"

	"github.com/containerjob/containerjob/policy"
)

// TestPolicyPathFor: every command's one choice of the policy file. Under
// sudo a named policy is refused, never read as root and never silently
// replaced by the node's; root and plain users name one as they please
// (a plain user's is read with their own rights and trusted only if root
// owns it).
func TestPolicyPathFor(t *testing.T) {
	tests := []struct {
		name      string
		inv       invocation
		flag, env string
		want      string // "" a usage error
	}{
		{"root, nothing named", asRoot, "", "", policy.DefaultPath},
		{"root, the flag", asRoot, "/etc/x.toml", "/etc/y.toml", "/etc/x.toml"},
		{"root, the environment", asRoot, "", "/etc/y.toml", "/etc/y.toml"},
		{"a user, the flag", asUser, "/tmp/p.toml", "", "/tmp/p.toml"},
		{"sudo, nothing named", viaSudo, "", "", policy.DefaultPath},
		{"sudo, the flag", viaSudo, "/tmp/evil.toml", "", ""},
		{"sudo, the environment", viaSudo, "", "/tmp/evil.toml", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CONTAINERJOB_POLICY", tt.env)
			got, err := policyPathFor(tt.inv, tt.flag)
			if tt.want == "" {
				var usage usageError
				if !errors.As(err, &usage) {
					t.Errorf("= %q, %v; want a usage error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("= %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
