//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerjob/containerjob/internal/testutil"
)

// TestImagePinnedForTheJob: a tag pushed while a two-node job runs does not
// split it. The first step (on the batch host alone) pins the tag's digest
// for the job; then the tag moves, in the registry and on the node's
// engine, which both nodes share; the next steps, on both nodes and in
// both forms, still run the first image: the plugin's srun resolves on the
// batch host and hands the pin to every task, and each node keeps its
// pin. The audit trail carries the reference and the digest. Not
// parallel: it installs its own policy for its duration.
func TestImagePinnedForTheJob(t *testing.T) {
	testutil.StartRegistry(t, "127.0.0.1:5057")
	const ref = "127.0.0.1:5057/cjtest/pin:1"
	testutil.PushImage(t, ref, "first")
	pol := testPolicy + `
[user.cjalice]
images_allow = ["127.0.0.1:5057/cjtest/*"]
pull = ["missing"]
`
	usePolicy(t, pol)
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, `#!/bin/sh
#SBATCH -o out-%j.txt -N2 -p all
srun -N1 -n1 -w $(hostname -s) --container-image=`+ref+` sh -c 'echo "step1 $(cat /marker)"'
touch pinned
while [ ! -e pushed ]; do sleep 0.2; done
srun -N2 --ntasks-per-node=1 --container-image=`+ref+` sh -c 'echo "step2 $(cat /marker)"'
srun -N2 --ntasks-per-node=1 containerjob `+ref+` sh -c 'echo "step3 $(cat /marker)"'
`)
	defer cancelAndClean(t, alice, dir, id)
	waitFor(t, 2*time.Minute, "the first step", func() bool {
		_, err := os.Stat(filepath.Join(dir, "pinned"))
		return err == nil
	})
	// The tag moves: a new image in the registry and under the tag on the
	// engine both nodes use.
	testutil.PushImage(t, ref, "second", "keep")
	if err := os.WriteFile(filepath.Join(dir, "pushed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	state, _ := waitJob(t, id, 3*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "COMPLETED" || strings.Count(out, "step1 first\n") != 1 || strings.Count(out, "step2 first\n") != 2 ||
		strings.Count(out, "step3 first\n") != 2 || strings.Contains(out, "second") {
		t.Errorf("job %s %s; output %q; want every step on both nodes to run the first image", id, state, out)
	}
	trail, _ := os.ReadFile("/var/log/containerjob/audit.log")
	pinned := false
	for _, l := range strings.Split(string(trail), "\n") {
		if strings.Contains(l, `"job":"`+id+`"`) && strings.Contains(l, `"image_requested":"`+ref+`"`) && strings.Contains(l, `"image":"127.0.0.1:5057/cjtest/pin@sha256:`) {
			pinned = true
		}
	}
	if !pinned {
		t.Errorf("the audit trail has no record of job %s with the requested reference and its digest", id)
	}
}

// TestPrologPrefetchesTheImage: with #SBATCH --container-image, the job's
// Prolog (PrologFlags=Alloc) pulls the image for the job's owner and pins
// it before the first step, which then finds it on the node. Not
// parallel: it installs its own policy for its duration.
func TestPrologPrefetchesTheImage(t *testing.T) {
	testutil.StartRegistry(t, "127.0.0.1:5060")
	const ref = "127.0.0.1:5060/cjtest/prefetch:1"
	testutil.PushImage(t, ref, "prefetched")
	usePolicy(t, testPolicy+`
[user.cjalice]
images_allow = ["127.0.0.1:5060/cjtest/*"]
pull = ["missing"]
`)
	dir := jobDir(t, alice)
	id := sbatch(t, alice, dir, "#!/bin/sh\n#SBATCH --container-image="+ref+"\n#SBATCH -o out-%j.txt -p main\ncat /marker\n")
	state, _ := waitJob(t, id, 3*time.Minute)
	out := readOutput(t, filepath.Join(dir, "out-"+id+".txt"))
	if state != "COMPLETED" || !strings.HasPrefix(out, "prefetched\n") || strings.Contains(out, "containerjob: pulling") {
		t.Errorf("job %s %s, output %q; want the image's marker and no pull by the step", id, state, out)
	}
	trail, _ := os.ReadFile("/var/log/containerjob/audit.log")
	found := false
	for _, l := range strings.Split(string(trail), "\n") {
		if strings.Contains(l, `"msg":"prefetched"`) && strings.Contains(l, `"job":"`+id+`"`) && strings.Contains(l, `"image":"127.0.0.1:5060/cjtest/prefetch@sha256:`) {
			found = true
		}
	}
	if !found {
		t.Errorf("the audit trail has no prefetch of job %s's image", id)
	}
}
