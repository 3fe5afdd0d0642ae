package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// cli runs the CLI in-process as main does, and returns what it printed
// and the exit status it chose.
func cli(t *testing.T, args ...string) (stdout, errout string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	old := stderr
	stderr = &errb
	defer func() { stderr = old }()
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(withImplicitRun(root, args))
	code = exitCode(root.Execute())
	return out.String(), errb.String(), code
}

// trustedPolicy writes a policy the commands take as root's. As root it
// is where policy.Load trusts it: root-owned, in a directory only root
// may write. As any other user the commands run as root would (actAsRoot)
// and read this one file as policy.Load reads root's.
func trustedPolicy(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "policy.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		actAsRoot(t)
		load := loadPolicy
		loadPolicy = func(path string) (*policy.Policy, error) {
			if path != p {
				return load(path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			return policy.Parse(path, data)
		}
		t.Cleanup(func() { loadPolicy = load })
	}
	return p
}

// actAsRoot makes the commands see the invocation of root's shell (no
// sudo) for the rest of the test, when the test does not run as root: what
// they then do as root goes to the fake engine and the test's own files.
func actAsRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	oldInv, oldEuid := currentInvocation, euid
	currentInvocation = func() (invocation, uint32, error) { return asRoot, 0, nil }
	euid = func() int { return 0 }
	t.Cleanup(func() { currentInvocation, euid = oldInv, oldEuid })
}

const cliPolicy = `[settings]
audit_log = "/dev/null"

[defaults]
images_allow = ["alpine:*"]
images_deny = ["alpine:denied"]
flags_allow = ["env", "workdir"]
`

func TestCLIPolicyCheck(t *testing.T) {
	good := trustedPolicy(t, cliPolicy)
	if out, _, code := cli(t, "policy", "check", good); code != 0 || !strings.Contains(out, good+": ok") {
		t.Errorf("check of a good policy: %d %q", code, out)
	}
	bad := trustedPolicy(t, cliPolicy+"images_alow = [\"x\"]\n")
	if out, _, code := cli(t, "policy", "check", bad); code != 1 || !strings.Contains(out, bad+":8") {
		t.Errorf("check of a typo: %d %q; want exit 1 naming line 8", code, out)
	}
	if _, errout, code := cli(t, "policy", "check", "a", "b"); code != launcher.ExitLaunchFailed || !strings.Contains(errout, "containerjob: hint:") {
		t.Errorf("two files: %d %q", code, errout)
	}
	// --install refuses a broken candidate and leaves the target alone.
	target := trustedPolicy(t, cliPolicy)
	if _, _, code := cli(t, "policy", "check", "--install", bad, target); code != 1 {
		t.Errorf("install of a broken candidate: exit %d", code)
	}
	if b, _ := os.ReadFile(target); string(b) != cliPolicy {
		t.Errorf("the target changed: %q", b)
	}
	if os.Geteuid() != 0 {
		// The installed file is made root's, which only root can do: the
		// install fails, and the target is left as it was.
		if _, _, code := cli(t, "policy", "check", "--install", good, target); code == 0 {
			t.Errorf("install without root: exit 0")
		}
		if b, _ := os.ReadFile(target); string(b) != cliPolicy {
			t.Errorf("a failed install changed the target: %q", b)
		}
		return
	}
	if _, _, code := cli(t, "policy", "check", "--install", good, target); code != 0 {
		t.Errorf("install of a good candidate: exit %d", code)
	}
}

func TestCLIPolicyExplain(t *testing.T) {
	p := trustedPolicy(t, cliPolicy)
	out, _, code := cli(t, "policy", "explain", "--policy", p, "--user", "nobody", "--", "-e", "A=1", "alpine:3.20", "id")
	if code != 0 || !strings.Contains(out, "allowed") || !strings.Contains(out, "images_allow") {
		t.Errorf("explain of an allowed run: %d\n%s", code, out)
	}
	out, _, code = cli(t, "policy", "explain", "--policy", p, "--user", "nobody", "--", "alpine:denied")
	if code != 1 || !strings.Contains(out, "images_deny") {
		t.Errorf("explain of a denied image: %d\n%s", code, out)
	}
	if _, errout, code := cli(t, "policy", "explain", "--policy", p); code != 2 || !strings.Contains(errout, "--user is required") {
		t.Errorf("explain as root without --user: %d %q", code, errout)
	}
	if _, errout, code := cli(t, "policy", "explain", "--policy", p, "--user", "no-such-user-here"); code != launcher.ExitLaunchFailed || !strings.Contains(errout, "not in the user database") {
		t.Errorf("explain for an unknown user: %d %q", code, errout)
	}
}

func TestCLIVersionHelpAndImplicitRun(t *testing.T) {
	if out, _, code := cli(t, "version"); code != 0 || !strings.Contains(out, launcher.Version) {
		t.Errorf("version: %d %q", code, out)
	}
	if out, _, code := cli(t, "--help"); code != 0 || !strings.Contains(out, "Exit status of a run") {
		t.Errorf("help: %d", code)
	}
	root := newRootCmd()
	for _, c := range []struct {
		in   []string
		want []string
	}{
		{[]string{"alpine:3.20", "id"}, []string{"run", "alpine:3.20", "id"}},
		{[]string{"ps"}, []string{"ps"}},
		{[]string{"--help"}, []string{"--help"}},
		{nil, nil},
	} {
		if got := withImplicitRun(root, c.in); !slices.Equal(got, c.want) {
			t.Errorf("withImplicitRun(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if _, errout, code := cli(t, "run", "--no-such-flag", "alpine:3.20"); code != launcher.ExitLaunchFailed || !strings.Contains(errout, "unknown flag") || !strings.Contains(errout, "containerjob: hint: see 'containerjob run --help'") {
		t.Errorf("unknown flag: %d %q", code, errout)
	}
}

// TestExitCodeContract: what each kind of error prints and exits with.
func TestExitCodeContract(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		quiet bool
		code  int
		lines []string
	}{
		{"none", nil, false, 0, nil},
		{"the container's own status", exitStatus(3), false, 3, nil},
		{"launcher error", &launcher.Error{Code: 127, Err: errors.New("the command was not found in the image")}, false, 127, []string{"containerjob: error: the command was not found in the image"}},
		{"refusal", &policy.Refusal{Item: `image "x"`, Reason: "is denied", Rule: policy.Origin{Table: "defaults", Key: "images_deny", File: "/p", Line: 3}}, false, 125, []string{`containerjob: error: image "x" is denied, says images_deny in [defaults] (/p:3)`}},
		{"refusal with a hint", &policy.Refusal{Item: "flag --cap-add", Reason: "is not allowed", Rule: policy.Origin{Table: "built-in", Key: "x"}, Hint: "ask"}, false, 125, []string{"containerjob: error: flag --cap-add is not allowed, says built-in rule x", "containerjob: hint: ask"}},
		{"refusal inside a launch error", &launcher.Error{Code: 125, Err: &policy.Refusal{Item: "a container beyond the 2 allowed", Reason: "is refused", Hint: "wait"}}, false, 125, []string{"containerjob: error: a container beyond the 2 allowed is refused, says", "containerjob: hint: wait"}},
		{"refusal, not the first task", &policy.Refusal{Item: `image "x"`, Reason: "is denied"}, true, 125, nil},
		{"usage", usagef("bad flag"), false, 125, []string{"containerjob: error: bad flag", "containerjob: hint: see 'containerjob run --help'"}},
		{"multi-line error stays one line", errors.New("a\nb"), false, 125, []string{"containerjob: error: a b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			old, oldQuiet := stderr, quietRefusals
			stderr, quietRefusals = &b, tt.quiet
			defer func() { stderr, quietRefusals = old, oldQuiet }()
			if code := exitCode(tt.err); code != tt.code {
				t.Errorf("code %d, want %d", code, tt.code)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
				if l != "" {
					got = append(got, l)
				}
			}
			if len(got) != len(tt.lines) {
				t.Fatalf("printed %q, want %d lines %q", got, len(tt.lines), tt.lines)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.lines[i]) {
					t.Errorf("line %d %q, want prefix %q", i, got[i], tt.lines[i])
				}
			}
		})
	}
}

// TestRebuildArgs: what crosses sudo is rebuilt from parsed flags only, and
// -e values never go on the command line.
func TestRebuildArgs(t *testing.T) {
	f := &runFlags{}
	cmd := newRunCmdWith(f)
	t.Setenv("CJ_SECRET", "s3cret")
	if err := cmd.ParseFlags([]string{"-e", "CJ_SECRET", "-e", "B=2", "-v", "/a:/b:ro", "-w", "/w", "--read-only", "--name", "n", "--quiet-refusals"}); err != nil {
		t.Fatal(err)
	}
	argv, pass := rebuildArgs(cmd.Flags(), f, []string{"alpine:3.20", "id"})
	want := []string{"run", "--volume=/a:/b:ro", "--workdir=/w", "--name=n", "--read-only=true", "--quiet-refusals=true", "--", "alpine:3.20", "id"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q\nwant %q", argv, want)
	}
	if pass == nil || !slices.Equal(pass.Env, []string{"CJ_SECRET=s3cret", "B=2"}) {
		t.Errorf("passed env %+v", pass)
	}
	if strings.Contains(strings.Join(argv, " "), "s3cret") {
		t.Errorf("a secret on the command line: %q", argv)
	}
}

// TestCleanupHooksNeverFailOnTheEngine: an epilogue or prolog whose engine
// cannot be reached says so and exits 0 (a failing hook drains the node);
// a malformed invocation is a usage error.
func TestCleanupHooksNeverFailOnTheEngine(t *testing.T) {
	p := trustedPolicy(t, "[settings]\naudit_log = \"/dev/null\"\ndocker_host = \"unix://"+t.TempDir()+"/no-engine.sock\"\n")
	t.Setenv("SUDO_UID", "")
	os.Unsetenv("SUDO_UID")
	for _, hook := range []string{"epilog", "prolog"} {
		_, errout, code := cli(t, hook, "--policy", p, "--job", "5", "--step", "0")
		if code != 0 || !strings.Contains(errout, "containerjob: warning: "+hook+" for job 5: the engine cannot be reached") {
			t.Errorf("%s with the engine down: %d %q", hook, code, errout)
		}
	}
	if _, errout, code := cli(t, "epilog", "--policy", p, "--scheduler", "lsf", "--job", "5"); code != launcher.ExitLaunchFailed || !strings.Contains(errout, `--scheduler "lsf" is not slurm or pbs`) {
		t.Errorf("unknown scheduler: %d %q", code, errout)
	}
	t.Setenv("SLURM_JOB_ID", "")
	if _, errout, code := cli(t, "epilog", "--policy", p); code != launcher.ExitLaunchFailed || !strings.Contains(errout, "no job id") {
		t.Errorf("no job: %d %q", code, errout)
	}
	t.Setenv("SLURM_JOB_ID", "77")
	if _, errout, code := cli(t, "epilog", "--policy", p); code != 0 || !strings.Contains(errout, "for job 77") {
		t.Errorf("job from the hook's environment: %d %q", code, errout)
	}
	if _, errout, code := cli(t, "gc", "--policy", p, "--dry-run"); code != launcher.ExitLaunchFailed || !strings.Contains(errout, "listing containers") {
		t.Errorf("gc with the engine down: %d %q", code, errout)
	}
}

// TestUserFlagsAreTheCLIsFlags ties the policy's one list of user flags to
// what the CLI registers: every user flag is a flag of run, every flag of
// run is either a user flag or one of containerjob's own, exec's user flags
// are among them, and every flag the SPANK path produces is a flag of run.
func TestUserFlagsAreTheCLIsFlags(t *testing.T) {
	own := []string{"no-default-mount", "dry-run", "resolve", "timings", "local-only", "mount-home", "step-stdin", "image-first", "pyxis-entrypoint", "quiet-refusals", "existing", "job-env-fd", "policy", "as-user", "help"}
	run := newRunCmd()
	run.InitDefaultHelpFlag()
	for _, f := range policy.UserFlags {
		if run.Flags().Lookup(f) == nil {
			t.Errorf("user flag %q is not a flag of run", f)
		}
	}
	run.Flags().VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(policy.UserFlags, f.Name) && !slices.Contains(own, f.Name) {
			t.Errorf("run flag --%s is neither a user flag (policy.UserFlags, which flags_allow governs) nor one of containerjob's own", f.Name)
		}
	})
	exec := newExecCmd()
	for _, f := range policy.ExecFlags {
		if exec.Flags().Lookup(f) == nil || !slices.Contains(policy.UserFlags, f) {
			t.Errorf("exec flag %q: not registered, or not a user flag", f)
		}
	}
	// Every pyxis option at once: each flag it becomes is a flag of run.
	for k, v := range map[string]string{"": "1", "_MODE": "prepend", "_IMAGE": "alpine:3.20", "_MOUNTS": "/a:/b:ro", "_WORKDIR": "/w",
		"_NAME": "n", "_ENV": "A", "_MOUNT_HOME": "1", "_ENTRYPOINT": "0", "_READONLY": "1"} {
		t.Setenv(spankPrefix+k, v)
	}
	args, ok, err := spankArgs([]string{"containerjob", "true"})
	if !ok || err != nil {
		t.Fatalf("spankArgs = %v, %v", ok, err)
	}
	flags := 0
	for _, a := range args {
		if name, found := strings.CutPrefix(a, "--"); found && name != "" {
			flags++
			name, _, _ = strings.Cut(name, "=")
			if run.Flags().Lookup(name) == nil {
				t.Errorf("the SPANK path produces --%s, which run does not have", name)
			}
		}
	}
	if flags < 6 {
		t.Errorf("the SPANK path produced only %d flags from every option: %q", flags, args)
	}
}

// Own-container commands see the caller's containers on this node only:
// another user's, and another node's on a shared engine, are not found.
func TestOwnedHereIsTheCallersOnThisNode(t *testing.T) {
	all := []launcher.Managed{
		{ID: "a", UID: "1002", Node: "n1"},
		{ID: "b", UID: "1002", Node: "n2"},
		{ID: "c", UID: "1003", Node: "n1"},
		{ID: "d", UID: "1002"}, // from before containers carried their node
		{ID: "e", UID: "10020", Node: "n1"},
	}
	var got []string
	for _, c := range ownedHere(all, 1002, "n1") {
		got = append(got, c.ID)
	}
	if want := []string{"a", "d"}; !slices.Equal(got, want) {
		t.Fatalf("ownedHere(1002, n1) = %v, want %v", got, want)
	}
}
