package launch

import (
	"github.com/containerjob/containerjob/launcher"
	"github.com/containerjob/containerjob/policy"
)

// Node is what a privileged command works through on this node: the
// admins' policy, read once, and one connection to the node's engine.
// The CLI opens one per process (NodeFor, under the policy it loaded);
// tests build one around launcher/enginetest's engine.
type Node struct {
	Policy *policy.Policy
	Engine launcher.Engine
	close  func() error
}

// NodeFor is the node under a policy already loaded (a hook that goes on
// with the built-in settings when the admins' policy cannot be used).
func NodeFor(pol *policy.Policy) (*Node, error) {
	eng, err := launcher.Connect(pol.Settings.DockerHost)
	if err != nil {
		return nil, err
	}
	return &Node{Policy: pol, Engine: eng, close: eng.Close}, nil
}

// Close lets go of the engine's connection.
func (n *Node) Close() error {
	if n == nil || n.close == nil {
		return nil
	}
	return n.close()
}
