package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/containerjob/containerjob/doctor"
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

func newDoctorCmd() *cobra.Command {
	var policyPath string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node's installation: engine, policy, sudoers, binary, Slurm wiring, cgroups, GPUs",
		Long: `Check this node's installation and print a pass/fail list with fixes:
engine reachable and its API version, policy valid and root-owned, sudoers
drop-in present and correct, binary root-owned and not writable by others,
SPANK plugin in plugstack.conf, Prolog/Epilog in slurm.conf, cgroup version
and the engine's cgroup driver, and what the GPU mode needs. Exits 1 if any
check fails. Run it as root.`,
		Example: "  containerjob doctor",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("doctor"); err != nil {
				return err
			}
			path, err := policyPathFor(asRoot, policyPath)
			if err != nil {
				return err
			}
			pol, perr := loadPolicy(path)
			// The engine as the policy names it, else at the built-in
			// address: doctor reports an engine it cannot reach, never
			// stops at it.
			engPol := pol
			if engPol == nil {
				engPol = policy.BuiltinSettings()
			}
			n, nerr := nodeFor(engPol)
			var eng launcher.Engine
			if nerr == nil {
				defer n.Close()
				eng = n.Engine
			}
			checks := doctor.Run(doctor.Node{PolicyPath: path, Policy: pol, PolicyErr: perr, Binary: selfPath, Engine: eng, EngineErr: nerr})
			failed := printChecks(cmd.OutOrStdout(), checks)
			if failed > 0 {
				return exitStatus(1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file")
	return cmd
}

func printChecks(w io.Writer, checks []doctor.Check) int {
	failed := 0
	for _, c := range checks {
		mark := "ok  "
		switch {
		case c.Skip:
			mark = "skip"
		case c.Warn:
			mark = "WARN"
		case !c.OK:
			mark = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s %-34s %s\n", mark, c.Name, c.Info)
		if (!c.OK || c.Warn) && !c.Skip && c.Fix != "" {
			fmt.Fprintf(w, "     fix: %s\n", c.Fix)
		}
	}
	return failed
}
