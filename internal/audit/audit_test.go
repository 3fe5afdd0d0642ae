package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCap(t *testing.T) {
	long := strings.Repeat("x", MaxString+10)
	many := make([]string, 100)
	for i := range many {
		many[i] = strings.Repeat("y", 100)
	}
	tests := []struct {
		name    string
		in      map[string]any
		wantCut bool
		check   func(map[string]any) bool
	}{
		{"short values kept", map[string]any{"user": "alice", "uid": 5, "command": []string{"echo", "hi"}}, false,
			func(m map[string]any) bool { return m["user"] == "alice" && len(m["command"].([]string)) == 2 }},
		{"long string cut", map[string]any{"reason": long}, true,
			func(m map[string]any) bool { return len(m["reason"].(string)) == MaxString+3 }},
		{"long list cut, count said", map[string]any{"args": many}, true,
			func(m map[string]any) bool {
				l := m["args"].([]string)
				return len(l) < 100 && strings.HasPrefix(l[len(l)-1], "... ") && strings.HasSuffix(l[len(l)-1], " more")
			}},
		{"long list element cut", map[string]any{"args": []string{long}}, true,
			func(m map[string]any) bool { return len(m["args"].([]string)[0]) == MaxString+3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cut := Cap(tt.in)
			if cut != tt.wantCut || !tt.check(got) {
				t.Fatalf("Cap(%.80v) = %.200v, %v; want cut=%v", tt.in, got, cut, tt.wantCut)
			}
		})
	}
}

func TestRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "audit.log")
	l, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]string, 14)
	for i := range big {
		big[i] = strings.Repeat("A", 120<<10)
	}
	if err := l.Record("decision", map[string]any{"user": "alice", "args": big}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data, _ := os.ReadFile(path)
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil || rec["msg"] != "decision" || rec["truncated"] != true || rec["user"] != "alice" {
		t.Fatalf("record %.300s: %v", data, err)
	}
	if len(data) > 16<<10 {
		t.Errorf("a record of 1.7 MB of arguments is %d bytes", len(data))
	}
	// A trail that cannot be written says so.
	full, err := Open("/dev/full", false)
	if err != nil {
		t.Fatalf("/dev/full: %v", err)
	}
	defer full.Close()
	if err := full.Record("decision", map[string]any{"user": "alice"}); err == nil {
		t.Error("a record written to /dev/full reported success")
	}
}
