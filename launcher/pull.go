package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// pullRequest is one pull through fetch.
type pullRequest struct {
	ref    string // normalised, already approved
	socket string // the engine's socket path: whose pulls gc --images collects
	// waiting is told that another launch's pull of ref holds the lock.
	waiting func()
	// auth gives the credentials for the pull once it is known to be
	// needed (the lock held, the image still missing); an error stops it.
	auth func() (string, error)
	// started is told once the engine accepted the pull (may be nil).
	started func()
	// shown is each progress message as pullProgress folds it: a line
	// for a job's log ("" for none), changed when a layer's state did
	// (may be nil).
	shown func(pr *pullProgress, line string, changed bool)
}

// pullError is a pull the engine refused or failed; request: it refused
// to start it (the caller may add why its credentials were not used).
type pullError struct {
	ref     string
	err     error
	request bool
}

func (e *pullError) Error() string { return fmt.Sprintf("pulling image %q failed: %v", e.ref, e.err) }
func (e *pullError) Unwrap() error { return e.err }

// fetch is the node's one way into an engine pull, for a launch, the
// Prolog's prefetch and containerjob pull alike: one pull per image and
// node (whoever holds the pull lock pulls; the others wait, bounded, and
// take what it pulled), the pull followed to its end within 30 minutes,
// and the image recorded as containerjob's for gc --images. It returns
// the image and, when this call pulled it, its progress (nil when
// another's pull provided it).
func fetch(ctx context.Context, eng Engine, p pullRequest) (client.ImageInspectResult, *pullProgress, error) {
	var none client.ImageInspectResult
	inspect := func() (client.ImageInspectResult, error) {
		ictx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		return eng.ImageInspect(ictx, p.ref)
	}
	unlock, waited, err := lockPull(ctx, p.ref, p.waiting)
	if err != nil {
		return none, nil, err
	}
	defer unlock()
	if waited {
		if img, err := inspect(); err == nil {
			return img, nil, nil
		}
	}
	auth, err := p.auth()
	if err != nil {
		return none, nil, err
	}
	before := imagesBefore(ctx, eng)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	resp, err := eng.ImagePull(pctx, p.ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return none, nil, &pullError{ref: p.ref, err: err, request: true}
	}
	defer resp.Close()
	if p.started != nil {
		p.started()
	}
	pr := newPullProgress(p.ref)
	for m, err := range resp.JSONMessages(pctx) {
		if err != nil {
			return none, nil, &pullError{ref: p.ref, err: err}
		}
		if m.Error != nil {
			return none, nil, &pullError{ref: p.ref, err: errors.New(m.Error.Message)}
		}
		line, changed := pr.update(m)
		if p.shown != nil {
			p.shown(pr, line, changed)
		}
	}
	img, err := inspect()
	if err != nil {
		return none, nil, fmt.Errorf("image %q is not available after the pull: %v", p.ref, err)
	}
	markPulledNew(p.socket, img.ID, p.ref, before)
	return img, pr, nil
}

// Pull fetches ref (normalized, already approved) for containerjob pull and
// reports progress to w: on a terminal one line rewritten in place, in a
// job's log plain lines, one per layer event, never the engine's
// per-chunk ticks. It returns the image ID the name now points at and the
// bytes downloaded. auth is the caller's own credentials for ref's
// registry, encoded for the engine ("" for none); socket is the engine's
// socket path, under which the pull is recorded for gc --images.
func Pull(ctx context.Context, eng Engine, ref, auth, socket string, w io.Writer, terminal bool) (id string, bytes int64, err error) {
	last := time.Time{}
	img, pr, err := fetch(ctx, eng, pullRequest{ref: ref, socket: socket,
		waiting: func() {
			fmt.Fprintf(w, "containerjob: pull %s: waiting for another launch's pull on this node\n", ref)
		},
		auth: func() (string, error) { return auth, nil },
		shown: func(pr *pullProgress, line string, changed bool) {
			switch {
			case terminal && (changed || time.Since(last) > 200*time.Millisecond):
				fmt.Fprintf(w, "\r\033[K%s", pr.summary())
				last = time.Now()
			case !terminal && line != "":
				fmt.Fprintln(w, line)
			}
		}})
	if err != nil || pr == nil {
		return img.ID, 0, err
	}
	if terminal {
		fmt.Fprintf(w, "\r\033[K%s\n", pr.summary())
	}
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
