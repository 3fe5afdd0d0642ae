package main

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"

	"github.com/spf13/cobra"

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
	return &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a policy file; every problem with file:line and a hint",
		Long: `Validate a policy file (default /etc/containerjob/policy.toml): strict
decoding, ownership and modes, and rules that are legal but unwise (a pattern
allowing every image, a mount that hands out the node, host networking,
tables for users or groups that do not exist). Exits 1 on any error or
warning.`,
		Example: `  containerjob policy check
  containerjob policy check /tmp/new-policy.toml && install -m 0644 /tmp/new-policy.toml /etc/containerjob/policy.toml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := policy.DefaultPath
			if len(args) == 1 {
				path = args[0]
			}
			out := cmd.OutOrStdout()
			pol, err := policy.Load(path)
			if err != nil && strings.Contains(err.Error(), "owned by root") || err != nil && strings.Contains(err.Error(), "writable by") {
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
			if reportFindings(out, pol) > 0 {
				return exitStatus(1)
			}
			fmt.Fprintf(out, "%s: ok\n", path)
			return nil
		},
	}
}

func reportFindings(out io.Writer, pol *policy.Policy) int {
	findings := pol.Check(policy.Lookup{
		User:  func(n string) bool { _, err := user.Lookup(n); return err == nil },
		Group: func(n string) bool { _, err := user.LookupGroup(n); return err == nil },
	})
	for _, f := range findings {
		fmt.Fprintln(out, f)
	}
	return len(findings)
}

func newPolicyExplainCmd() *cobra.Command {
	var userName, policyPath, jobDir string
	var groups []string
	cmd := &cobra.Command{
		Use:   "explain --user USER [--group GROUP...] [-- RUN-ARGS...]",
		Short: "Show the effective policy for a user, and the decision for a command line",
		Long: `Show the policy as it applies to USER (groups from the user database, or as
given with --group), with the file:line of every rule, and, given a run
command line after --, the decision: what is allowed, forced or refused and
by which rule. Paths are taken as written (not resolved as the user).`,
		Example: `  containerjob policy explain --user alice
  containerjob policy explain --user alice -- -v /data/x:/x nvidia/cuda:12.4 nvidia-smi`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if userName == "" {
				return usagef("--user is required")
			}
			if policyPath == "" {
				policyPath = policy.DefaultPath
			}
			pol, err := policy.Load(policyPath)
			if err != nil {
				return err
			}
			caller := policy.Caller{User: userName, UID: 65534, GID: 65534, Home: "/home/" + userName, GroupNames: groups}
			if u, err := user.Lookup(userName); err == nil {
				if c, err := lookupCaller(u, nil); err == nil {
					if groups != nil {
						c.GroupNames = groups
					}
					caller = c
				}
			}
			out := cmd.OutOrStdout()
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
			if len(args) == 0 {
				return nil
			}
			f := &runFlags{}
			run := newRunCmdWith(f)
			fl := run.Flags()
			if err := fl.Parse(args); err != nil {
				return usagef("%v", err)
			}
			rest := fl.Args()
			if len(rest) == 0 {
				return usagef("no image in the command line to explain")
			}
			req, _, err := requestFromFlags(fl, f, rest)
			if err != nil {
				return err
			}
			jobDir = strings.ReplaceAll(jobDir, "USER", caller.User)
			job := policy.Job{Dir: jobDir, Scheduler: "slurm", ID: "EXPLAIN", Node: "node"}
			req.Cwd = jobDir
			// Default mounts as if each existed on the node.
			for _, dm := range pol.DefaultMounts(caller, job) {
				req.DefaultMounts = append(req.DefaultMounts, policy.MountRequest{Given: dm.Path, Source: dm.Path, Target: dm.Path, ReadOnly: dm.ReadOnly})
			}
			fmt.Fprintf(out, "\ndecision for: %s\n", strings.Join(args, " "))
			d, err := pol.Decide(req, caller, job)
			if err != nil {
				fmt.Fprintf(out, "  REFUSED: %v\n", err)
				return exitStatus(1)
			}
			for _, a := range d.Trail {
				fmt.Fprintf(out, "  %-16s %-50s %s\n", a.Action, a.Item, a.Rule)
			}
			fmt.Fprintln(out, "  ALLOWED")
			return nil
		},
	}
	cmd.Flags().StringVar(&userName, "user", "", "the user to explain for")
	cmd.Flags().StringSliceVar(&groups, "group", nil, "groups to assume instead of the user database's")
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default /etc/containerjob/policy.toml)")
	cmd.Flags().StringVar(&jobDir, "job-dir", "/home/USER/job", "job directory to assume")
	return cmd
}
