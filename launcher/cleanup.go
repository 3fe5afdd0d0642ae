package launcher

import (
	"context"
	"fmt"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

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
}

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
