package main

import (
	"os"

	"github.com/containerjob/containerjob/node"
	"github.com/containerjob/containerjob/policy"
)

// policyPathFor is every command's one choice of the policy file: the
// --policy flag, else CONTAINERJOB_POLICY, else the node's. Both are
// root's: a user who reaches containerjob through sudo names no policy
// (root would read whatever file was named), so under sudo either one is
// a usage error, never silently ignored.
func policyPathFor(inv invocation, flag string) (string, error) {
	env := os.Getenv("CONTAINERJOB_POLICY")
	if inv == viaSudo {
		if flag != "" || env != "" {
			return "", usagef("--policy and CONTAINERJOB_POLICY are for root only")
		}
		return policy.DefaultPath, nil
	}
	if flag != "" {
		return flag, nil
	}
	if env != "" {
		return env, nil
	}
	return policy.DefaultPath, nil
}

// The seams of the commands' tests, which run as any user against a fake
// engine: loadPolicy trusts only root's files, euid and currentInvocation
// say who runs this process, nodeFor connects to the policy's engine.
var (
	loadPolicy        = policy.Load
	euid              = os.Geteuid
	currentInvocation = establishInvocation
	nodeFor           = node.Open
)

// openNode is the node under the policy at path: the policy, read once,
// and one connection to its engine.
func openNode(path string) (*node.Service, error) {
	pol, err := loadPolicy(path)
	if err != nil {
		return nil, err
	}
	return nodeFor(pol)
}
