// Command containerjob runs Docker images for the users of a batch
// scheduler, as themselves, under the admins' policy.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/launcher"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "containerjob",
		Short: "Run Docker images safely inside batch jobs",
		Long: `containerjob runs Docker images for the users of a batch scheduler (Slurm,
PBS) as themselves, with their job's directory and allocation, under a
policy the cluster's admins control. Users never touch the docker command.

"containerjob IMAGE [COMMAND [ARG...]]" is short for "containerjob run IMAGE
[COMMAND [ARG...]]": anything that is not a command below starts a run.

Exit status of a run: the command's own; 125 when the policy refused the
request or containerjob failed before the command ran (one "containerjob:
error:" line on stderr says why, and a "containerjob: hint:" line what to
do); 126 when the command cannot be run; 127 when it is not in the image;
141 when the output's reader went away (like a shell pipeline); 128+N when
the container was killed by signal N (137 also for running out of memory,
which a line then says). Other commands exit 0 on success, 1 on failure,
and 125 when refused or given a command line they cannot understand.`,
		Example: `  containerjob alpine:3.20 sh -c 'id; pwd'
  srun containerjob alpine:3.20 hostname
  srun --container-image=alpine:3.20 hostname`,
		Version:       launcher.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(), newVersionCmd(),
		newCleanupCmd("prolog", "Prepare this node for a job: remove containers a previous run of the same job left", true),
		newCleanupCmd("epilog", "Remove every container of a finished job on this node", false),
		newGCCmd(), newPolicyCmd())
	root.AddCommand(ownCommands()...)
	root.AddCommand(notOfferedCommands()...)
	root.AddCommand(newDoctorCmd(), newSubmitCheckCmd())
	for _, c := range buildTimeCommands {
		root.AddCommand(c())
	}
	return root
}

// buildTimeCommands are linked in only by build tags (gen-man: -tags gendocs).
var buildTimeCommands []func() *cobra.Command

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "containerjob %s\n", launcher.Version)
			return nil
		},
	}
}

// withImplicitRun lets "containerjob IMAGE CMD" mean "containerjob run IMAGE
// CMD": anything that is not a subcommand or a root flag starts a run.
func withImplicitRun(root *cobra.Command, args []string) []string {
	if len(args) == 0 {
		return args
	}
	switch args[0] {
	case "-h", "--help", "--version", "help", "completion", "__complete", "__completeNoDesc":
		return args
	}
	for _, c := range root.Commands() {
		if c.Name() == args[0] || c.HasAlias(args[0]) {
			return args
		}
	}
	return append([]string{"run"}, args...)
}

func main() {
	if os.Geteuid() == 0 {
		ownResources()
		// containerjob's own lines reach the caller without ever making a
		// root process that holds a lock of the node wait on them.
		msgs := launcher.NewCallerWriter(os.Stderr)
		stderr = msgs
	}
	root := newRootCmd()
	args, fromSpank, err := spankArgs(os.Args)
	if err != nil {
		if firstLocalTask() {
			errorf("container options from srun/sbatch: %v", err)
		}
		os.Exit(launcher.ExitLaunchFailed)
	}
	if !fromSpank {
		args = withImplicitRun(root, os.Args[1:])
	}
	root.SetArgs(args)
	code := exitCode(root.Execute())
	if w, ok := stderr.(*launcher.CallerWriter); ok {
		w.Drain(time.Minute)
	}
	os.Exit(code)
}
