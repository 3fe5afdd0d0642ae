package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// StartRegistry runs Debian's docker-registry on addr for the test, with
// an empty store, and returns the file its request log goes to. With
// htpasswd lines ("user:BCRYPT") it asks every client to log in.
func StartRegistry(t testing.TB, addr string, htpasswd ...string) string {
	t.Helper()
	const registryBin = "/usr/bin/docker-registry"
	if _, err := os.Stat(registryBin); err != nil {
		Unavailable(t, "no %s (Debian package docker-registry)", registryBin)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	conf := "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: " + dir + "/data\nhttp:\n  addr: " + addr + "\n"
	if len(htpasswd) > 0 {
		// Basic authentication (bcrypt lines): pushes and pulls need a login.
		os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(strings.Join(htpasswd, "\n")+"\n"), 0o644)
		conf += "auth:\n  htpasswd:\n    realm: containerjob-test\n    path: " + filepath.Join(dir, "htpasswd") + "\n"
	}
	os.WriteFile(cfg, []byte(conf), 0o644)
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	reg := exec.Command(registryBin, "serve", cfg)
	reg.Stdout, reg.Stderr = logFile, logFile
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait(); logFile.Close() })
	return logPath
}

// PushImage pushes to the local registry an image with a layer of its own
// (so a pull has a layer to fetch: /marker, holding text[0] when given,
// else the time; with text[2], also that many MiB of random bytes) and
// leaves it off the node, unless text[1] is "keep".
func PushImage(t testing.TB, ref string, text ...string) {
	t.Helper()
	PushImageWith(t, ref, nil, text...)
}

// PushImageWith is PushImage with env added to the docker CLI's (a
// DOCKER_CONFIG holding a login, say).
func PushImageWith(t testing.TB, ref string, env []string, text ...string) {
	t.Helper()
	name := "cjtest-pushsrc-" + strings.NewReplacer("/", "-", ":", "-", ".", "-").Replace(ref)
	mark := "date +%s%N > /marker"
	if len(text) > 0 {
		mark = "echo " + text[0] + " > /marker"
	}
	if len(text) > 2 {
		// Incompressible bulk of that many MiB, for tests that fill a disk.
		mark += "; head -c " + text[2] + "m /dev/urandom > /bulk"
	}
	exec.Command("docker", "rm", "-f", name).Run() // left by an interrupted run
	if out, err := exec.Command("docker", "run", "--name", name, "alpine:3.20", "sh", "-c", mark).CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v %s", err, out)
	}
	out, err := exec.Command("docker", "commit", name, ref).CombinedOutput()
	exec.Command("docker", "rm", "-f", name).Run()
	if err != nil {
		t.Fatalf("docker commit: %v %s", err, out)
	}
	for i := 0; i < 50; i++ { // the registry may still be starting
		push := exec.Command("docker", "push", ref)
		push.Env = append(os.Environ(), env...)
		if out, err = push.CombinedOutput(); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("docker push to the local registry: %v %s", err, out)
	}
	if len(text) < 2 || text[1] != "keep" {
		exec.Command("docker", "rmi", ref).Run()
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
}

// RegistryRequests counts the registry's completed requests by method and
// path, from its log.
func RegistryRequests(t testing.TB, logPath string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	method := regexp.MustCompile(`http\.request\.method=(\w+)`)
	uri := regexp.MustCompile(`http\.request\.uri="([^"]+)"`)
	out := map[string]int{}
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "response completed") {
			continue
		}
		m, u := method.FindStringSubmatch(l), uri.FindStringSubmatch(l)
		if m != nil && u != nil {
			out[m[1]+" "+u[1]]++
		}
	}
	return out
}

// ServeRegistryIn serves the store of a registry StartRegistry made (the
// directory its log is in) from a second registry process inside the
// network namespace netns, at addr there: how an engine in its own
// namespace (StartEngine) reaches what the node's engine pushed.
func ServeRegistryIn(t testing.TB, netns, addr, logPath string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte("version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: "+filepath.Join(filepath.Dir(logPath), "data")+"\nhttp:\n  addr: "+addr+"\n"), 0o644)
	reg := exec.Command("nsenter", "--net="+netns, "/usr/bin/docker-registry", "serve", cfg)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
}
