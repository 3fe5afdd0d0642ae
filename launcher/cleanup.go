package launcher

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/policy"
)

// Managed is one container containerjob created, as the engine lists it.
// Only labels containerjob set are read; users cannot set labels.
type Managed struct {
	ID        string
	Name      string
	State     string
	Created   time.Time
	User      string
	UID       string
	Job       string
	Scheduler string
	ShortName string // the name the user gave with --name, if any
	Image     string // the reference the policy approved
	GPUs      string // allocated GPU devices, comma-separated
	Output    string // "direct" where the engine has none of its output
	Step      string // the job step that created it
	Node      string // the node it was created for
}

// OnNode: a container of node (nodes that share one engine each act on
// their own only), or one from before containers were labelled with
// their node.
func (m Managed) OnNode(node string) bool { return m.Node == "" || m.Node == node }

// ListManaged lists containerjob's containers, optionally only those of
// one job of one scheduler.
func ListManaged(ctx context.Context, eng Engine, scheduler, job string) ([]Managed, error) {
	f := client.Filters{}
	f.Add("label", policy.LabelManaged+"=1")
	if job != "" {
		f.Add("label", policy.LabelJob+"="+job)
		f.Add("label", policy.LabelScheduler+"="+scheduler)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	res, err := eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	out := make([]Managed, 0, len(res.Items))
	for _, c := range res.Items {
		m := Managed{
			ID: c.ID, State: string(c.State), Created: time.Unix(c.Created, 0),
			User: c.Labels[policy.LabelUser], UID: c.Labels[policy.LabelUID],
			Job: c.Labels[policy.LabelJob], Scheduler: c.Labels[policy.LabelScheduler],
			ShortName: c.Labels[policy.LabelName], Image: c.Labels[policy.LabelImage], GPUs: c.Labels[policy.LabelGPUs], Output: c.Labels[policy.LabelOutput],
			Step: c.Labels[policy.LabelStep], Node: c.Labels[policy.LabelNode],
		}
		if len(c.Names) > 0 {
			m.Name = c.Names[0]
		}
		out = append(out, m)
	}
	return out, nil
}

// removeConcurrency bounds parallel removals: the engine serialises much
// of the work anyway, and an epilogue must not swamp it.
const removeConcurrency = 8

// RemoveAll force-removes the containers in parallel and reports, for
// each, nil or the error. Already gone counts as removed.
func RemoveAll(ctx context.Context, eng Engine, cs []Managed) map[string]error {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, removeConcurrency)
		errs = make(map[string]error, len(cs))
	)
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func(c Managed) {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, apiTimeout)
			defer cancel()
			_, err := eng.ContainerRemove(rctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			if err != nil && cerrdefs.IsNotFound(err) {
				err = nil
			}
			if err != nil && cerrdefs.IsConflict(err) {
				// Another remover (a second epilogue of the job, gc) is at
				// it: done when the container is gone.
				err = awaitGone(rctx, eng, c.ID, err)
			}
			if err != nil {
				err = fmt.Errorf("removing %.12s: %w", c.ID, err)
			}
			mu.Lock()
			errs[c.ID] = err
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	return errs
}

// awaitGone waits for a container that someone else is removing to be
// gone; cause is returned when it is still there when ctx ends.
func awaitGone(ctx context.Context, eng Engine, id string, cause error) error {
	for {
		_, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return cause
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops a container: SIGTERM, then SIGKILL after grace seconds.
func Stop(ctx context.Context, eng Engine, id string, grace int) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout+time.Duration(grace)*time.Second)
	defer cancel()
	_, err := eng.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &grace})
	return err
}

// Kill sends a signal (by name, e.g. SIGUSR1) to a container.
func Kill(ctx context.Context, eng Engine, id, sig string) error {
	if !signalNameRE.MatchString(sig) {
		return fmt.Errorf("signal %q is not a signal name such as SIGTERM", sig)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := eng.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: sig})
	return err
}

var signalNameRE = regexp.MustCompile(`^(SIG)?[A-Z0-9+-]{2,12}$`)

// OwnInfo is what a user may see of their container: nothing of the host's
// configuration beyond what they asked for and were given.
type OwnInfo struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	Image     string            `json:"image"`
	State     string            `json:"state"`
	ExitCode  int               `json:"exit_code"`
	OOMKilled bool              `json:"oom_killed"`
	Started   string            `json:"started_at,omitempty"`
	Finished  string            `json:"finished_at,omitempty"`
	User      string            `json:"user"`
	Cmd       []string          `json:"command"`
	Workdir   string            `json:"workdir"`
	Mounts    []string          `json:"mounts"`
	CPUs      string            `json:"cpus,omitempty"`
	Memory    int64             `json:"memory_bytes,omitempty"`
	Devices   []string          `json:"devices,omitempty"`
	Labels    map[string]string `json:"labels"`
}

// InspectOwn returns the safe subset of a container's inspect data.
func InspectOwn(ctx context.Context, eng Engine, id string) (OwnInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	r, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return OwnInfo{}, err
	}
	c := r.Container
	info := OwnInfo{ID: c.ID, Name: c.Config.Labels[policy.LabelName], Image: c.Config.Labels[policy.LabelImage],
		User: c.Config.User, Cmd: append(append([]string{}, c.Config.Entrypoint...), c.Config.Cmd...), Workdir: c.Config.WorkingDir, Labels: map[string]string{}}
	if c.State != nil {
		info.State, info.ExitCode, info.OOMKilled, info.Started, info.Finished = string(c.State.Status), c.State.ExitCode, c.State.OOMKilled, c.State.StartedAt, c.State.FinishedAt
	}
	for k, v := range c.Config.Labels {
		if strings.HasPrefix(k, "org.containerjob.") {
			info.Labels[k] = v
		}
	}
	if h := c.HostConfig; h != nil {
		for _, m := range h.Mounts {
			mode := "rw"
			if m.ReadOnly {
				mode = "ro"
			}
			info.Mounts = append(info.Mounts, m.Source+":"+m.Target+":"+mode)
		}
		info.CPUs, info.Memory = h.CpusetCpus, h.Memory
		for _, d := range h.Devices {
			info.Devices = append(info.Devices, d.PathOnHost)
		}
	}
	return info, nil
}

// Logs copies a container's kept output (stdout and stderr, demultiplexed).
// With container_logs = none the engine keeps none: the output is only in
// the job's log.
func Logs(ctx context.Context, eng Engine, id string, stdout, stderr io.Writer) error {
	c, err := eng.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	if h := c.Container.HostConfig; h != nil && h.LogConfig.Type == "none" {
		return hint.Errorf("read your job's output file", "the engine keeps no output for this container (container_logs = none in the policy)")
	}
	rc, err := eng.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err
	}
	defer rc.Close()
	if c.Container.Config != nil && c.Container.Config.Tty {
		_, err = io.Copy(stdout, rc)
	} else {
		_, err = stdcopy.StdCopy(stdout, stderr, rc)
	}
	return err
}

// Images lists the references of the images on this node.
func Images(ctx context.Context, eng Engine) ([]ImageInfo, error) {
	res, err := eng.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil, err
	}
	var out []ImageInfo
	for _, im := range res.Items {
		for _, tag := range im.RepoTags {
			out = append(out, ImageInfo{Ref: tag, ID: im.ID, Size: im.Size, Created: time.Unix(im.Created, 0)})
		}
	}
	return out, nil
}

// ImageInfo is one tagged image on the node.
type ImageInfo struct {
	Ref     string
	ID      string
	Size    int64
	Created time.Time
}

// RemoveCommitted removes the images containerjob committed from a job's
// named containers on node (recreated for a step with other mounts or
// another allocation), once the job is over. It returns what it removed
// and the first error.
func RemoveCommitted(ctx context.Context, eng Engine, scheduler, job, node string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	items, err := committedImages(lctx, eng, node, policy.LabelJob+"="+job, policy.LabelScheduler+"="+scheduler)
	if err != nil {
		return nil, err
	}
	// Each recreation commits on top of the previous commit, which the
	// engine will not remove while a child of it exists: passes until
	// one removes nothing (removing a child prunes its untagged parents,
	// which then count as removed).
	var removed []string
	left := items
	var last error
	for len(left) > 0 {
		var next []image.Summary
		for _, img := range left {
			if _, err := eng.ImageRemove(lctx, img.ID, client.ImageRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				next = append(next, img)
				last = fmt.Errorf("removing the job's committed image %.19s: %v", img.ID, err)
				continue
			}
			removed = append(removed, img.ID)
		}
		if len(next) == len(left) {
			return removed, last
		}
		left = next
	}
	return removed, nil
}

// Committed is one image containerjob committed from a job's named
// container (RemoveCommitted).
type Committed struct {
	ID, Scheduler, Job, Node string
	Created                  time.Time
}

// ListCommitted lists the committed images of every job on node ("":
// any), for gc: the epilogue removes a job's, gc those an epilogue left.
func ListCommitted(ctx context.Context, eng Engine, node string) ([]Committed, error) {
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	items, err := committedImages(lctx, eng, node)
	if err != nil {
		return nil, err
	}
	var out []Committed
	for _, img := range items {
		l := img.Labels
		out = append(out, Committed{ID: img.ID, Scheduler: l[policy.LabelScheduler], Job: l[policy.LabelJob], Node: l[policy.LabelNode], Created: time.Unix(img.Created, 0)})
	}
	return out, nil
}

// committedImages lists the engine's committed images of node ("": any),
// intermediate ones included (a recreation commits on top of the last),
// with the labels ("KEY=VALUE") given besides.
func committedImages(ctx context.Context, eng Engine, node string, labels ...string) ([]image.Summary, error) {
	f := client.Filters{}
	f.Add("label", policy.LabelCommitted+"=1")
	if node != "" {
		f.Add("label", policy.LabelNode+"="+node)
	}
	for _, l := range labels {
		f.Add("label", l)
	}
	res, err := eng.ImageList(ctx, client.ImageListOptions{All: true, Filters: f})
	return res.Items, err
}
