//go:build gendocs

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// The man page writer is built only with -tags gendocs (make man): its
// markdown and YAML packages would otherwise be initialised at every start
// of the binary that every job step runs, for a command users never call.
func init() { buildTimeCommands = append(buildTimeCommands, newGenDocsCmd) }

// newGenDocsCmd writes the man pages, containerjob(1) and one page per
// command from the CLI itself, and containerjob-policy(5) from
// docs/policy.md. Hidden: for `make man`, not for users.
func newGenDocsCmd() *cobra.Command {
	var policyDoc string
	cmd := &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(filepath.Join(dir, "man1"), 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Title: "CONTAINERJOB", Section: "1", Source: "containerjob", Manual: "containerjob manual"}
			if err := doc.GenManTree(root, header, filepath.Join(dir, "man1")); err != nil {
				return err
			}
			if policyDoc == "" {
				return nil
			}
			md, err := os.ReadFile(policyDoc)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(dir, "man5"), 0o755); err != nil {
				return err
			}
			page := append([]byte("% CONTAINERJOB-POLICY 5\n\n# NAME\n\ncontainerjob-policy - the site policy of containerjob, /etc/containerjob/policy.toml\n\n"), md...)
			if err := os.WriteFile(filepath.Join(dir, "man5", "containerjob-policy.5"), md2man.Render(page), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "man pages in %s\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&policyDoc, "policy-doc", "", "docs/policy.md, for containerjob-policy(5)")
	return cmd
}
