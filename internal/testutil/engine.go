package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// StartEngine runs a second dockerd for the test, its data root on a tmpfs
// of size (e.g. "160m") so that a test can fill it, in a network namespace
// of its own (a second engine on the node's would remove the first one's
// docker0), with no bridge and no iptables rules, and returns its socket
// path and its network namespace (/proc/PID/ns/net: ServeRegistryIn puts a
// registry there for it). It is stopped, by its pid, and the tmpfs
// unmounted at the test's end. It is the node's engine binary and image
// store: $DOCKERD where a lane runs another engine, and the containerd
// store's overlayfs snapshotter where the node's engine uses that store
// ($CONTAINERJOB_TEST_STORAGE_DRIVER, default overlay2).
func StartEngine(t testing.TB, size string) (sock, netns string) {
	t.Helper()
	dockerd := os.Getenv("DOCKERD")
	if dockerd == "" {
		dockerd = "dockerd"
	}
	dockerd, err := exec.LookPath(dockerd)
	if err != nil {
		Unavailable(t, "no dockerd")
	}
	storage := os.Getenv("CONTAINERJOB_TEST_STORAGE_DRIVER")
	if storage == "" {
		storage = "overlay2"
	}
	dir, err := os.MkdirTemp("/var/tmp", "cjtest-engine-")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o711)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0711", "tmpfs", data).CombinedOutput(); err != nil {
		Unavailable(t, "a tmpfs for the engine's data: %v %s", err, out)
	}
	sock = filepath.Join(dir, "docker.sock")
	logf, _ := os.Create(filepath.Join(dir, "dockerd.log"))
	cmd := exec.Command("unshare", "--net", "sh", "-c", `ip link set lo up && exec "$@"`, "sh", dockerd,
		"--data-root", data, "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://"+sock,
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--storage-driver="+storage)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		exec.Command("umount", "-l", data).Run()
		os.RemoveAll(dir)
	})
	netns = "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	for i := 0; ; i++ {
		if exec.Command("docker", "-H", "unix://"+sock, "version").Run() == nil {
			return sock, netns
		}
		if i > 120 {
			log, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			t.Fatalf("the test's dockerd did not answer in 60 s:\n%s", log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
