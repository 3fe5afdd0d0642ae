package policy

import (
	"fmt"
	"strings"
	"testing"
)

// bigPolicy has groups groups and images image rules spread over them,
// as a large site's policy might.
func bigPolicy(tb testing.TB, groups, images int) *Policy {
	tb.Helper()
	var b strings.Builder
	b.WriteString("[defaults]\nimages_allow = [\"alpine:*\"]\nmounts_allow = [\"$HOME\", \"/scratch/$USER\"]\nflags_allow = [\"env\", \"volume\"]\nnetworks_allow = [\"none\"]\n")
	for g := 0; g < groups; g++ {
		fmt.Fprintf(&b, "[group.g%03d]\nimages_allow = [", g)
		for i := g; i < images; i += groups {
			fmt.Fprintf(&b, "\"registry.site/team%d/tool%d:*\", ", g, i)
		}
		fmt.Fprintf(&b, "]\nimages_deny = [\"registry.site/team%d/old:*\"]\n", g)
	}
	p, err := Parse("/bench.toml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func benchmarkDecide(b *testing.B, groups, images int) {
	p := bigPolicy(b, groups, images)
	caller := Caller{User: "alice", UID: 1001, GID: 1001, GroupNames: []string{"alice", "g007", "g042", "g099"}, Home: "/home/alice"}
	job := Job{Scheduler: "slurm", ID: "1", Step: "0", Dir: "/home/alice/run", Node: "n1"}
	req := Request{
		Image: "registry.site/team7/tool7:v1", Cmd: []string{"python", "train.py"},
		Env:    []string{"OMP_NUM_THREADS=4"},
		Mounts: []MountRequest{{Given: "/scratch/alice/data", Source: "/scratch/alice/data", Target: "/data"}},
		Flags:  []string{"env", "volume"},
	}
	if _, err := p.Decide(req, caller, job); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.Decide(req, caller, job); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecide100Groups1000Images(b *testing.B) { benchmarkDecide(b, 100, 1000) }
func BenchmarkDecide10Groups100Images(b *testing.B)   { benchmarkDecide(b, 10, 100) }
