package policy

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"slices"
	"strings"
	"testing"
)

const mpiPolicy = `[settings]
fabric_devices = ["/dev/infiniband/uverbs0", "/dev/infiniband/rdma_cm"]

[defaults]
images_allow = ["mpi-test:*"]
flags_allow = ["network"]
networks_allow = ["none", "host"]
ulimits = ["memlock=-1"]
`

// TestMPISteps: what srun --mpi sets up reaches the container or the
// launch is refused with the reason; the step's PMIx directory is bound at
// its path, and the fabric devices the node has are given to job steps.
func TestMPISteps(t *testing.T) {
	pol := mustParse(t, mpiPolicy)
	pmix := Job{Scheduler: "slurm", ID: "42", Step: "1", Node: "n1", StepTasks: 4, MPIType: "pmix",
		MPIDirs: []string{"/var/spool/slurmd/pmix.42.1"}, FabricDevices: []string{"/dev/infiniband/uverbs0"}}
	host := Request{Image: "mpi-test:1", Network: "host", Flags: []string{"network"}}

	d, err := pol.Decide(host, bob, pmix)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(d.Spec.Mounts, func(m specsMount) bool {
		return m.Source == "/var/spool/slurmd/pmix.42.1" && m.Destination == m.Source && !slices.Contains(m.Options, "ro")
	}) {
		t.Errorf("the PMIx directory is not bound read-write at its path: %+v", d.Spec.Mounts)
	}
	if !slices.ContainsFunc(d.Spec.Linux.Devices, func(dev specsDevice) bool { return dev.Path == "/dev/infiniband/uverbs0" }) {
		t.Errorf("the fabric device is missing: %+v", d.Spec.Linux.Devices)
	}
	if !slices.ContainsFunc(d.Spec.Process.Rlimits, func(r specsRlimit) bool { return r.Type == "RLIMIT_MEMLOCK" }) {
		t.Errorf("memlock=-1 is missing: %+v", d.Spec.Process.Rlimits)
	}
	if !d.StepShared || d.Name != "cj-1002-42-n1_step.1" {
		t.Errorf("a 4-task step: shared %v, name %q", d.StepShared, d.Name)
	}
	// The ranks read the job's data from the server by messages, unless
	// the job or the user chose a store; not for steps without PMIx.
	if !slices.Contains(d.Spec.Process.Env, "PMIX_MCA_gds=hash") {
		t.Errorf("a PMIx step's environment has no PMIX_MCA_gds=hash: %q", d.Spec.Process.Env)
	}
	for _, own := range []Request{
		{Image: "mpi-test:1", Network: "host", Flags: []string{"network"}, JobEnv: []string{"PMIX_MCA_gds=ds21"}},
		{Image: "mpi-test:1", Network: "host", Flags: []string{"network"}, Env: []string{"PMIX_MCA_gds=ds12"}},
	} {
		d, err := pol.Decide(own, bob, pmix)
		if err != nil || slices.Contains(d.Spec.Process.Env, "PMIX_MCA_gds=hash") || !slices.ContainsFunc(d.Spec.Process.Env, func(e string) bool { return strings.HasPrefix(e, "PMIX_MCA_gds=ds") }) {
			t.Errorf("the caller's own PMIX_MCA_gds (%v %v) was not kept: %v %q", own.JobEnv, own.Env, err, d.Spec.Process.Env)
		}
	}
	noMPI := pmix
	noMPI.MPIType, noMPI.MPIDirs = "", nil
	if d, err := pol.Decide(host, bob, noMPI); err != nil || slices.ContainsFunc(d.Spec.Process.Env, func(e string) bool { return strings.HasPrefix(e, "PMIX_MCA_gds=") }) {
		t.Errorf("a step without PMIx: %v %q", err, d.Spec.Process.Env)
	}

	for _, tt := range []struct {
		name     string
		job      func(Job) Job
		req      Request
		wantErr  string
		wantHint string
	}{
		{"pmix off the host network", func(j Job) Job { return j }, Request{Image: "mpi-test:1", Network: "none", Flags: []string{"network"}},
			`srun --mpi=pmix on network "none" cannot reach the node's PMIx server`, "--network host"},
		{"pmi2", func(j Job) Job { j.MPIType, j.MPIDirs = "pmi2", nil; return j }, host,
			"srun --mpi=pmi2 cannot reach a container", "use srun --mpi=pmix"},
		{"a fabric device the policy does not list", func(j Job) Job { j.FabricDevices = []string{"/dev/infiniband/umad0"}; return j }, host,
			`fabric device "/dev/infiniband/umad0" is not in fabric_devices`, ""},
	} {
		_, err := pol.Decide(tt.req, bob, tt.job(pmix))
		ref, ok := err.(*Refusal)
		if !ok || !strings.Contains(ref.Error(), tt.wantErr) || !strings.Contains(ref.Hint, tt.wantHint) {
			t.Errorf("%s: %v (hint %q); want %q, hint %q", tt.name, err, hintOf(err), tt.wantErr, tt.wantHint)
		}
	}
	// Without --network, an MPI step takes the host network the policy
	// allows; a policy without it refuses.
	if d, err := pol.Decide(Request{Image: "mpi-test:1"}, bob, pmix); err != nil || d.Network != "host" {
		t.Errorf("an MPI step without --network: %v, network %q", err, d.Network)
	}
	noHost := mustParse(t, strings.Replace(mpiPolicy, `networks_allow = ["none", "host"]`, `networks_allow = ["none"]`, 1))
	if _, err := noHost.Decide(Request{Image: "mpi-test:1"}, bob, pmix); err == nil || !strings.Contains(hintOf(err), "adds \"host\" to networks_allow") {
		t.Errorf("an MPI step where the host network is not allowed: %v (hint %q)", err, hintOf(err))
	}
	// Outside a job no fabric device and no MPI check apply.
	if d, err := pol.Decide(Request{Image: "mpi-test:1"}, bob, Job{Dir: "/home/bob", FabricDevices: []string{"/dev/infiniband/uverbs0"}}); err == nil && len(d.Spec.Linux.Devices) != 0 {
		t.Errorf("devices outside a job: %+v", d.Spec.Linux.Devices)
	}
}

func hintOf(err error) string {
	if r, ok := err.(*Refusal); ok {
		return r.Hint
	}
	return ""
}

func TestFabricDevicesSetting(t *testing.T) {
	for _, dev := range []string{"/dev/sda", "/dev/infiniband/../sda", "/dev/infiniband/sub/x", "/dev/infiniband/", "uverbs0"} {
		_, err := Parse("p.toml", []byte("[settings]\nfabric_devices = [\""+dev+"\"]\n"))
		if err == nil || !strings.Contains(err.Error(), "fabric_devices") {
			t.Errorf("fabric_devices %q: %v", dev, err)
		}
	}
	if _, err := Parse("p.toml", []byte("[settings]\nstep_containers = \"sometimes\"\n")); err == nil {
		t.Error("step_containers \"sometimes\" was accepted")
	}
}

type (
	specsMount  = specs.Mount
	specsDevice = specs.LinuxDevice
	specsRlimit = specs.POSIXRlimit
)

// TestPrivateRegistries: a listed host marks its images' decisions; an
// entry that is no registry host is the admin's mistake, with its line.
func TestPrivateRegistries(t *testing.T) {
	for _, bad := range []string{"https://nvcr.io", "nvcr.io/nvidia", "NVCR.IO", "", "host:port"} {
		_, err := Parse("p.toml", []byte("[settings]\nprivate_registries = [\""+bad+"\"]\n"))
		if err == nil || !strings.Contains(err.Error(), "p.toml:2: private_registries") {
			t.Errorf("private_registries = [%q]: %v", bad, err)
		}
	}
	p, err := Parse("p.toml", []byte("[settings]\nprivate_registries = [\"nvcr.io\", \"registry.lab:5000\"]\n[defaults]\nimages_allow = [\"**\"]\noutside_jobs = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	for image, private := range map[string]bool{"nvcr.io/nvidia/pytorch:24.05-py3": true, "registry.lab:5000/team/x:1": true, "registry.lab/team/x:1": false, "alpine:3.20": false} {
		d, err := p.Decide(Request{Image: image, Cmd: []string{"true"}}, Caller{User: "u", UID: 1000, GID: 1000}, Job{})
		if err != nil {
			t.Fatalf("%s: %v", image, err)
		}
		if d.PrivateRegistry != private {
			t.Errorf("%s: PrivateRegistry %v, want %v", image, d.PrivateRegistry, private)
		}
	}
}
