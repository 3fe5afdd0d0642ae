package enginetest

import (
	"context"
	"fmt"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

func create(t *testing.T, e *Engine, name string, cmd ...string) string {
	t.Helper()
	r, err := e.ContainerCreate(context.Background(), client.ContainerCreateOptions{Name: name,
		Config: &container.Config{Image: "docker.io/library/alpine:3.20", Cmd: cmd}, HostConfig: &container.HostConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// TestEngineAnswersAsTheEngine: what containerjob relies on a real engine
// for: not-found and conflict errors it can tell apart, a program's exit
// code through the wait, and no start of a removed container.
func TestEngineAnswersAsTheEngine(t *testing.T) {
	ctx := context.Background()
	e := New(t)
	if _, err := e.ImageInspect(ctx, "ubuntu:24.04"); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect of a missing image = %v, want not found", err)
	}
	e.Program["exit"] = func(p *Proc) int { fmt.Fprintln(p.Stdout, "bye"); return 7 }
	id := create(t, e, "named", "exit")
	if _, err := e.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "named",
		Config: &container.Config{Image: "docker.io/library/alpine:3.20"}, HostConfig: &container.HostConfig{}}); !cerrdefs.IsConflict(err) {
		t.Errorf("a second container of the same name = %v, want a conflict", err)
	}
	w := e.ContainerWait(ctx, id, client.ContainerWaitOptions{})
	if _, err := e.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-w.Result:
		if r.StatusCode != 7 {
			t.Errorf("exit %d, want the program's 7", r.StatusCode)
		}
	case err := <-w.Error:
		t.Fatal(err)
	}
	if _, err := e.ContainerRemove(ctx, id, client.ContainerRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ContainerStart(ctx, id, client.ContainerStartOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("start of a removed container = %v, want not found", err)
	}
	if e.Count("ContainerStart") != 2 || len(e.Live()) != 0 {
		t.Errorf("calls %v, live %d", e.Calls, len(e.Live()))
	}
}

// recorder is a test whose cleanups and errors are kept, to see what New
// says at a test's end.
type recorder struct {
	testing.TB
	cleanups []func()
	errs     []string
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

// TestNewFailsATestThatLeavesAContainer: an unnamed container left behind
// fails the test; a named one, a removed one and one with a kept label
// do not.
func TestNewFailsATestThatLeavesAContainer(t *testing.T) {
	for _, tc := range []struct {
		name, container, label string
		remove, fails          bool
	}{
		{"unnamed, left", "", "", false, true},
		{"unnamed, removed", "", "", true, false},
		{"named, left", "keeper", "", false, false},
		{"kept label", "", "probe", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			e := New(r, "probe")
			opts := client.ContainerCreateOptions{Name: tc.container, Config: &container.Config{Image: "docker.io/library/alpine:3.20",
				Labels: map[string]string{}}, HostConfig: &container.HostConfig{}}
			if tc.label != "" {
				opts.Config.Labels[tc.label] = "1"
			}
			c, err := e.ContainerCreate(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.remove {
				e.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{})
			}
			for _, f := range r.cleanups {
				f()
			}
			if failed := len(r.errs) > 0; failed != tc.fails {
				t.Errorf("the test's end said %q, want failure %v", r.errs, tc.fails)
			}
		})
	}
}
