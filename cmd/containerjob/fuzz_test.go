package main

import (
	"strings"
	"testing"
)

// FuzzRunArgs: whatever the command line, parsing it into a request never
// panics, and an accepted request keeps the image and command as given.
func FuzzRunArgs(f *testing.F) {
	f.Add("-v\x00/a:/b:ro\x00-e\x00A=1\x00alpine\x00sh\x00-c\x00true")
	f.Add("--shm-size\x001g\x00--entrypoint=\x00img")
	f.Add("-v\x00vol:/x\x00img")
	f.Add("--privileged\x00img")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		f := &runFlags{}
		cmd := newRunCmdWith(f)
		fl := cmd.Flags()
		if err := fl.Parse(args); err != nil {
			return
		}
		rest := fl.Args()
		if len(rest) == 0 {
			return
		}
		req, err := requestFromFlags(fl, f, rest)
		if err != nil {
			return
		}
		if req.Image != rest[0] || len(req.Cmd) != len(rest)-1 {
			t.Fatalf("args %q gave image %q cmd %q", args, req.Image, req.Cmd)
		}
	})
}
