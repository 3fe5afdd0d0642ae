package node

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
	"github.com/containerjob/containerjob/scheduler"
)

// ExistingImage stands for the image of an Existing launch until the named
// container's own image is known; it is never judged or run.
const ExistingImage = "containerjob.invalid/existing:named"

// existingNamedImage is the image of the caller's container called name in
// the verified job on this node, as the policy approved it when the
// container was created (the policy judges it again now). Without such a
// container the step is refused, never run on the host.
func existingNamedImage(ctx context.Context, eng launcher.Engine, caller policy.Caller, job scheduler.Job, name string) (string, error) {
	refuse := func(why string) error {
		return &policy.Refusal{Item: fmt.Sprintf("--container-name %q without --container-image (%s)", name, why),
			Reason: "is refused", Rule: policy.Origin{Table: "built-in", Key: "named-container"}, Hint: "name the image (--container-image) on the step that creates the container"}
	}
	if job.ID == "" {
		return "", refuse("outside a job there are no named containers")
	}
	cs, err := launcher.ListManaged(ctx, eng, job.Scheduler, job.ID)
	if err != nil {
		return "", fmt.Errorf("looking up container %q: %v", name, err)
	}
	uid := strconv.FormatUint(uint64(caller.UID), 10)
	for _, c := range cs {
		if c.UID == uid && c.ShortName == name && c.Image != "" && c.OnNode(job.Node) {
			return c.Image, nil
		}
	}
	return "", refuse(fmt.Sprintf("job %s has no container of that name on this node", job.ID))
}
