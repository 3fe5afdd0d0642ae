// Package audit writes the admins' trail: one JSON line per decision and per
// container end. Records are written by the privileged process only, from
// values it established itself; nothing the user passes selects or silences
// the destination.
package audit

import (
	"fmt"
	"log/syslog"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// Log is an open audit trail.
type Log struct {
	formatter logrus.Formatter
	file      *os.File
	syslog    *syslog.Writer
}

// Open opens the trail at path (created 0600, its directory 0700) and, if
// toSyslog, syslog too. An empty path and no syslog give a trail that drops
// records, for unprivileged test runs only.
func Open(path string, toSyslog bool) (*Log, error) {
	l := &Log{formatter: &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}}
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("audit log directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		l.file = f
	}
	if toSyslog {
		w, err := syslog.New(syslog.LOG_AUTHPRIV|syslog.LOG_INFO, "containerjob")
		if err != nil {
			return nil, fmt.Errorf("audit syslog: %w", err)
		}
		l.syslog = w
	}
	return l, nil
}

// Caps on what one record holds of the user's words: a request with huge
// arguments must not grow root's log by megabytes. What is cut is said in
// the record ("truncated": true).
const (
	MaxString = 1024 // bytes of one string value
	MaxList   = 4096 // bytes of one list of strings, all elements together
)

// Record writes one event with its fields, as one JSON line, to every
// destination. An error means the record is not known to be written: the
// caller refuses what it was about to allow rather than act unrecorded.
func (l *Log) Record(event string, fields map[string]any) error {
	if l == nil || (l.file == nil && l.syslog == nil) {
		return nil
	}
	capped, truncated := Cap(fields)
	if truncated {
		capped["truncated"] = true
	}
	entry := logrus.NewEntry(nil)
	entry.Data, entry.Time, entry.Level, entry.Message = logrus.Fields(capped), time.Now(), logrus.InfoLevel, event
	line, err := l.formatter.Format(entry)
	if err != nil {
		return fmt.Errorf("audit record: %w", err)
	}
	if l.file != nil {
		if _, err := l.file.Write(line); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
	if l.syslog != nil {
		if err := l.syslog.Info(string(line)); err != nil {
			return fmt.Errorf("audit syslog: %w", err)
		}
	}
	return nil
}

// Cap returns a copy of fields with long strings and lists cut to
// MaxString and MaxList, and whether anything was cut.
func Cap(fields map[string]any) (map[string]any, bool) {
	out := make(map[string]any, len(fields))
	cut := false
	for k, v := range fields {
		switch x := v.(type) {
		case string:
			if len(x) > MaxString {
				x, cut = x[:MaxString]+"...", true
			}
			out[k] = x
		case []string:
			var kept []string
			total := 0
			for _, e := range x {
				if len(e) > MaxString {
					e, cut = e[:MaxString]+"...", true
				}
				if total+len(e) > MaxList {
					kept, cut = append(kept, fmt.Sprintf("... %d more", len(x)-len(kept))), true
					break
				}
				total += len(e)
				kept = append(kept, e)
			}
			out[k] = kept
		default:
			out[k] = v
		}
	}
	return out, cut
}

// Close flushes and closes the destinations.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	if l.syslog != nil {
		l.syslog.Close()
	}
	if l.file == nil {
		return nil
	}
	return l.file.Close()
}
