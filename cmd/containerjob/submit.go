package main

import (
	"errors"
	"os"
	"os/user"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// submitCheckEnv marks the plugin's question at submission; the options
// come in the CONTAINERJOB_SPANK_* variables a task gets, but without
// CONTAINERJOB_SPANK=1, which would make this process a task.
const submitCheckEnv = "CONTAINERJOB_SUBMIT_CHECK"

// newSubmitCheckCmd is the SPANK plugin's question where sbatch, srun or
// salloc runs (a login node), as the user, without privilege: would this
// host's policy refuse the container options whatever the compute node?
// A refusal is printed as the node would print it and ends with 125, and
// the plugin stops the submission. No policy here, or a question only the
// node can answer: nothing is said (exit 0). A courtesy, never a trust
// boundary: the compute node decides everything again.
func newSubmitCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "submit-check",
		Short:  "Judge a job's container options at submission (run by the SPANK plugin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv(submitCheckEnv) != "1" {
				return usagef("submit-check is the SPANK plugin's, run where sbatch, srun and salloc run")
			}
			return submitCheck()
		},
	}
}

func submitCheck() error {
	pol, err := loadPolicy(submitPolicyPath)
	if err != nil {
		return nil // no policy here (or not one to trust): the node decides
	}
	// The options as a task would hand them over: the same refusals of
	// pyxis options containerjob does not offer, the same run flags.
	os.Setenv(spankPrefix, "1")
	os.Setenv(spankPrefix+"_MODE", "prepend")
	args, _, err := spankArgs([]string{"containerjob", "true"})
	if err != nil {
		var ref *policy.Refusal
		if errors.As(err, &ref) {
			errorf("container options from srun/sbatch: %v", err)
			return exitStatus(125)
		}
		return nil // malformed options: srun and the node say so
	}
	f := &runFlags{}
	fl := newRunCmdWith(f).Flags()
	if err := fl.Parse(args[1:]); err != nil || f.existing || len(fl.Args()) == 0 {
		return nil
	}
	req, err := requestFromFlags(fl, f, fl.Args())
	if err != nil {
		return nil
	}
	caller, err := submitCaller()
	if err != nil {
		return nil // root, or not in the user database: the node says
	}
	return pol.JudgeSubmission(caller, req.Image, req.Flags)
}

// submitPolicyPath is the policy the question is asked of: the one this
// host would run with (a variable for tests).
var submitPolicyPath = policy.DefaultPath

// submitCaller is who submits, with the groups that decide their rules (a
// variable for tests, which run as root, whom containers never run as).
var submitCaller = func() (policy.Caller, error) {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		return policy.Caller{}, err
	}
	return node.PolicyCallerOf(u)
}
