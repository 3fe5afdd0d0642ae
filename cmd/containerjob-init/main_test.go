package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs the test binary as containerjob-init where a test starts
// it so (its descriptors 0-2 are replaced: never in the test process).
func TestMain(m *testing.M) {
	if p := os.Getenv("CONTAINERJOB_INIT_TEST_SOCKET"); p != "" {
		socketPath = p
		os.Args = append([]string{"containerjob-init"}, os.Args[1:]...)
		main()
		return
	}
	os.Exit(m.Run())
}

// startInit starts containerjob-init with argv and a socket of the
// test's, and returns the listener's first connection.
func startInit(t *testing.T, argv ...string) (*exec.Cmd, *net.UnixConn, *bytes.Buffer) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "handoff.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := exec.Command(os.Args[0], argv...)
	c.Env = append(os.Environ(), "CONTAINERJOB_INIT_TEST_SOCKET="+sock)
	var own bytes.Buffer
	c.Stdout, c.Stderr = &own, &own
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("containerjob-init did not connect: %v (its output: %s)", err, own.String())
	}
	return c, conn, &own
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// The command writes to the descriptors handed over, not to the ones
// containerjob-init was started with, and the socket ends with no message.
func TestInitHandsTheDescriptorsToTheCommand(t *testing.T) {
	c, conn, own := startInit(t, "--", "sh", "-c", "read line; echo out:$line; echo err >&2; exit 7")
	inR, inW := pipe(t)
	outR, outW := pipe(t)
	errR, errW := pipe(t)
	if _, _, err := conn.WriteMsgUnix([]byte{'i'}, unix.UnixRights(int(inR.Fd()), int(outW.Fd()), int(errW.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	inW.WriteString("hello\n")
	inW.Close()
	msg, _ := io.ReadAll(conn)
	if len(msg) != 0 {
		t.Fatalf("message %q for a command that started", msg)
	}
	err := c.Wait()
	outW.Close()
	errW.Close()
	out, _ := io.ReadAll(outR)
	errOut, _ := io.ReadAll(errR)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("exit %v, want 7", err)
	}
	if string(out) != "out:hello\n" || string(errOut) != "err\n" || own.Len() != 0 {
		t.Fatalf("stdout %q, stderr %q, its own %q", out, errOut, own.String())
	}
}

// A command that is not there is told over the socket, with exit 127,
// as the runtime's start error; one that cannot run, with 126.
func TestInitReportsACommandThatDidNotStart(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		cmd  string
		code int
		want string
	}{
		{"no-such-command-here", 127, "executable file not found"},
		{"/no/such/file", 127, "no such file or directory"},
		{notExec, 126, "permission denied"},
	} {
		c, conn, _ := startInit(t, "--", tc.cmd)
		_, w := pipe(t)
		if _, _, err := conn.WriteMsgUnix([]byte{'o'}, unix.UnixRights(int(w.Fd()), int(w.Fd())), nil); err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(conn)
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != tc.code || !strings.Contains(string(msg), tc.want) {
			t.Errorf("%s: exit %v, message %q; want %d and %q", tc.cmd, err, msg, tc.code, tc.want)
		}
	}
}

// A message of the wrong kind, or without its descriptors, starts
// nothing.
func TestInitRefusesAMalformedHandoff(t *testing.T) {
	for _, kind := range []byte{'x', 'o'} {
		c, conn, own := startInit(t, "--", "sh", "-c", "echo ran")
		if _, err := conn.Write([]byte{kind}); err != nil {
			t.Fatal(err)
		}
		err := c.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailed || strings.Contains(own.String(), "ran") {
			t.Errorf("kind %q: exit %v, output %q; want %d and nothing run", kind, err, own.String(), exitFailed)
		}
	}
}

func TestInitNeedsItsCommand(t *testing.T) {
	c := exec.Command(os.Args[0], "sh")
	c.Env = append(os.Environ(), "CONTAINERJOB_INIT_TEST_SOCKET=/nonexistent")
	out, err := c.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailed || !strings.Contains(string(out), "started by containerjob") {
		t.Fatalf("exit %v, output %q", err, out)
	}
}
