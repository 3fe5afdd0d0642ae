//go:build cgo

package identity

import (
	"os"
	"strings"
	"testing"
)

// root is in every user database's files source; its shell there is what
// the C library must report.
func TestLoginShellOfRoot(t *testing.T) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) == 7 && f[2] == "0" {
			want = f[6]
			break
		}
	}
	if got := LoginShell(0); got != want || want == "" {
		t.Fatalf("LoginShell(0) = %q, /etc/passwd says %q", got, want)
	}
	if got := LoginShell(4294967290); got != "" {
		t.Fatalf("LoginShell of an unknown uid = %q, want \"\"", got)
	}
}
