//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envImage is the test image with what NGC images have: ENV variables a
// job's environment also sets, and a WORKDIR holding a script run as
// ./run.sh. Made from the local test image with docker commit (no
// builder needed, the same on both lanes); the policy allows alpine:*.
const envImage = "alpine:cjtest-env"

func makeEnvImage(t *testing.T) {
	t.Helper()
	name := "cjtest-env-build"
	exec.Command("docker", "rm", "-f", name).Run()
	if out, err := exec.Command("docker", "run", "--name", name, "alpine:3.20", "sh", "-c",
		`mkdir -p /workspace && printf '#!/bin/sh\necho "run.sh in $(pwd)"\n' > /workspace/run.sh && chmod 755 /workspace/run.sh`).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v %s", envImage, err, out)
	}
	defer exec.Command("docker", "rm", "-f", name).Run()
	t.Cleanup(func() { exec.Command("docker", "rmi", envImage).Run() })
	if out, err := exec.Command("docker", "commit", "-c", "ENV NCCL_DEBUG=WARN", "-c", "ENV CJ_IMAGE_ONLY=image", "-c", "WORKDIR /workspace",
		name, envImage).CombinedOutput(); err != nil {
		t.Fatalf("committing %s: %v %s", envImage, err, out)
	}
}

// TestPyxisImageEnvAndWorkdir: under --container-image the image's ENV
// wins over the job's environment for every variable it sets, unless
// --container-env names it, and the step starts in the image's WORKDIR
// (./run.sh there runs), for srun and #SBATCH alike, as pyxis 0.24 does;
// --container-mounts="$PWD:$PWD" in the job directory is the job
// directory's own mount. The previous binary gave the job's NCCL_DEBUG,
// started in the submit directory (./run.sh not found) and refused
// $PWD:$PWD.
func TestPyxisImageEnvAndWorkdir(t *testing.T) {
	t.Parallel()
	makeEnvImage(t)
	dir := jobDir(t, alice)
	r := as(t, alice, dir, `export NCCL_DEBUG=INFO CJ_JOB_ONLY=job
srun --container-image=`+envImage+` sh -c 'echo "env $NCCL_DEBUG $CJ_IMAGE_ONLY $CJ_JOB_ONLY"; ./run.sh'
srun --container-image=`+envImage+` --container-env=NCCL_DEBUG sh -c 'echo "asked $NCCL_DEBUG"'
srun --container-image=`+envImage+` --container-workdir=/tmp pwd
srun --container-image=alpine:3.20 --container-mounts="$PWD:$PWD" sh -c 'cd "$0" && ls' "$PWD"
echo "done $?"`)
	for _, want := range []string{"env WARN image job\n", "run.sh in /workspace\n", "asked INFO\n", "/tmp\n", "done 0\n"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("no %q in stdout %q (stderr %q)", want, r.Stdout, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, "already taken") {
		t.Errorf("$PWD:$PWD refused: %q", r.Stderr)
	}
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH --container-image="+envImage+"\n#SBATCH -o out-%j.txt\nexport NCCL_DEBUG=INFO\n./run.sh\necho \"batch $NCCL_DEBUG\"\n")
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	// In the batch script, the script's own export is a shell variable of
	// the container's shell: it holds from there on.
	for _, want := range []string{"run.sh in /workspace\n", "batch INFO\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("batch script output %q lacks %q", out, want)
		}
	}
}

// TestPyxisEntrypointOutput: as under pyxis, the image's entrypoint runs
// before the step's command and its own output stays out of the job's
// unless --container-entrypoint-log (or PYXIS_CONTAINER_ENTRYPOINT_LOG)
// asks, in plain and named containers alike; the command's output is
// whole. The previous binary put the banner in the job's output.
func TestPyxisEntrypointOutput(t *testing.T) {
	t.Parallel()
	const img = "alpine:cjtest-banner"
	name := "cjtest-banner-build"
	exec.Command("docker", "rm", "-f", name).Run()
	if out, err := exec.Command("docker", "run", "--name", name, "alpine:3.20", "sh", "-c",
		`printf '#!/bin/sh\necho banner-out\necho banner-err >&2\nexport FROM_EP=set\nexec "$@"\n' > /ep.sh && chmod 755 /ep.sh`).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v %s", img, err, out)
	}
	defer exec.Command("docker", "rm", "-f", name).Run()
	t.Cleanup(func() { exec.Command("docker", "rmi", img).Run() })
	if out, err := exec.Command("docker", "commit", "-c", `ENTRYPOINT ["/ep.sh"]`, name, img).CombinedOutput(); err != nil {
		t.Fatalf("committing %s: %v %s", img, err, out)
	}
	// An entrypoint that never runs the command it is given.
	const echoImg = "alpine:cjtest-echo-ep"
	t.Cleanup(func() { exec.Command("docker", "rmi", echoImg).Run() })
	if out, err := exec.Command("docker", "commit", "-c", `ENTRYPOINT ["/bin/echo", "ep:"]`, name, echoImg).CombinedOutput(); err != nil {
		t.Fatalf("committing %s: %v %s", echoImg, err, out)
	}
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt
#SBATCH -e err-%j.txt
srun --container-image=`+img+` sh -c 'echo "quiet $FROM_EP"; echo quiet-err >&2'
srun --container-image=`+img+` --container-name=work sh -c 'echo "named $FROM_EP"'
srun --container-image=`+img+` --container-entrypoint-log echo shown
PYXIS_CONTAINER_ENTRYPOINT_LOG=1 srun --container-image=`+img+` echo shown-by-env
echo "done $?"
srun --container-image=`+echoImg+` echo never-runs; echo "echo-ep $?"
`)
	if state, _ := waitJob(t, id, 2*time.Minute); state != "COMPLETED" {
		t.Errorf("job %s: %s", id, state)
	}
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	errOut := readOutput(t, filepath.Join(dir, "err-"+id+".txt"))
	for _, want := range []string{"quiet set\n", "named set\n", "banner-out\nshown\n", "banner-out\nshown-by-env\n", "done 0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout %q lacks %q (stderr %q)", out, want, errOut)
		}
	}
	if n := strings.Count(out, "banner-out"); n != 2 {
		t.Errorf("the entrypoint's banner %d times in %q; want only the two steps that asked", n, out)
	}
	if n := strings.Count(errOut, "banner-err"); n != 2 || !strings.Contains(errOut, "quiet-err\n") {
		t.Errorf("stderr %q: want the command's own and two banners", errOut)
	}
	// pyxis: "container exited too soon", the step fails, the log is shown.
	if !strings.Contains(out, "echo-ep 125\n") || strings.Contains(out, "\nnever-runs") ||
		!strings.Contains(errOut, "the image's entrypoint ended (exit 0) before your command started") || !strings.Contains(errOut, "ep: /bin/sh -c") {
		t.Errorf("an entrypoint that never runs the command: stdout %q stderr %q", out, errOut)
	}
}
