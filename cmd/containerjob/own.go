package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/containerjob/containerjob/internal/hint"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// The commands in this file act on the caller's own containers only. A
// container is the caller's when the uid label containerjob set at create
// equals the caller's uid; users cannot set labels, and names are never
// trusted (containers are matched by id or by the caller's own short
// name, after the uid check). They see this node's containers only: where
// several slurmd nodes share one engine, another node's containers belong
// to another step's host, as they would on separate machines.

// ownContext is what every own-container command needs.
type ownContext struct {
	caller policy.Caller
	node   *node.Service // the policy and the engine
	here   string        // the node this command runs on
}

// withOwn escalates like run does, then resolves the caller and engine.
func withOwn(cmd *cobra.Command, args []string, fn func(ctx context.Context, o ownContext) error) error {
	inv, sudoUID, err := currentInvocation()
	if err != nil {
		return err
	}
	if inv == viaSudo && resourceErr != nil {
		return resourceErr
	}
	if inv == asUser {
		argv := strings.Fields(cmd.CommandPath())[1:]
		cmd.Flags().Visit(func(f *pflag.Flag) { argv = append(argv, "--"+f.Name+"="+f.Value.String()) })
		return escalate(append(append(argv, "--"), args...), nil)
	}
	asUserFlag, _ := cmd.Flags().GetString("as-user")
	caller, err := privilegedCaller(inv, sudoUID, asUserFlag)
	if err != nil {
		return err
	}
	path, err := policyPathFor(inv, "")
	if err != nil {
		return err
	}
	n, err := openNode(path)
	if err != nil {
		return err
	}
	defer n.Close()
	return fn(context.Background(), ownContext{caller: node.PolicyCaller(caller), node: n, here: node.Here()})
}

// mine lists the caller's containers on this node.
func (o ownContext) mine(ctx context.Context) ([]launcher.Managed, error) {
	all, err := launcher.ListManaged(ctx, o.node.Engine, "", "")
	if err != nil {
		return nil, err
	}
	return ownedHere(all, o.caller.UID, o.here), nil
}

// ownedHere keeps the containers of uid on node.
func ownedHere(all []launcher.Managed, uid uint32, node string) []launcher.Managed {
	id := strconv.FormatUint(uint64(uid), 10)
	var out []launcher.Managed
	for _, c := range all {
		if c.UID == id && c.OnNode(node) {
			out = append(out, c)
		}
	}
	return out
}

// find resolves a reference (an id prefix of at least 4 characters, or the
// short name the caller gave with --name) among the caller's containers
// only; another user's container is "not found", whatever its name.
func (o ownContext) find(ctx context.Context, ref string) (launcher.Managed, error) {
	mine, err := o.mine(ctx)
	if err != nil {
		return launcher.Managed{}, err
	}
	var hits []launcher.Managed
	for _, c := range mine {
		if (len(ref) >= 4 && strings.HasPrefix(c.ID, ref)) || c.ShortName == ref {
			hits = append(hits, c)
		}
	}
	switch len(hits) {
	case 0:
		return launcher.Managed{}, hint.Errorf("see containerjob ps", "no container of yours matches %q", ref)
	case 1:
		return hits[0], nil
	}
	return launcher.Managed{}, hint.Errorf("use more of the id", "%q matches %d of your containers", ref, len(hits))
}

// withOwnContainer is withOwn for commands about one container: ref is
// resolved among the caller's containers only.
func withOwnContainer(cmd *cobra.Command, args []string, ref string, fn func(ctx context.Context, o ownContext, c launcher.Managed) error) error {
	return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
		c, err := o.find(ctx, ref)
		if err != nil {
			return err
		}
		return fn(ctx, o, c)
	})
}

func newPsCmd() *cobra.Command {
	var all, gpus bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List your containers on this node",
		Example: `  containerjob ps
  containerjob ps --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				if gpus {
					// Which job uses which GPU on this node, for everyone:
					// the scheduler shows the same to all users.
					all, err := launcher.ListManaged(ctx, o.node.Engine, "", "")
					if err != nil {
						return err
					}
					fmt.Fprintln(w, "GPUS\tJOB\tUSER\tCONTAINER\tSTATE")
					for _, c := range all {
						if c.GPUs != "" && c.State == "running" && c.OnNode(o.here) {
							fmt.Fprintf(w, "%s\t%s\t%s\t%.12s\t%s\n", c.GPUs, dash(c.Job), c.User, c.ID, c.State)
						}
					}
					return w.Flush()
				}
				mine, err := o.mine(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintln(w, "ID\tNAME\tJOB\tSTATE\tCREATED\tIMAGE")
				for _, c := range mine {
					if !all && c.State != "running" {
						continue
					}
					fmt.Fprintf(w, "%.12s\t%s\t%s\t%s\t%s\t%s\n", c.ID, dash(c.ShortName), dash(c.Job), c.State, c.Created.Format(time.DateTime), c.Image)
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "also stopped containers")
	cmd.Flags().BoolVar(&gpus, "gpus", false, "which GPUs of this node every job's running containers use")
	cmd.Flags().String("as-user", "", "root only: list this user's containers")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newActCmd builds stop, kill and rm: one engine call on one of the
// caller's containers.
func newActCmd(use, short string, act func(ctx context.Context, o ownContext, c launcher.Managed, sig string) error) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:     use + " CONTAINER...",
		Short:   short,
		Example: "  containerjob " + use + " 3f2a9c1b\n  containerjob " + use + " web",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
				for _, ref := range args {
					c, err := o.find(ctx, ref)
					if err != nil {
						return err
					}
					if err := act(ctx, o, c, sig); err != nil {
						return fmt.Errorf("%s %.12s: %v", use, c.ID, err)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%.12s\n", c.ID)
				}
				return nil
			})
		},
	}
	if use == "kill" {
		cmd.Flags().StringVarP(&sig, "signal", "s", "SIGKILL", "signal to send")
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

func newInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "inspect CONTAINER",
		Short:   "Show one of your containers (a safe subset of docker inspect)",
		Example: "  containerjob inspect web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwnContainer(cmd, args, args[0], func(ctx context.Context, o ownContext, c launcher.Managed) error {
				info, err := launcher.InspectOwn(ctx, o.node.Engine, c.ID)
				if err != nil {
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			})
		},
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

func ownCommands() []*cobra.Command {
	return []*cobra.Command{
		newPsCmd(),
		newActCmd("stop", "Stop your containers (SIGTERM, then SIGKILL after the grace period)", func(ctx context.Context, o ownContext, c launcher.Managed, _ string) error {
			return launcher.Stop(ctx, o.node.Engine, c.ID, o.node.Policy.Settings.StopGraceSeconds)
		}),
		newActCmd("kill", "Send a signal to your containers", func(ctx context.Context, o ownContext, c launcher.Managed, sig string) error {
			return launcher.Kill(ctx, o.node.Engine, c.ID, sig)
		}),
		newActCmd("rm", "Remove your containers (running ones are stopped first)", func(ctx context.Context, o ownContext, c launcher.Managed, _ string) error {
			if errs := launcher.RemoveAll(ctx, o.node.Engine, []launcher.Managed{c}); errs[c.ID] != nil {
				return errs[c.ID]
			}
			return nil
		}),
		newInspectCmd(),
		newExecCmd(),
		newLogsCmd(),
		newImagesCmd(),
		newAttachCmd(),
		newPullCmd(),
	}
}

func newExecCmd() *cobra.Command {
	var tty, interactive bool
	cmd := &cobra.Command{
		Use:   "exec [flags] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in one of your running containers, as yourself",
		Long: `Run a command in one of your running containers (by id or the name you
gave it), as your own uid:gid, with the container's own restrictions (no
capabilities, no-new-privileges). -t and -i need the policy's tty and
interactive flags, as for run.`,
		Example: `  srun --container-name=work --container-image=alpine:3.20 true
  containerjob exec cj-1001-42-work ls /tmp
  containerjob exec -it 3f2a9c1b sh`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwnContainer(cmd, args, args[0], func(ctx context.Context, o ownContext, c launcher.Managed) error {
				if c.State != "running" {
					return fmt.Errorf("container %.12s is %s, not running", c.ID, c.State)
				}
				var flags []string
				cmd.Flags().Visit(func(f *pflag.Flag) {
					if slices.Contains(policy.UserFlags, f.Name) {
						flags = append(flags, f.Name)
					}
				})
				if err := o.node.Policy.DecideExec(o.caller, flags); err != nil {
					return err
				}
				stdio := launcher.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
				code, _, _, err := launcher.Exec(ctx, o.node.Engine, c.ID, launcher.ExecSpec{
					User: fmt.Sprintf("%d:%d", o.caller.UID, o.caller.GID), Cmd: args[1:], Tty: tty, Interactive: interactive,
				}, stdio, launcher.Options{StopGrace: time.Duration(o.node.Policy.Settings.StopGraceSeconds) * time.Second})
				if err != nil {
					return err
				}
				return exitStatus(code)
			})
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass stdin")
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

func newLogsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "logs CONTAINER",
		Short:   "Print the output one of your containers left, if the engine kept it",
		Example: "  containerjob logs web",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwnContainer(cmd, args, args[0], func(ctx context.Context, o ownContext, c launcher.Managed) error {
				return launcher.Logs(ctx, o.node.Engine, c.ID, cmd.OutOrStdout(), cmd.ErrOrStderr())
			})
		},
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}

func newImagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "images",
		Short:   "List the images on this node that you may run",
		Example: "  containerjob images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOwn(cmd, args, func(ctx context.Context, o ownContext) error {
				imgs, err := launcher.Images(ctx, o.node.Engine)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "IMAGE\tID\tSIZE\tCREATED")
				for _, im := range imgs {
					if o.node.Policy.ImageAllowed(o.caller, im.Ref) {
						fmt.Fprintf(w, "%s\t%.19s\t%.1f MiB\t%s\n", im.Ref, im.ID, float64(im.Size)/(1<<20), im.Created.Format(time.DateOnly))
					}
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().String("as-user", "", "root only: act for this user")
	return cmd
}
