package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

func newPullCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Fetch an image you may run from its registry onto this node",
		Long: `Fetch an image from its registry onto this node, when the policy lets you
run it and allows pulls (the pull key). On a terminal progress is one line
updated in place; in a job's output file it is one plain line per layer
event. A name fetched this way means what its registry serves, for every
user: images cannot be loaded, tagged or removed through containerjob.`,
		Example: `  containerjob pull alpine:3.20
  srun -N4 --ntasks-per-node=1 containerjob pull registry.example.org/lab/tool:1.2   # warm every node of a job`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
				// Progress is written while the pull lock is held: never
				// straight to a descriptor of the caller's.
				progress := launcher.NewCallerWriter(cmd.ErrOrStderr())
				p, err := o.node.Pull(ctx, o.caller, args[0], progress, isTerminal(os.Stderr), func(w string) { warningf("%s", w) })
				progress.Drain(time.Minute)
				if err != nil {
					return err
				}
				if p.Present {
					fmt.Fprintf(cmd.OutOrStdout(), "%s is already on this node (%.19s); the policy allows pulling missing images only\n", p.Ref, p.ID)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %.19s\n", p.Ref, p.ID)
				return nil
			})
		},
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

// newNotOfferedCmd answers the docker commands that change what an image
// name means on the node (for every user) with a refusal, instead of letting
// "containerjob load x" try to run an image named "load".
func newNotOfferedCmd(name, why string) *cobra.Command {
	return &cobra.Command{
		Use:                name,
		Short:              "Not offered: " + why,
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			refusal := &policy.Refusal{
				Item:   "containerjob " + name,
				Reason: "is not offered (" + why + ")",
				Hint:   "ask your admin to provide the image",
				Rule:   policy.Origin{Table: "built-in", Key: "image-store"},
			}
			// Escalate only to leave the refusal in the audit trail.
			return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
				o.node.Record("decision", map[string]any{"user": o.caller.User, "uid": o.caller.UID, "action": name, "args": args,
					"decision": "refused", "reason": refusal.Error()})
				return refusal
			})
		},
	}
}

func notOfferedCommands() []*cobra.Command {
	const shared = "images on a node are shared by all its users, and this would change what an image name means for them"
	var out []*cobra.Command
	for _, n := range []string{"load", "import", "tag", "rmi", "build", "commit"} {
		out = append(out, newNotOfferedCmd(n, shared))
	}
	return append(out, newNotOfferedCmd("push", "the engine would push from this node to a registry on your behalf"))
}

// newAttachCmd streams one of the caller's running containers.
func newAttachCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attach CONTAINER",
		Short: "Follow the output of one of your running containers",
		Long: `Follow what one of your running containers writes from now on. When it
exits, attach exits with its status; Ctrl-C detaches and leaves it running.
Your input is not passed to it.`,
		Example: `  containerjob attach web
  containerjob attach 3f2a9c1b`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwnContainer(cmd, args, args[0], func(ctx context.Context, o ownContext, c launcher.Managed) error {
				if c.Output == launcher.OutputDirect {
					return hint.Errorf("read the job's output file (containers started with --name keep the engine's path and can be followed)", "container %.12s writes its output to its job's output file itself, not through the engine: there is nothing to attach to", c.ID)
				}
				sctx, stop := signalContext(ctx)
				defer stop()
				code, ended, err := launcher.Attach(sctx, o.node.Engine, c.ID, cmd.OutOrStdout(), cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				if !ended {
					fmt.Fprintf(cmd.ErrOrStderr(), "containerjob: detached from %.12s; it keeps running\n", c.ID)
					return nil
				}
				return exitStatus(code)
			})
		},
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

// signalContext ends when the user interrupts (Ctrl-C) or the step is
// signalled, for commands whose interruption means "stop following".
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
}
