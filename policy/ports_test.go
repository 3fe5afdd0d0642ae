package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const portsPolicy = `[defaults]
images_allow = ["alpine:*"]
flags_allow = ["publish", "network"]
networks_allow = ["none", "bridge"]
ports_allow = ["8000-8099", "0.0.0.0:9000/udp", "[::1]:7000"]
mounts_default = ["$HOME", "/scratch/$USER:ro", "$JOB_DIR/cache"]
mounts_always = ["/etc/passwd:ro", "/shared/$USER"]
outside_jobs = true
`

func TestPublish(t *testing.T) {
	pol := mustParse(t, portsPolicy)
	tests := []struct {
		name    string
		network string
		publish []string
		want    string // the decided ports, or the refusal
	}{
		{"loopback by default", "bridge", []string{"8080:80"}, "127.0.0.1:8080:80/tcp"},
		{"range end", "bridge", []string{"127.0.0.1:8099:8888"}, "127.0.0.1:8099:8888/tcp"},
		{"two ports", "bridge", []string{"8000:80", "8001:81"}, "127.0.0.1:8000:80/tcp 127.0.0.1:8001:81/tcp"},
		{"all interfaces need their own rule", "bridge", []string{"0.0.0.0:8080:80"}, "publishing host port 0.0.0.0:8080:80/tcp is not allowed, says ports_allow in [defaults]"},
		{"udp rule on all interfaces", "bridge", []string{"0.0.0.0:9000:53/udp"}, "0.0.0.0:9000:53/udp"},
		{"protocol must match the rule", "bridge", []string{"0.0.0.0:9000:53"}, "is not allowed, says ports_allow"},
		{"ipv6 loopback", "bridge", []string{"[::1]:7000:80"}, "[::1]:7000:80/tcp"},
		{"outside the range", "bridge", []string{"8100:80"}, "publishing host port 127.0.0.1:8100:80/tcp is not allowed, says ports_allow"},
		{"privileged host port", "bridge", []string{"22:22"}, "is not allowed, says ports_allow"},
		{"random host port is not offered", "bridge", []string{"80"}, "a random host port is not offered"},
		{"host port 0", "bridge", []string{"0:80"}, "is not a port number"},
		{"port too large", "bridge", []string{"8000:70000"}, "is not a port number"},
		{"bad protocol", "bridge", []string{"8000:80/sctp"}, "is not tcp or udp"},
		{"bad address", "bridge", []string{"node1:8000:80"}, "is not an IP address"},
		{"same host port twice", "bridge", []string{"8000:80", "8000:81"}, "publishes the same host port twice"},
		{"no network to publish on", "none", []string{"8000:80"}, `on network "none" has nothing to forward`},
		{"default network is one that forwards", "", []string{"8000:80"}, "127.0.0.1:8000:80/tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{Image: "alpine:3.20", Network: tt.network, Publish: tt.publish, Flags: []string{"publish", "network"}}
			d, err := pol.Decide(req, bob, Job{})
			var got string
			if err != nil {
				got = err.Error()
			} else {
				var ps []string
				for _, p := range d.Ports {
					ps = append(ps, p.String())
				}
				got = strings.Join(ps, " ")
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPortRuleSyntax(t *testing.T) {
	for _, bad := range []string{"", "0", "80-70", "8000/sctp", "nodeA:80", "65536", "1-2-3"} {
		if _, err := Parse("/p.toml", []byte("[defaults]\nports_allow = [\""+bad+"\"]\n")); err == nil || !strings.Contains(err.Error(), "/p.toml:2: ports_allow in [defaults]") {
			t.Errorf("ports_allow %q: err %v", bad, err)
		}
	}
}

func TestDefaultMounts(t *testing.T) {
	pol := mustParse(t, portsPolicy)
	job := Job{Scheduler: "slurm", ID: "7", Dir: "/home/bob/run", Node: "n1"}
	present := func(paths ...string) map[string]string {
		out := map[string]string{}
		for _, p := range paths {
			out[p] = p
		}
		return out
	}
	tests := []struct {
		name    string
		job     Job
		given   map[string]string // default mount path -> where it resolves; absent: not on the node
		optOut  []string
		want    string // mounts as SRC:DST:opts, or the refusal
		wantErr bool
	}{
		{"all present", job, present("/home/bob", "/scratch/bob", "/home/bob/run/cache"), nil,
			// the job dir and the cache lie inside the home mount: shown by it, not mounted again
			"/etc/passwd:/etc/passwd:ro /shared/bob:/shared/bob /home/bob:/home/bob /scratch/bob:/scratch/bob:ro", false},
		{"absent ones are left out", job, present("/home/bob"), nil,
			"/etc/passwd:/etc/passwd:ro /shared/bob:/shared/bob /home/bob:/home/bob", false},
		{"opt out of one", job, present("/home/bob", "/scratch/bob"), []string{"/home/bob"},
			"/home/bob/run:/home/bob/run /etc/passwd:/etc/passwd:ro /shared/bob:/shared/bob /scratch/bob:/scratch/bob:ro", false},
		{"opt out of all", job, present("/home/bob", "/scratch/bob"), []string{"all"},
			"/home/bob/run:/home/bob/run /etc/passwd:/etc/passwd:ro /shared/bob:/shared/bob", false},
		{"job dir entries need a job", Job{Dir: "/home/bob"}, present("/home/bob", "/scratch/bob"), nil,
			"/home/bob:/home/bob /etc/passwd:/etc/passwd:ro /shared/bob:/shared/bob /scratch/bob:/scratch/bob:ro", false},
		{"a default the user pointed at /etc is refused", job,
			map[string]string{"/scratch/bob": "/etc"}, nil,
			`default mount "/scratch/bob" resolves to "/etc"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The exchange: the policy lists, the launch resolves, Decide judges.
			answer := pol.DefaultMounts(bob, tt.job)
			for i := range answer {
				answer[i].Source = tt.given[answer[i].Path]
			}
			d, err := pol.Decide(Request{Image: "alpine:3.20", DefaultMounts: answer, NoDefaultMounts: tt.optOut}, bob, tt.job)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range d.Spec.Mounts {
				s := m.Source + ":" + m.Destination
				if strings.Contains(strings.Join(m.Options, ","), "ro") {
					s += ":ro"
				}
				got = append(got, s)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("mounts\n got %s\nwant %s", strings.Join(got, " "), tt.want)
			}
			// User-named paths are opened as the user, never bound by name.
			for _, p := range []string{"/shared/bob"} {
				if !strings.Contains(strings.Join(d.StageSources, " "), p) {
					t.Errorf("%s not staged: %v", p, d.StageSources)
				}
			}
		})
	}
}

// TestDefaultMountsAnswerIsHeldToTheList: the answer to DefaultMounts may
// only fill in where each entry resolves; an entry the policy lacks, a
// changed one, or more entries than listed are refused, never mounted.
func TestDefaultMountsAnswerIsHeldToTheList(t *testing.T) {
	pol := mustParse(t, portsPolicy)
	job := Job{Scheduler: "slurm", ID: "7", Dir: "/home/bob/run", Node: "n1"}
	plan := pol.DefaultMounts(bob, job)
	if len(plan) < 2 {
		t.Fatalf("the test policy lists %d default mounts", len(plan))
	}
	changed := slices.Clone(plan)
	changed[0].ReadOnly = !changed[0].ReadOnly
	for name, answer := range map[string][]DefaultMount{
		"an entry the policy lacks": {{Path: "/root", Source: "/root"}},
		"a changed entry":           changed,
		"more entries than listed":  append(slices.Clone(plan), DefaultMount{Path: "/root", Source: "/root"}),
	} {
		_, err := pol.Decide(Request{Image: "alpine:3.20", DefaultMounts: answer}, bob, job)
		var ref *Refusal
		if !errors.As(err, &ref) || ref.Rule.Key != "default-mounts" {
			t.Errorf("%s: %v, want a default-mounts refusal", name, err)
		}
	}
	// No answer at all: every default is absent.
	d, err := pol.Decide(Request{Image: "alpine:3.20"}, bob, job)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range d.Spec.Mounts {
		if slices.ContainsFunc(plan, func(dm DefaultMount) bool { return dm.Path == m.Destination }) {
			t.Errorf("default mount %s mounted without an answer", m.Destination)
		}
	}
}
