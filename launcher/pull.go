package launcher

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// Pull fetches ref (normalized, already approved) and reports progress to
// w: on a terminal one line rewritten in place, in a job's log plain lines,
// one per layer event, never the engine's per-chunk ticks. It returns the
// image ID the name now points at and the bytes downloaded. auth is the caller's own credentials
// for ref's registry, encoded for the engine ("" for none); socket is the
// engine's socket path, under which the pull is recorded for gc --images.
func Pull(ctx context.Context, eng Engine, ref, auth, socket string, w io.Writer, terminal bool) (id string, bytes int64, err error) {
	unlock, waited, err := lockPull(ctx, ref, func() {
		fmt.Fprintf(w, "containerjob: pull %s: waiting for another launch's pull on this node\n", ref)
	})
	if err != nil {
		return "", 0, err
	}
	defer unlock()
	if waited {
		if img, err := eng.ImageInspect(ctx, ref); err == nil {
			return img.ID, 0, nil
		}
	}
	before := imagesBefore(ctx, eng)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	resp, err := eng.ImagePull(pctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return "", 0, fmt.Errorf("pulling image %q failed: %v", ref, err)
	}
	pr := newPullProgress(ref)
	last := time.Time{}
	for msg, err := range resp.JSONMessages(pctx) {
		if err != nil {
			return "", 0, fmt.Errorf("pulling image %q failed: %v", ref, err)
		}
		if msg.Error != nil {
			return "", 0, fmt.Errorf("pulling image %q failed: %s", ref, msg.Error.Message)
		}
		line, changed := pr.update(msg)
		switch {
		case terminal && (changed || time.Since(last) > 200*time.Millisecond):
			fmt.Fprintf(w, "\r\033[K%s", pr.summary())
			last = time.Now()
		case !terminal && line != "":
			fmt.Fprintln(w, line)
		}
	}
	if terminal {
		fmt.Fprintf(w, "\r\033[K%s\n", pr.summary())
	}
	img, err := eng.ImageInspect(ctx, ref)
	if err != nil {
		return "", 0, fmt.Errorf("image %q is not available after the pull: %v", ref, err)
	}
	markPulledNew(socket, img.ID, ref, before)
	return img.ID, pr.downloaded(), nil
}

// pullProgress folds the engine's pull messages into per-layer state.
type pullProgress struct {
	ref    string
	layers map[string]*layerState
	status string // the last message without a layer (digest, "up to date")
}

type layerState struct {
	status         string
	current, total int64
	downloaded     int64 // the largest total seen while "Downloading"
}

// downloaded is the bytes of the layers the pull downloaded: each one's
// largest total while "Downloading"; a layer the node had is not counted.
func (p *pullProgress) downloaded() int64 {
	var sum int64
	for _, l := range p.layers {
		sum += l.downloaded
	}
	return sum
}

func newPullProgress(ref string) *pullProgress {
	return &pullProgress{ref: ref, layers: map[string]*layerState{}}
}

// update records msg and returns the plain line to log for it ("" for a
// progress tick or a repeated status) and whether the status changed.
func (p *pullProgress) update(msg jsonstream.Message) (string, bool) {
	if msg.ID == "" || strings.HasPrefix(msg.Status, "Pulling from") {
		if msg.Status == "" {
			return "", false
		}
		p.status = msg.Status
		return "containerjob: pull " + p.ref + ": " + msg.Status, true
	}
	l, ok := p.layers[msg.ID]
	if !ok {
		l = &layerState{}
		p.layers[msg.ID] = l
	}
	if msg.Progress != nil {
		l.current, l.total = msg.Progress.Current, msg.Progress.Total
		if msg.Status == "Downloading" && l.total > l.downloaded {
			l.downloaded = l.total
		}
	}
	if l.status == msg.Status {
		return "", false
	}
	l.status = msg.Status
	return "containerjob: pull " + p.ref + ": layer " + msg.ID + ": " + msg.Status, true
}

// summary is the one-line terminal display.
func (p *pullProgress) summary() string {
	ids := make([]string, 0, len(p.layers))
	for id := range p.layers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	done := 0
	var cur, total int64
	for _, id := range ids {
		l := p.layers[id]
		switch l.status {
		case "Pull complete", "Already exists":
			done++
		case "Downloading":
			cur, total = cur+l.current, total+l.total
		}
	}
	s := fmt.Sprintf("pulling %s: %d/%d layers", p.ref, done, len(ids))
	if total > 0 {
		s += fmt.Sprintf(", downloading %.1f/%.1f MiB", float64(cur)/(1<<20), float64(total)/(1<<20))
	}
	if p.status != "" && strings.HasPrefix(p.status, "Status:") {
		s += "; " + strings.TrimPrefix(p.status, "Status: ")
	}
	return s
}
