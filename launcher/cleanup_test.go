package launcher

import (
	"context"
	"errors"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// removeEngine answers remove with a fixed error, and inspect with "gone"
// once inspects reaches goneAfter.
type removeEngine struct {
	Engine
	removeErr error
	goneAfter int
	inspects  int
}

func (e *removeEngine) ContainerRemove(context.Context, string, client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	return client.ContainerRemoveResult{}, e.removeErr
}

func (e *removeEngine) ContainerInspect(context.Context, string, client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	e.inspects++
	if e.inspects >= e.goneAfter {
		return client.ContainerInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such container")
	}
	return client.ContainerInspectResult{}, nil
}

// TestRemoveAllIsIdempotent: two epilogues of one job at once; the one
// that finds the removal in progress succeeds once the container is gone,
// as does one that finds it gone already.
func TestRemoveAllIsIdempotent(t *testing.T) {
	inProgress := cerrdefs.ErrConflict.WithMessage("removal of container abc is already in progress")
	tests := []struct {
		name    string
		eng     *removeEngine
		wantErr bool
	}{
		{"already gone", &removeEngine{removeErr: cerrdefs.ErrNotFound.WithMessage("no such container")}, false},
		{"removal in progress, then gone", &removeEngine{removeErr: inProgress, goneAfter: 3}, false},
		{"a real failure", &removeEngine{removeErr: errors.New("driver failed to remove root filesystem")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := RemoveAll(context.Background(), tt.eng, []Managed{{ID: "abc"}})
			if (errs["abc"] != nil) != tt.wantErr {
				t.Fatalf("RemoveAll: %v, want error %v", errs["abc"], tt.wantErr)
			}
		})
	}
}
