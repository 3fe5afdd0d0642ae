package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RegistryBin is Debian's docker-registry (distribution 2.8).
const RegistryBin = "/usr/bin/docker-registry"

// WriteRegistryConfig writes into dir a docker-registry configuration
// serving storage at addr, its request log in the daemon's own output (no
// access log); with htpasswd lines ("user:BCRYPT") every client must log
// in. It returns the configuration's path.
func WriteRegistryConfig(dir, storage, addr string, htpasswd ...string) (string, error) {
	conf := "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: " + storage + "\nhttp:\n  addr: " + addr + "\n"
	if len(htpasswd) > 0 {
		// Basic authentication (bcrypt lines): pushes and pulls need a login.
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(strings.Join(htpasswd, "\n")+"\n"), 0o644); err != nil {
			return "", err
		}
		conf += "auth:\n  htpasswd:\n    realm: containerjob-test\n    path: " + filepath.Join(dir, "htpasswd") + "\n"
	}
	cfg := filepath.Join(dir, "config.yml")
	return cfg, os.WriteFile(cfg, []byte(conf), 0o644)
}

// StartRegistry runs Debian's docker-registry on addr for the test, with
// an empty store, and returns the file its request log goes to. With
// htpasswd lines ("user:BCRYPT") it asks every client to log in.
func StartRegistry(t testing.TB, addr string, htpasswd ...string) string {
	t.Helper()
	if _, err := os.Stat(RegistryBin); err != nil {
		Unavailable(t, "no %s (Debian package docker-registry)", RegistryBin)
	}
	dir := t.TempDir()
	cfg, err := WriteRegistryConfig(dir, filepath.Join(dir, "data"), addr, htpasswd...)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	reg := exec.Command(RegistryBin, "serve", cfg)
	reg.Stdout, reg.Stderr = logFile, logFile
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait(); logFile.Close() })
	return logPath
}

// BuildAndPush makes, with the docker CLI at docker, an image ref of base
// plus a layer written by the shell command mark, and pushes it (env added
// to the CLI's: a DOCKER_CONFIG holding a login, say). The image stays
// tagged on the node.
func BuildAndPush(docker, base, ref string, env []string, mark string) error {
	name := "cjtest-pushsrc-" + strings.NewReplacer("/", "-", ":", "-", ".", "-").Replace(ref)
	exec.Command(docker, "rm", "-f", name).Run() // left by an interrupted run
	if out, err := exec.Command(docker, "run", "--name", name, base, "sh", "-c", mark).CombinedOutput(); err != nil {
		return fmt.Errorf("docker run: %v %s", err, out)
	}
	out, err := exec.Command(docker, "commit", name, ref).CombinedOutput()
	exec.Command(docker, "rm", "-f", name).Run()
	if err != nil {
		return fmt.Errorf("docker commit: %v %s", err, out)
	}
	for i := 0; i < 50; i++ { // the registry may still be starting
		push := exec.Command(docker, "push", ref)
		push.Env = append(os.Environ(), env...)
		if out, err = push.CombinedOutput(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("docker push to the local registry: %v %s", err, out)
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
	mark := "date +%s%N > /marker"
	if len(text) > 0 {
		mark = "echo " + text[0] + " > /marker"
	}
	if len(text) > 2 {
		// Incompressible bulk of that many MiB, for tests that fill a disk.
		mark += "; head -c " + text[2] + "m /dev/urandom > /bulk"
	}
	if err := BuildAndPush("docker", "alpine:3.20", ref, env, mark); err != nil {
		t.Fatal(err)
	}
	if len(text) < 2 || text[1] != "keep" {
		exec.Command("docker", "rmi", ref).Run()
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
}

// RegistryRequest is one completed request in a registry's log.
type RegistryRequest struct {
	Method, URI string
	Written     int64 // bytes of the response
}

// ParseRegistryLog reads the completed requests from a registry's log.
func ParseRegistryLog(data []byte) []RegistryRequest {
	method := regexp.MustCompile(`http\.request\.method=(\w+)`)
	uri := regexp.MustCompile(`http\.request\.uri="([^"]+)"`)
	written := regexp.MustCompile(`http\.response\.written=(\d+)`)
	var out []RegistryRequest
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "response completed") {
			continue
		}
		m, u := method.FindStringSubmatch(l), uri.FindStringSubmatch(l)
		if m == nil || u == nil {
			continue
		}
		r := RegistryRequest{Method: m[1], URI: u[1]}
		if w := written.FindStringSubmatch(l); w != nil {
			r.Written, _ = strconv.ParseInt(w[1], 10, 64)
		}
		out = append(out, r)
	}
	return out
}

// RegistryRequests counts the registry's completed requests by method and
// path, from its log.
func RegistryRequests(t testing.TB, logPath string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range ParseRegistryLog(data) {
		out[r.Method+" "+r.URI]++
	}
	return out
}

// ServeRegistryIn serves the store of a registry StartRegistry made (the
// directory its log is in) from a second registry process inside the
// network namespace netns, at addr there: how an engine in its own
// namespace (StartEngine) reaches what the node's engine pushed.
func ServeRegistryIn(t testing.TB, netns, addr, logPath string) {
	t.Helper()
	cfg, err := WriteRegistryConfig(t.TempDir(), filepath.Join(filepath.Dir(logPath), "data"), addr)
	if err != nil {
		t.Fatal(err)
	}
	reg := exec.Command("nsenter", "--net="+netns, RegistryBin, "serve", cfg)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	// Answering, before the test's first pull: on a busy machine the
	// first pull met "connection refused" (CI, TestImageStoreCollect).
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for exec.Command("nsenter", "--net="+netns, "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port).Run() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the registry at %s in %s does not answer after 30 s", addr, netns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
