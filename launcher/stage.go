package launcher

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/internal/userfs"
)

// StageRoot holds the private bind mounts the engine is given instead of
// user-controlled paths. Root-owned; users cannot create, swap or remove
// anything in it.
// A variable for tests; the guard is told it with every launch.
var StageRoot = "/run/containerjob/stage"

// Stage closes the window between checking a mount source and the runtime
// mounting it. A path is checked, then mounted by runc much later, by name:
// a user who swaps a component for a symlink in between would get another
// directory mounted. So each source is opened once, as the caller, refusing
// any symlink on the way (openat2 RESOLVE_NO_SYMLINKS), and that open
// directory (or file) is bind-mounted onto a fresh path under StageRoot;
// the engine is given that path. What runc mounts is then exactly what was
// opened, whatever happens to the user's path afterwards.
type Stage struct {
	dir    string
	mounts []string
	// Sources maps each staged path to the user's path it stands for.
	Sources map[string]string
	// Generated maps each file containerjob wrote for this launch to the
	// container path it is bound at (read-only).
	Generated map[string]string
}

// NewStage opens and binds sources (absolute, resolved, symlink-free paths)
// for the caller id. On error nothing is left mounted. A source that does
// not answer within timeout (a hung NFS server) fails the launch.
func NewStage(id userfs.Identity, sources []string, timeout time.Duration) (*Stage, error) {
	s := &Stage{Sources: map[string]string{}, Generated: map[string]string{}}
	if len(sources) == 0 {
		return s, nil
	}
	// The descriptors belong to the opening goroutine until it reports
	// back: after a timeout it may still be stuck, and what it opens then
	// is left to the process's exit rather than raced for here.
	var fds []int
	err := withTimeout(timeout, sources, func(done func(int)) error {
		opened := make([]int, 0, len(sources))
		err := userfs.As(id, func() error {
			for i, src := range sources {
				fd, err := openSource(src, unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
				if err != nil {
					return fmt.Errorf("mount source %q changed after it was checked, or cannot be opened as the caller: %w", src, err)
				}
				opened = append(opened, fd)
				done(i)
			}
			return nil
		})
		if err != nil {
			closeAll(opened)
			return err
		}
		fds = opened
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer closeAll(fds)
	if err := s.makeDir(); err != nil {
		return nil, err
	}
	for i, src := range sources {
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			s.Release()
			return nil, err
		}
		target := filepath.Join(s.dir, strconv.Itoa(i))
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = os.Mkdir(target, 0o700)
		} else {
			err = os.WriteFile(target, nil, 0o600)
		}
		if err != nil {
			s.Release()
			return nil, fmt.Errorf("staging mounts: %w", err)
		}
		// The magic link names the open file itself, not a path.
		fdPath := "/proc/self/fd/" + strconv.Itoa(fds[i])
		if err := unix.Mount(fdPath, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			s.Release()
			return nil, fmt.Errorf("staging mount source %q: %w", src, err)
		}
		s.mounts = append(s.mounts, target)
		// Keep the staging copy out of other mount namespaces' way.
		unix.Mount("", target, "", unix.MS_PRIVATE|unix.MS_REC, "")
		s.Sources[target] = src
	}
	return s, nil
}

// makeDir creates the launch's own staging directory, named by its pid
// so that CleanStale knows when it is left over.
func (s *Stage) makeDir() error {
	if s.dir != "" {
		return nil
	}
	if err := privateRoot(StageRoot); err != nil {
		return fmt.Errorf("staging mounts: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	dir := filepath.Join(StageRoot, strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("staging mounts: %w", err)
	}
	s.dir = dir
	return nil
}

// privateRoot makes dir (root's, 0700) or tightens it to that. A staged
// mount is another user's directory, opened past their 0700 home: while
// it is mounted under dir, only root (runc) may walk in. Its path shows
// in every process's mountinfo; with 0711 anywhere on the way, any user
// could open it there and keep the descriptor after the unmount. Earlier
// versions made it 0711, which this repairs.
func privateRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) {
		return hint.Errorf("the admin removes it", "%s is not a directory of containerjob's own (mode %o, uid %d)", dir, st.Mode, st.Uid)
	}
	if st.Mode&0o077 != 0 {
		return unix.Chmod(dir, 0o700)
	}
	return nil
}

// AddFile writes a file of this launch's own (root-owned, world-readable:
// the container's user reads it) for a read-only bind at target, and
// returns its path.
func (s *Stage) AddFile(name string, content []byte, target string) (string, error) {
	if err := s.makeDir(); err != nil {
		return "", err
	}
	p := filepath.Join(s.dir, "gen-"+name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return "", fmt.Errorf("staging %s: %w", target, err)
	}
	_, err = f.Write(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("staging %s: %w", target, err)
	}
	s.Generated[p] = target
	return p, nil
}

// AddSocket makes a listening socket of this launch's own for a
// read-only bind at target, and returns it and its path. The directory
// is root's 0700, so only the container reaches it, through the bind: the
// socket itself is open to the container's user. It is removed with the
// stage; a bound container still reaches it after that.
func (s *Stage) AddSocket(name, target string) (*net.UnixListener, string, error) {
	if err := s.makeDir(); err != nil {
		return nil, "", err
	}
	p := filepath.Join(s.dir, "gen-"+name)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, "", fmt.Errorf("staging %s: %w", target, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(p, 0o666); err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("staging %s: %w", target, err)
	}
	s.Generated[p] = target
	return ln, p, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// openSource opens a directory with O_DIRECTORY, which, unlike a bare
// O_PATH open, makes the kernel trigger an automount (autofs, NFS, CVMFS)
// on the last component: what is bound is then the mounted file system,
// not the empty trigger directory the engine would otherwise see.
// resolve adds openat2 restrictions on the walk (0 for none).
func openSource(src string, resolve uint64) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve}
	fd, err := unix.Openat2(unix.AT_FDCWD, src, how)
	if err == unix.ENOTDIR {
		how.Flags = unix.O_PATH | unix.O_CLOEXEC
		fd, err = unix.Openat2(unix.AT_FDCWD, src, how)
	}
	return fd, err
}

// Probe opens each host path the engine will bind by name (the admin's
// fixed mounts), so automounts are triggered before the engine looks and a
// missing or hung one fails with its name instead of an engine error.
func Probe(paths []string, timeout time.Duration) error {
	return withTimeout(timeout, paths, func(done func(int)) error {
		for i, p := range paths {
			fd, err := openSource(p, 0)
			if err != nil {
				return fmt.Errorf("mount source %q cannot be opened on this node: %w", p, err)
			}
			unix.Close(fd)
			done(i)
		}
		return nil
	})
}

// withTimeout runs open, which reports each path it finished, and gives up
// after timeout naming the path it is stuck on. A thread stuck in an NFS
// lookup cannot be interrupted; it is left behind and dies with the process.
func withTimeout(timeout time.Duration, paths []string, open func(done func(int)) error) error {
	if timeout <= 0 {
		return open(func(int) {})
	}
	var mu sync.Mutex
	next := 0
	errc := make(chan error, 1)
	go func() {
		errc <- open(func(i int) { mu.Lock(); next = i + 1; mu.Unlock() })
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-errc:
		return err
	case <-t.C:
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("mount source %q did not answer within %s (is its NFS or automount server down?)", paths[min(next, len(paths)-1)], timeout)
	}
}

// Path returns the staged path for a source, or the source itself.
func (s *Stage) Path(src string) string {
	for staged, orig := range s.Sources {
		if orig == src {
			return staged
		}
	}
	return src
}

// Release unmounts and removes the staging paths. The container keeps its
// own mounts (runc made them from ours), so this is done right after start.
func (s *Stage) Release() {
	if s == nil || s.dir == "" {
		return
	}
	for _, m := range s.mounts {
		unix.Unmount(m, unix.MNT_DETACH)
	}
	s.mounts = nil
	removeStageDir(s.dir)
	s.dir = ""
}

// IsStaged reports whether path is under the staging root.
func IsStaged(path string) bool {
	return strings.HasPrefix(path, StageRoot+"/")
}

// CleanStale removes staging directories left by a killed containerjob
// (their process is gone), for the epilogue and gc.
func CleanStale() {
	cleanStaleAcct()
	cleanStaleTaskSockets()
	entries, err := os.ReadDir(StageRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, _, ok := strings.Cut(e.Name(), "-")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(pid); err == nil && unix.Kill(n, 0) == nil {
			continue // still running
		}
		dir := filepath.Join(StageRoot, e.Name())
		subs, _ := os.ReadDir(dir)
		for _, sub := range subs {
			unix.Unmount(filepath.Join(dir, sub.Name()), unix.MNT_DETACH)
		}
		removeStageDir(dir)
	}
}

// removeStageDir removes the (now unmounted) mount points and the
// directory, never recursively: if an unmount failed, a recursive removal
// would walk into the user's own directory and delete their files.
func removeStageDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.Remove(filepath.Join(dir, e.Name()))
	}
	os.Remove(dir)
}

// sameMountNamespace refuses a launch whose staged mounts the engine would
// not see: they are made in containerjob's mount namespace, and an engine
// in another one binds the empty placeholders instead (a container with an
// empty job directory, silently). The engine is the process at the other
// end of its socket (SO_PEERCRED; under socket activation, the process
// that made the socket, which shares the engine's namespace unless the
// unit gives the engine a private one).
func sameMountNamespace(socket string) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return nil // the engine's own error comes soon enough
	}
	defer conn.Close()
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil || cred.Pid <= 0 {
		return nil
	}
	theirs, err1 := os.Readlink("/proc/" + strconv.Itoa(int(cred.Pid)) + "/ns/mnt")
	ours, err2 := os.Readlink("/proc/self/ns/mnt")
	if err1 != nil || err2 != nil || theirs == ours {
		return nil
	}
	return hint.Errorf("run containerjob in the engine's mount namespace (a scheduler daemon with a private /etc or /tmp namespace, or an engine unit with PrivateMounts=, breaks this)", "the engine (pid %d) runs in another mount namespace than containerjob, so the mounts containerjob stages would reach the container empty", cred.Pid)
}
