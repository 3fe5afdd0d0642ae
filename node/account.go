package node

import (
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/identity"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/scheduler"
)

// ContainerAccount is the caller's entry for the container's /etc/passwd
// and /etc/group, from what identity read of the user database; nil (no
// entries added) where it cannot be written as lines. Groups without a
// name are left out.
func ContainerAccount(c identity.Caller) *launcher.Account {
	a := &launcher.Account{Name: c.User, UID: c.UID, GID: c.GID, Home: c.Home, LoginShell: identity.LoginShell(c.UID)}
	for _, gid := range c.AllGroups() {
		if name, ok := c.GroupNames[gid]; ok {
			a.Groups = append(a.Groups, launcher.Group{Name: name, GID: gid})
		}
	}
	if launcher.ValidAccount(*a) != nil {
		return nil
	}
	return a
}

// scriptInterpreter is the absolute #! interpreter of the job's batch
// script when that is what the container runs, "" otherwise. The script
// is slurmd's copy (root's), read as root, its first line only.
func scriptInterpreter(job scheduler.Job, spoolDir string, cmd []string) string {
	script := scheduler.BatchScript(job, spoolDir)
	if script == "" || len(cmd) == 0 || cmd[0] != script {
		return ""
	}
	f, err := os.OpenFile(script, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	return shebangInterpreter(buf[:n])
}

// shebangInterpreter returns the interpreter a "#!" first line names, if
// it is an absolute, clean path; "" otherwise.
func shebangInterpreter(head []byte) string {
	line, _, _ := strings.Cut(string(head), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) || filepath.Clean(fields[0]) != fields[0] {
		return ""
	}
	return fields[0]
}
