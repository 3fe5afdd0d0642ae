package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Port is one published port the policy approved: HostIP:HostPort on the
// node forwards to ContainerPort inside.
type Port struct {
	HostIP        netip.Addr
	HostPort      uint16
	ContainerPort uint16
	Proto         string // "tcp" or "udp"
}

func (p Port) String() string {
	return fmt.Sprintf("%s:%d:%d/%s", hostIPString(p.HostIP), p.HostPort, p.ContainerPort, p.Proto)
}

// HostBinding is what the port occupies on the node: "IP:HOSTPORT/PROTO".
func (p Port) HostBinding() string {
	return fmt.Sprintf("%s:%d/%s", hostIPString(p.HostIP), p.HostPort, p.Proto)
}

func hostIPString(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// loopback is where a published port listens unless the user names an
// address: on a shared node a port on every interface is reachable by the
// whole cluster, so exposing it is a decision the admin makes in ports_allow.
var loopback = netip.MustParseAddr("127.0.0.1")

// portRule is one ports_allow entry: [IP:]LOW[-HIGH][/tcp|/udp]. Without an
// IP the range may be published on the loopback address only.
type portRule struct {
	ip        netip.Addr
	low, high uint16
	proto     string
}

func parsePortRule(s string) (portRule, error) {
	var r portRule
	rest, proto, err := cutProto(s)
	if err != nil {
		return r, err
	}
	r.proto = proto
	if r.ip, rest, err = cutHostIP(rest); err != nil {
		return r, err
	}
	lowS, highS, isRange := strings.Cut(rest, "-")
	low, err := parsePortNumber(lowS)
	if err != nil {
		return r, err
	}
	high := low
	if isRange {
		if high, err = parsePortNumber(highS); err != nil {
			return r, err
		}
		if high < low {
			return r, fmt.Errorf("port range %q ends before it starts", rest)
		}
	}
	r.low, r.high = low, high
	return r, nil
}

// cutProto splits off a "/tcp" or "/udp" suffix; tcp without one.
func cutProto(s string) (rest, proto string, err error) {
	rest, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		return rest, "tcp", nil
	}
	if proto != "tcp" && proto != "udp" {
		return rest, proto, fmt.Errorf("protocol %q is not tcp or udp", proto)
	}
	return rest, proto, nil
}

// cutHostIP splits off an "IP:" prefix (IPv6 in brackets) before a host
// port or range; 127.0.0.1 without one.
func cutHostIP(s string) (netip.Addr, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return loopback, s, nil
	}
	ip, err := parseHostIP(s[:i])
	return ip, s[i+1:], err
}

func parseHostIP(s string) (netip.Addr, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// ParsePublish parses a user's -p/--publish: [IP:]HOSTPORT:CONTAINERPORT[/PROTO].
// The host port must be given (a random one could not be checked against
// the policy); the address defaults to 127.0.0.1, not docker's 0.0.0.0.
func ParsePublish(s string) (Port, error) {
	var p Port
	rest, proto, err := cutProto(s)
	if err != nil {
		return p, fmt.Errorf("--publish %q: %w", s, err)
	}
	p.Proto = proto
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return p, fmt.Errorf("--publish %q: give HOSTPORT:CONTAINERPORT (a random host port is not offered)", s)
	}
	cport, err := parsePortNumber(rest[i+1:])
	if err != nil {
		return p, fmt.Errorf("--publish %q: container port %w", s, err)
	}
	if p.HostIP, rest, err = cutHostIP(rest[:i]); err != nil {
		return p, fmt.Errorf("--publish %q: %w", s, err)
	}
	hport, err := parsePortNumber(rest)
	if err != nil {
		return p, fmt.Errorf("--publish %q: host port %w", s, err)
	}
	p.HostPort, p.ContainerPort = hport, cport
	return p, nil
}

// allows reports whether the rule covers publishing p on the node.
func (r portRule) allows(p Port) bool {
	return r.ip == p.HostIP && r.proto == p.Proto && p.HostPort >= r.low && p.HostPort <= r.high
}

// covered by a ports_allow rule, on a network that can publish.
func (p *Policy) decidePorts(d *Decision, req Request, eff *Effective) error {
	for _, s := range req.Publish {
		pt, err := ParsePublish(s)
		if err != nil {
			return &Refusal{Item: truncate(err.Error(), 256), Rule: builtin("publish-syntax")}
		}
		if d.Network == "none" || d.Network == "host" {
			return &Refusal{Item: fmt.Sprintf("--publish %s on network %q", pt, d.Network), Reason: "has nothing to forward", Rule: builtin("publish-network"), Hint: "use --network bridge or a named network"}
		}
		if slices.ContainsFunc(d.Ports, func(q Port) bool { return q.HostIP == pt.HostIP && q.HostPort == pt.HostPort && q.Proto == pt.Proto }) {
			return &Refusal{Item: fmt.Sprintf("--publish %s", pt), Reason: "publishes the same host port twice", Rule: builtin("publish-syntax")}
		}
		found := -1
		for i, e := range eff.PortsAllow {
			if r, ok := p.ports[e.Value]; ok && r.allows(pt) {
				found = i
				break
			}
		}
		if found < 0 {
			return &Refusal{Item: fmt.Sprintf("publishing host port %s", pt), Reason: "is not allowed", Rule: eff.PortsAllow.missing("ports_allow")}
		}
		d.Ports = append(d.Ports, pt)
		d.Trail = append(d.Trail, Applied{Item: "publish " + pt.String(), Action: "allowed", Rule: eff.PortsAllow[found].Origin})
	}
	return nil
}
