package launcher

import (
	"context"
	"fmt"
	"io"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/hint"
)

// Attach streams the output a running container writes from now on, until
// it exits (ended is true and code is its exit status) or ctx ends, which
// detaches and leaves the container running. Stdin is never attached: the
// container's input belongs to the step that started it.
func Attach(ctx context.Context, eng Engine, id string, stdout, stderr io.Writer) (code int, ended bool, err error) {
	c, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return 0, false, err
	}
	if c.Container.State == nil || !c.Container.State.Running {
		return 0, false, hint.Errorf("see containerjob logs", "container %.12s is not running", id)
	}
	att, err := eng.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return 0, false, fmt.Errorf("attaching to %.12s failed: %v", id, err)
	}
	defer att.Close()
	waitRes := eng.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.Container.Config != nil && c.Container.Config.Tty {
			io.Copy(stdout, att.Reader)
		} else {
			stdcopy.StdCopy(stdout, stderr, att.Reader)
		}
	}()
	select {
	case w := <-waitRes.Result:
		<-done // the stream ends with the container; flush what is left
		return int(w.StatusCode), true, nil
	case err := <-waitRes.Error:
		if ctx.Err() != nil {
			return 0, false, nil
		}
		return 0, false, err
	case <-ctx.Done():
		return 0, false, nil
	}
}
