// Package tasks starts a shared step container's tasks from inside it,
// without the engine's exec (issue 29): containerjob-init --serve, the
// container's PID 1, holds a listening socket made on the host (in a
// directory of root's: only the node's privileged containerjob reaches it)
// and handed to it at start. Each task's containerjob connects, sends the
// task's command, environment and working directory with its own stdin,
// stdout and stderr (SCM_RIGHTS), and the server forks and execs the task:
// a child of the container's PID 1 has the container's namespaces,
// cgroup, seccomp profile, capabilities (none) and no_new_privs, as a
// runc exec would, without runc. The server writes "started" or "error
// MSG", then "exit CODE" when the task ends; the client sends "signal N"
// lines, and a client that goes away takes its task with it (SIGKILL).
//
// The server runs as the job's owner in the job's own container: to the
// client it is as hostile as any of the user's processes. Every answer
// is bounded in size and parsed strictly, and nothing a server says can
// do more than end or mislabel that user's own task.
package tasks

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// maxRequest bounds a request (a task's environment is most of it).
const maxRequest = 1 << 20

// maxLine bounds one line of either side.
const maxLine = 4096

// Request is one connection's question.
type Request struct {
	Op string `json:"op"` // "spawn" or "count"
	// For spawn: the command as the engine's exec would take it, the
	// task's environment (over the container's own, as the engine's exec
	// merges them) and working directory; Stdin says whether the first of
	// the descriptors sent is the task's stdin (else it gets /dev/null).
	Argv  []string `json:"argv,omitempty"`
	Env   []string `json:"env,omitempty"`
	Cwd   string   `json:"cwd,omitempty"`
	Stdin bool     `json:"stdin,omitempty"`
	// CPUs is the task's own CPU binding (its containerjob's affinity,
	// which slurmstepd set for --cpu-bind); empty for none.
	CPUs []int `json:"cpus,omitempty"`
}

// writeRequest sends req and, with it, the descriptors fds.
func writeRequest(conn *net.UnixConn, req Request, rights []byte) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if len(body) > maxRequest {
		return fmt.Errorf("the task's request is %d bytes, over %d (its environment?)", len(body), maxRequest)
	}
	frame := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	copy(frame[4:], body)
	n, _, err := conn.WriteMsgUnix(frame, rights, nil)
	if err != nil {
		return err
	}
	if n < len(frame) {
		_, err = conn.Write(frame[n:])
	}
	return err
}

// readLine reads one line of at most maxLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		b = append(b, chunk...)
		if len(b) > maxLine {
			return "", fmt.Errorf("a line over %d bytes", maxLine)
		}
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

// ErrProtocol is an answer that is not one of the protocol's.
var ErrProtocol = errors.New("an answer outside the task protocol")

// parseCode reads the number of a "WORD N" line.
func parseCode(line, word string, max int) (int, error) {
	rest, ok := strings.CutPrefix(line, word+" ")
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrProtocol, truncate(line))
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("%w: %q", ErrProtocol, truncate(line))
	}
	return n, nil
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
