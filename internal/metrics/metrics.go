// Package metrics keeps a node's containerjob counters and writes them for
// node_exporter's textfile collector, in Prometheus' text format (what the
// collector parses). The privileged processes of the node (launches, the
// epilogue, gc) each add what they did to one state file under a lock of
// its own, and rewrite the exposition whole (a temporary file renamed over
// the old one), so the collector never reads half of it and concurrent
// writers lose nothing. The lock is held only while the two small files
// are written, never while anything else is waited for; a writer that
// cannot have it within LockWait drops its update rather than delay a job.
package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/containerjob/containerjob/internal/nodefile"
)

// File is the exposition's name in the metrics directory.
const File = "containerjob.prom"

// LockWait bounds how long an update waits for another writer.
var LockWait = time.Second

// Buckets of the launch-phase and lock-wait histograms, in seconds.
var Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// State is what the node has counted since its metrics directory was made
// (a tmpfs forgets it at boot; Prometheus takes the reset).
type State struct {
	Launches   map[string]uint64     `json:"launches"`   // by outcome: ran, refused, failed
	Refusals   map[string]uint64     `json:"refusals"`   // by rule (file:key or built-in rule)
	Phases     map[string]*Histogram `json:"phases"`     // launch phases, seconds
	Pulls      uint64                `json:"pulls"`      // images pulled
	PullBytes  uint64                `json:"pull_bytes"` // their layers' bytes, where the engine said
	LockWaits  map[string]*Histogram `json:"lock_waits"` // by lock: launch, step, pull
	Removed    map[string]uint64     `json:"removed"`    // containers removed, by who: epilog, gc
	StoreBytes int64                 `json:"store_bytes"`
	StoreHigh  int64                 `json:"store_high"`
	StoreLow   int64                 `json:"store_low"`
	StoreSeen  bool                  `json:"store_seen"`
}

// Histogram is a cumulative histogram over Buckets.
type Histogram struct {
	Counts []uint64 `json:"counts"` // per bucket, not cumulative
	Count  uint64   `json:"count"`
	Sum    float64  `json:"sum"`
}

// Observe adds one value in seconds.
func (h *Histogram) Observe(v float64) {
	if len(h.Counts) != len(Buckets) {
		h.Counts = make([]uint64, len(Buckets))
	}
	for i, b := range Buckets {
		if v <= b {
			h.Counts[i]++
			break
		}
	}
	h.Count++
	h.Sum += v
}

func observe(m map[string]*Histogram, key string, d time.Duration) {
	h := m[key]
	if h == nil {
		h = &Histogram{}
		m[key] = h
	}
	h.Observe(d.Seconds())
}

func (s *State) init() {
	if s.Launches == nil {
		s.Launches = map[string]uint64{}
	}
	if s.Refusals == nil {
		s.Refusals = map[string]uint64{}
	}
	if s.Phases == nil {
		s.Phases = map[string]*Histogram{}
	}
	if s.LockWaits == nil {
		s.LockWaits = map[string]*Histogram{}
	}
	if s.Removed == nil {
		s.Removed = map[string]uint64{}
	}
}

// Launch counts one launch: outcome ran, refused or failed; rule, for a
// refusal; phases, the durations of its phases by name.
func (s *State) Launch(outcome, rule string, phases map[string]time.Duration) {
	s.Launches[outcome]++
	if outcome == "refused" && rule != "" {
		s.Refusals[rule]++
	}
	for name, d := range phases {
		observe(s.Phases, name, d)
	}
}

// Pull counts one pull of bytes (0: not known).
func (s *State) Pull(bytes int64) {
	s.Pulls++
	if bytes > 0 {
		s.PullBytes += uint64(bytes)
	}
}

// LockWait records a wait for a lock of the node.
func (s *State) LockWait(lock string, d time.Duration) { observe(s.LockWaits, lock, d) }

// Removed counts containers removed by who (epilog, gc).
func (s *State) RemovedBy(who string, n int) {
	if n > 0 {
		s.Removed[who] += uint64(n)
	}
}

// ImageStore records the image store's use against its watermarks.
func (s *State) ImageStore(used, high, low int64) {
	s.StoreBytes, s.StoreHigh, s.StoreLow, s.StoreSeen = used, high, low, true
}

// Update applies fn to the node's state in dir and rewrites the exposition.
// dir "" (metrics off) does nothing. An update that cannot take the lock
// within LockWait is dropped, and said so in the error.
func Update(dir string, fn func(*State)) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := nodefile.Lock(filepath.Join(dir, ".containerjob.lock"), LockWait)
	if err != nil {
		var open *os.PathError
		if errors.As(err, &open) {
			return err
		}
		return fmt.Errorf("metrics in %s: another writer holds them (%w); this update is dropped", dir, err)
	}
	defer unlock()
	statePath := filepath.Join(dir, ".containerjob-state.json")
	var s State
	if b, err := os.ReadFile(statePath); err == nil {
		json.Unmarshal(b, &s) // a damaged state starts again from zero
	}
	s.init()
	fn(&s)
	b, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	if err := nodefile.Write(statePath, b, 0o600); err != nil {
		return err
	}
	var out strings.Builder
	if err := Write(&out, &s); err != nil {
		return err
	}
	return nodefile.Write(filepath.Join(dir, File), []byte(out.String()), 0o644)
}

// Write renders s in Prometheus' text exposition format.
func Write(w interface{ WriteString(string) (int, error) }, s *State) error {
	s.init()
	var fams []*dto.MetricFamily
	counter := func(name, help, label string, m map[string]uint64) {
		f := &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_COUNTER.Enum()}
		for _, k := range sortedKeys(m) {
			f.Metric = append(f.Metric, &dto.Metric{Label: []*dto.LabelPair{{Name: proto.String(label), Value: proto.String(k)}},
				Counter: &dto.Counter{Value: proto.Float64(float64(m[k]))}})
		}
		fams = append(fams, f)
	}
	histogram := func(name, help, label string, m map[string]*Histogram) {
		f := &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_HISTOGRAM.Enum()}
		for _, k := range sortedKeys(m) {
			h := m[k]
			var cum uint64
			var buckets []*dto.Bucket
			for i, b := range Buckets {
				if i < len(h.Counts) {
					cum += h.Counts[i]
				}
				buckets = append(buckets, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(cum)})
			}
			f.Metric = append(f.Metric, &dto.Metric{Label: []*dto.LabelPair{{Name: proto.String(label), Value: proto.String(k)}},
				Histogram: &dto.Histogram{SampleCount: proto.Uint64(h.Count), SampleSum: proto.Float64(h.Sum), Bucket: buckets}})
		}
		fams = append(fams, f)
	}
	gauge := func(name, help string, v float64) {
		fams = append(fams, &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(v)}}}})
	}
	plain := func(name, help string, v uint64) {
		fams = append(fams, &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Counter: &dto.Counter{Value: proto.Float64(float64(v))}}}})
	}
	counter("containerjob_launches_total", "Container launches on this node, by outcome (ran, refused, failed).", "outcome", s.Launches)
	counter("containerjob_refusals_total", "Refused launches on this node, by the rule that refused them.", "rule", s.Refusals)
	histogram("containerjob_launch_phase_seconds", "Time spent in each phase of a launch (image, create, start, exit, ...).", "phase", s.Phases)
	plain("containerjob_pulls_total", "Images pulled on this node by containerjob.", s.Pulls)
	plain("containerjob_pull_bytes_total", "Bytes of the layers pulled, where the engine reported them.", s.PullBytes)
	histogram("containerjob_lock_wait_seconds", "Waits for a lock of the node, by lock (launch, step, pull).", "lock", s.LockWaits)
	counter("containerjob_removed_containers_total", "Containers removed after their job or step, by who removed them (epilog, gc).", "by", s.Removed)
	if s.StoreSeen {
		gauge("containerjob_image_store_bytes", "Bytes of images in the engine's store, as gc last measured.", float64(s.StoreBytes))
		gauge("containerjob_image_store_high_watermark_bytes", "The store's high watermark (gc --images collects above it).", float64(s.StoreHigh))
		gauge("containerjob_image_store_low_watermark_bytes", "The store's low watermark (gc --images collects down to it).", float64(s.StoreLow))
	}
	var b strings.Builder
	for _, f := range fams {
		if len(f.Metric) == 0 {
			continue // nothing of that kind yet
		}
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			return err
		}
	}
	_, err := w.WriteString(b.String())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
