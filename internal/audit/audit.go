// Package audit writes the admins' trail: one JSON line per decision and per
// container end. Records are written by the privileged process only, from
// values it established itself; nothing the user passes selects or silences
// the destination.
package audit

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// Log is an open audit trail.
type Log struct {
	logger *logrus.Logger
	file   *os.File
}

// Open opens the trail at path (created 0600, its directory 0700) and, if
// toSyslog, syslog too. An empty path and no syslog give a trail that drops
// records, for unprivileged test runs only.
func Open(path string, toSyslog bool) (*Log, error) {
	l := &Log{logger: logrus.New()}
	l.logger.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	l.logger.SetLevel(logrus.InfoLevel)
	var outs []io.Writer
	if path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("audit log directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		l.file = f
		outs = append(outs, f)
	}
	if toSyslog {
		w, err := syslog.New(syslog.LOG_AUTHPRIV|syslog.LOG_INFO, "containerjob")
		if err != nil {
			return nil, fmt.Errorf("audit syslog: %w", err)
		}
		outs = append(outs, w)
	}
	if len(outs) == 0 {
		l.logger.SetOutput(io.Discard)
	} else {
		l.logger.SetOutput(io.MultiWriter(outs...))
	}
	return l, nil
}

// Record writes one event with its fields.
func (l *Log) Record(event string, fields map[string]any) {
	if l == nil {
		return
	}
	l.logger.WithFields(logrus.Fields(fields)).Info(event)
}

// Close flushes and closes the file.
func (l *Log) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	return l.file.Close()
}
