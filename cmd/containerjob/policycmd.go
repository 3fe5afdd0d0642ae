package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check and explain the site policy",
	}
	cmd.AddCommand(newPolicyCheckCmd(), newPolicyExplainCmd())
	return cmd
}

func newPolicyCheckCmd() *cobra.Command {
	var install bool
	cmd := &cobra.Command{
		Use:   "check [FILE] | check --install NEWFILE [TARGET]",
		Short: "Validate a policy file; every problem with file:line and a hint",
		Long: `Validate a policy file (default /etc/containerjob/policy.toml): strict
decoding, ownership and modes, and rules that are legal but unwise (a pattern
allowing every image, a mount that hands out the node, host networking,
tables for users or groups that do not exist). Exits 1 on any error or
warning.

With --install, NEWFILE is a candidate (an edited copy): it is checked, and
only when it has no error it replaces TARGET (default the site policy)
atomically, root-owned and mode 0644, so that no launch, prolog or
epilogue ever reads a half-written or broken policy. Warnings are shown and
do not stop the install. Exits 1, changing nothing, on any error.`,
		Example: `  containerjob policy check
  cp /etc/containerjob/policy.toml /tmp/p.toml && vi /tmp/p.toml && containerjob policy check --install /tmp/p.toml`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if install {
				if len(args) == 0 {
					return usagef("--install needs the candidate file")
				}
				target := policy.DefaultPath
				if len(args) == 2 {
					target = args[1]
				}
				return installPolicy(out, args[0], target)
			}
			if len(args) > 1 {
				return usagef("check takes one file; to replace the policy use --install NEWFILE")
			}
			path := policy.DefaultPath
			if len(args) == 1 {
				path = args[0]
			}
			pol, err := loadPolicy(path)
			var untrusted *policy.UntrustedError
			if errors.As(err, &untrusted) {
				// Report the trust problem, and still check the content.
				fmt.Fprintf(out, "%s: error: %v\n", path, err)
				data, rerr := os.ReadFile(path)
				if rerr != nil {
					return exitStatus(1)
				}
				if pol, err = policy.Parse(path, data); err != nil {
					fmt.Fprintf(out, "%v\n", err)
					return exitStatus(1)
				}
				reportFindings(out, pol)
				return exitStatus(1)
			}
			if err != nil {
				fmt.Fprintf(out, "%v\n", err)
				return exitStatus(1)
			}
			if errs, warns := reportFindings(out, pol); errs+warns > 0 {
				return exitStatus(1)
			}
			fmt.Fprintf(out, "%s: ok\n", path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "check NEWFILE and, if it has no error, atomically replace the policy with it")
	return cmd
}

// installPolicy checks the candidate's content and renames a root-owned
// copy over target: the policy is replaced whole or not at all.
func installPolicy(out io.Writer, candidate, target string) error {
	if euid() != 0 {
		return fmt.Errorf("installing a policy needs root")
	}
	data, err := os.ReadFile(candidate)
	if err != nil {
		return fmt.Errorf("reading the candidate: %w", err)
	}
	// Checked under the name it will have, so its lines read as the
	// target's in every message from now on.
	pol, err := policy.Parse(target, data)
	if err != nil {
		fmt.Fprintf(out, "%v\n", err)
		fmt.Fprintf(out, "%s: not installed; %s is unchanged\n", candidate, target)
		return exitStatus(1)
	}
	if errs, _ := reportFindings(out, pol); errs > 0 {
		fmt.Fprintf(out, "%s: not installed; %s is unchanged\n", candidate, target)
		return exitStatus(1)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), ".policy-*.toml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chown(0, 0); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: installed as %s\n", candidate, target)
	return nil
}

func reportFindings(out io.Writer, pol *policy.Policy) (errs, warns int) {
	findings := pol.Check(policy.Lookup{
		User:  func(n string) bool { _, err := user.Lookup(n); return err == nil },
		Group: func(n string) bool { _, err := user.LookupGroup(n); return err == nil },
	})
	for _, f := range findings {
		fmt.Fprintln(out, f)
		if f.Warning {
			warns++
		} else {
			errs++
		}
	}
	return errs, warns
}

func newPolicyExplainCmd() *cobra.Command {
	var userName, policyPath, jobDir string
	var groups []string
	cmd := &cobra.Command{
		Use:   "explain [--user USER] [--group GROUP...] [-- RUN-ARGS...]",
		Short: "Show the effective policy for a user, and the decision for a command line",
		Long: `Given a run command line after --, first the decision for it: allowed or
refused, and what is allowed, forced or refused by which rule (exit 1 when
refused). Then the policy as it applies to USER (yourself without --user;
root must name one), groups from the user database or as given with
--group, with the file:line of every rule. Paths are taken as written (not
resolved as the user). An unknown user is an error.`,
		Example: `  containerjob policy explain --user alice
  containerjob policy explain --user alice -- -v /data/x:/x nvidia/cuda:12.4 nvidia-smi`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if userName == "" {
				if euid() == 0 {
					errorf("--user is required: name the user whose launch to explain")
					return exitStatus(2)
				}
				u, err := user.Current()
				if err != nil {
					return fmt.Errorf("who you are cannot be read from the user database: %w", err)
				}
				userName = u.Username
			}
			inv, _, err := currentInvocation()
			if err != nil {
				return err
			}
			path, err := policyPathFor(inv, policyPath)
			if err != nil {
				return err
			}
			pol, err := loadPolicy(path)
			if err != nil {
				return err
			}
			u, err := user.Lookup(userName)
			if err != nil {
				return fmt.Errorf("user %q is not in the user database; explain needs a real user (their groups decide the rules)", userName)
			}
			caller, err := node.PolicyCallerOf(u)
			if err != nil {
				return err
			}
			if groups != nil {
				caller.GroupNames = groups
			}
			out := cmd.OutOrStdout()
			// The decision first: it is what the question was about.
			refused := false
			if len(args) > 0 {
				if refused, err = explainDecision(out, pol, caller, jobDir, args); err != nil {
					return err
				}
				fmt.Fprintln(out)
			}
			printEffective(out, pol, caller)
			if refused {
				return exitStatus(1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&userName, "user", "", "the user to explain for")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "groups to assume instead of the user database's")
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default /etc/containerjob/policy.toml)")
	cmd.Flags().StringVar(&jobDir, "job-dir", "/home/USER/job", "job directory to assume")
	return cmd
}

// explainDecision prints the decision for a run command line as caller
// would get it in a job, rule by rule; refused reports a refusal.
func explainDecision(out io.Writer, pol *policy.Policy, caller policy.Caller, jobDir string, args []string) (refused bool, err error) {
	f := &runFlags{}
	run := newRunCmdWith(f)
	fl := run.Flags()
	if err := fl.Parse(args); err != nil {
		return false, usagef("%v", err)
	}
	rest := fl.Args()
	if len(rest) == 0 {
		return false, usagef("no image in the command line to explain")
	}
	req, err := requestFromFlags(fl, f, rest)
	if err != nil {
		return false, err
	}
	jobDir = strings.ReplaceAll(jobDir, "USER", caller.User)
	job := policy.Job{Dir: jobDir, Scheduler: "slurm", ID: "EXPLAIN", Node: "node"}
	req.Cwd = jobDir
	// Default mounts as if each existed on the node.
	req.DefaultMounts = pol.DefaultMounts(caller, job)
	for i := range req.DefaultMounts {
		req.DefaultMounts[i].Source = req.DefaultMounts[i].Path
	}
	fmt.Fprintf(out, "decision for %s: %s\n", caller.User, strings.Join(args, " "))
	d, err := pol.Decide(req, caller, job)
	if err != nil {
		fmt.Fprintf(out, "  REFUSED: %v\n", err)
		var ref *policy.Refusal
		if errors.As(err, &ref) && ref.Hint != "" {
			fmt.Fprintf(out, "  hint: %s\n", ref.Hint)
		}
		return true, nil
	}
	fmt.Fprintln(out, "  ALLOWED")
	for _, a := range d.Trail {
		fmt.Fprintf(out, "  %-16s %-50s %s\n", a.Action, a.Item, a.Rule)
	}
	return false, nil
}

// printEffective prints the policy as it applies to caller, each rule with
// the file:line it comes from.
func printEffective(out io.Writer, pol *policy.Policy, caller policy.Caller) {
	eff := pol.Effective(caller)
	fmt.Fprintf(out, "policy %s for user %s (uid %d), groups %v\n", pol.File, caller.User, caller.UID, caller.GroupNames)
	fmt.Fprintf(out, "tables applied, in order: %s\n", strings.Join(eff.Tables, ", "))
	for _, l := range []struct {
		key  string
		list policy.List
	}{{"images_allow", eff.ImagesAllow}, {"images_deny", eff.ImagesDeny}, {"pull", eff.Pull},
		{"mounts_allow", eff.MountsAllow}, {"mounts_always", eff.MountsAlways}, {"mounts_default", eff.MountsDefault},
		{"flags_allow", eff.FlagsAllow}, {"networks_allow", eff.NetworksAllow}, {"ports_allow", eff.PortsAllow}} {
		fmt.Fprintf(out, "%s:\n", l.key)
		if len(l.list) == 0 {
			if strings.HasSuffix(l.key, "_allow") || l.key == "pull" {
				fmt.Fprintln(out, "  (none: nothing allowed)")
			} else {
				fmt.Fprintln(out, "  (none)")
			}
		}
		for _, e := range l.list {
			fmt.Fprintf(out, "  %-40q %s\n", e.Value, e.Origin)
		}
	}
	fmt.Fprintf(out, "outside_jobs: %v  (%s)\n", eff.OutsideJobs.Value, eff.OutsideJobs.Origin)
	fmt.Fprintf(out, "mount_job_dir: %v  (%s)\n", eff.MountJobDir.Value, eff.MountJobDir.Origin)
	fmt.Fprintf(out, "pids_limit: %d  (%s)\n", eff.PidsLimit.Value, eff.PidsLimit.Origin)
	fmt.Fprintf(out, "pids_limit_per_user: %d  (%s)\n", eff.PidsPerUser.Value, eff.PidsPerUser.Origin)
}
