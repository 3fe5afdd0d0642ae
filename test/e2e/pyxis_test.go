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
