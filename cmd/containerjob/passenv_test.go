package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// TestPassedEnvRoundTrip: what the caller's side seals into a memfd on
// descriptor 3 is what the privileged side reads, minus entries that are
// not NAME=VALUE; in a child process, whose descriptor 3 is free.
func TestPassedEnvRoundTrip(t *testing.T) {
	if os.Getenv("CONTAINERJOB_TEST_PASSENV") == "1" {
		err := passEnv(passedEnv{Environ: []string{"A=1", "broken", "B=x=y"}, Env: []string{"E=2"}})
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(3)
		}
		p, err := readPassedEnv(jobEnvFD)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(4)
		}
		json.NewEncoder(os.Stdout).Encode(p)
		os.Exit(0)
	}
	c := exec.Command(os.Args[0], "-test.run=^TestPassedEnvRoundTrip$")
	c.Env = append(os.Environ(), "CONTAINERJOB_TEST_PASSENV=1")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("child: %v %s", err, out)
	}
	var p passedEnv
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("child said %q: %v", out, err)
	}
	if want := (passedEnv{Environ: []string{"A=1", "B=x=y"}, Env: []string{"E=2"}}); !reflect.DeepEqual(p, want) {
		t.Errorf("read %+v, want %+v", p, want)
	}
}

func TestReadPassedEnvOnlyItsDescriptor(t *testing.T) {
	if _, err := readPassedEnv(7); err == nil || !strings.Contains(err.Error(), "must be 3") {
		t.Errorf("descriptor 7: %v", err)
	}
}

func TestErrorStrings(t *testing.T) {
	if exitStatus(3).Error() != "exit status 3" {
		t.Error(exitStatus(3).Error())
	}
	if usagef("bad %s", "flag").Error() != "bad flag" {
		t.Error("usage error text")
	}
}
