package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerjob/containerjob/internal/hint"
)

// Entry is one value of an accumulated list, with where it was written.
type Entry struct {
	Value  string
	Origin Origin
}

// List accumulates a key over [defaults], the caller's groups and the
// caller's user table. It remembers every table that set the key, so a
// refusal can cite them when nothing in the list matched.
type List []Entry

func (l List) find(v string) (Origin, bool) {
	for _, e := range l {
		if e.Value == v {
			return e.Origin, true
		}
	}
	return Origin{}, false
}

// missing is the rule to cite when no entry of the list matched: the first
// table that set the key, or the built-in default of an empty list.
func (l List) missing(key string) Origin {
	if len(l) == 0 {
		return Origin{Table: "built-in", Key: key + " (empty: nothing is allowed unless the policy lists it)"}
	}
	return l[0].Origin
}

// Bool and Int are scalars with the rule that set them.
type Bool struct {
	Value  bool
	Origin Origin
}

type Int struct {
	Value  int64
	Origin Origin
}

// Effective is the policy as it applies to one caller.
type Effective struct {
	Tables        []string
	ImagesAllow   List
	ImagesDeny    List
	Pull          List
	MountsAlways  List
	MountsAllow   List
	MountsDefault List
	PortsAllow    List
	FlagsAllow    List
	NetworksAllow List
	EnvForce      List
	Ulimits       List
	CapsAllow     List
	OutsideJobs   Bool
	MountJobDir   Bool
	ReadOnlyRoot  Bool
	Init          Bool
	LocalOnly     Bool
	PidsLimit     Int
	ShmSizeMax    Int // 0: no maximum
	MaxPerJob     Int // 0: no limit
	MaxPerUser    Int // 0: no limit
	PidsPerUser   Int
	WorkdirForce  String
}

// String is a string scalar with the rule that set it.
type String struct {
	Value  string
	Origin Origin
}

// Built-in values of scalars no table sets.
const (
	defaultPidsLimit = 4096
	// defaultPidsPerUser stands for a quarter of the node's pid_max
	// (PidsPerUserDefault): a fixed number equal to a node's pid_max let
	// one user take every pid the node has.
	defaultPidsPerUser = -1
)

// PidsPerUserDefault is pids_limit_per_user where no table sets it: a
// quarter of the node's pid_max (8192 where it is not known), so that
// no one user's containers can take the node's last pids.
func PidsPerUserDefault(pidMax int64) int64 {
	if pidMax <= 0 {
		return 8192
	}
	return max(pidMax/4, 1)
}

// Effective merges the tables that apply to caller. Lists accumulate
// defaults, then groups in name order, then the user table; deny lists always
// beat allow lists when they are used. A scalar is taken from the user table
// if it sets it, else from the caller's groups (when groups disagree the more
// permissive value wins: true over false, the larger limit over the smaller,
// so that adding a user to a group never takes a right away), else from
// [defaults], else the built-in default.
func (p *Policy) Effective(caller Caller) *Effective {
	e := &Effective{
		OutsideJobs:  Bool{Value: false, Origin: builtin("outside_jobs (default false)")},
		MountJobDir:  Bool{Value: true, Origin: builtin("mount_job_dir (default true)")},
		ReadOnlyRoot: Bool{Origin: builtin("read_only_root (default false)")},
		Init:         Bool{Origin: builtin("init (default false)")},
		LocalOnly:    Bool{Origin: builtin("local_only (default false)")},
		PidsLimit:    Int{Value: defaultPidsLimit, Origin: builtin("pids_limit (default 4096)")},
		ShmSizeMax:   Int{Origin: builtin("shm_size_max (default none)")},
		MaxPerJob:    Int{Origin: builtin("max_containers_per_job (default none)")},
		MaxPerUser:   Int{Origin: builtin("max_containers_per_user (default none)")},
		PidsPerUser:  Int{Value: defaultPidsPerUser, Origin: builtin("pids_limit_per_user (default a quarter of the node's pid_max)")},
		WorkdirForce: String{Origin: builtin("workdir_force (default none)")},
	}
	// Look up the caller's few groups rather than walk the policy's many,
	// so a decision costs what the caller's rules need, not the file's size.
	names := make([]string, 0, len(caller.GroupNames))
	for _, g := range caller.GroupNames {
		if _, ok := p.groups[g]; ok && !slices.Contains(names, g) {
			names = append(names, g)
		}
	}
	slices.Sort(names)
	groups := make([]table, 0, len(names))
	for _, g := range names {
		groups = append(groups, p.groups[g])
	}
	layers := []table{p.defaults}
	layers = append(layers, groups...)
	user, hasUser := p.users[caller.User]
	if hasUser {
		layers = append(layers, user)
	}
	for _, t := range layers {
		e.Tables = append(e.Tables, t.name)
		e.ImagesAllow = append(e.ImagesAllow, t.lists["images_allow"]...)
		e.ImagesDeny = append(e.ImagesDeny, t.lists["images_deny"]...)
		e.Pull = append(e.Pull, t.lists["pull"]...)
		e.MountsAlways = append(e.MountsAlways, t.lists["mounts_always"]...)
		e.MountsAllow = append(e.MountsAllow, t.lists["mounts_allow"]...)
		e.MountsDefault = append(e.MountsDefault, t.lists["mounts_default"]...)
		e.PortsAllow = append(e.PortsAllow, t.lists["ports_allow"]...)
		e.FlagsAllow = append(e.FlagsAllow, t.lists["flags_allow"]...)
		e.NetworksAllow = append(e.NetworksAllow, t.lists["networks_allow"]...)
		e.EnvForce = append(e.EnvForce, t.lists["env_force"]...)
		e.Ulimits = append(e.Ulimits, t.lists["ulimits"]...)
		e.CapsAllow = append(e.CapsAllow, t.lists["capabilities_allow"]...)
	}

	// Scalars: defaults, then the most permissive group value, then the
	// user. fromGroup tells whether dst was already set by a group, in
	// which case a later group only wins with a more permissive value.
	fromGroup := func(o Origin) bool { return strings.HasPrefix(o.Table, "group.") }
	// setBool: lenient is the permissive value of the key (true for a
	// right such as outside_jobs, false for a constraint such as
	// read_only_root).
	setBool := func(dst *Bool, t table, key string, v *bool, inGroup, lenient bool) {
		if v == nil || (inGroup && fromGroup(dst.Origin) && dst.Value == lenient) {
			return
		}
		*dst = Bool{Value: *v, Origin: t.origin(key, "")}
	}
	// setInt: larger is more permissive; 0 means unlimited for limits.
	setInt := func(dst *Int, t table, key string, v *int64, inGroup, zeroUnlimited bool) {
		if v == nil {
			return
		}
		if inGroup && fromGroup(dst.Origin) && (dst.Value > *v || (zeroUnlimited && dst.Value == 0)) {
			return
		}
		*dst = Int{Value: *v, Origin: t.origin(key, "")}
	}
	apply := func(t table, inGroup bool) {
		r := t.rules
		setBool(&e.OutsideJobs, t, "outside_jobs", r.OutsideJobs, inGroup, true)
		setBool(&e.MountJobDir, t, "mount_job_dir", r.MountJobDir, inGroup, true)
		setBool(&e.ReadOnlyRoot, t, "read_only_root", r.ReadOnlyRoot, inGroup, false)
		setBool(&e.LocalOnly, t, "local_only", r.LocalOnly, inGroup, false)
		setBool(&e.Init, t, "init", r.Init, inGroup, true)
		setInt(&e.PidsLimit, t, "pids_limit", r.PidsLimit, inGroup, false)
		setInt(&e.MaxPerJob, t, "max_containers_per_job", r.MaxContainersPerJob, inGroup, true)
		setInt(&e.MaxPerUser, t, "max_containers_per_user", r.MaxContainersPerUser, inGroup, true)
		setInt(&e.PidsPerUser, t, "pids_limit_per_user", r.PidsLimitPerUser, inGroup, true)
		if r.ShmSizeMax != nil {
			n, _ := parseSize(*r.ShmSizeMax)
			setInt(&e.ShmSizeMax, t, "shm_size_max", &n, inGroup, true)
		}
		// A forced working directory: the first table in order that sets
		// it among groups (name order), overridden by the user table.
		if r.WorkdirForce != nil && !(inGroup && fromGroup(e.WorkdirForce.Origin)) {
			e.WorkdirForce = String{Value: *r.WorkdirForce, Origin: t.origin("workdir_force", "")}
		}
	}
	apply(p.defaults, false)
	for _, g := range groups {
		apply(g, true)
	}
	if hasUser {
		apply(user, false)
	}
	return e
}

func (p *Policy) matchImage(l List, ref ImageRef, tags *DigestTags) (Origin, bool) {
	for _, e := range l {
		if pat, ok := p.compiled[e.Value]; ok && pat.matches(ref, tags) {
			return e.Origin, true
		}
	}
	return Origin{}, false
}

// unresolvedDeny is the first deny rule that could name a tag of ref's
// repository while ref's tags are not all known: a digest that might be
// that tag's is refused, not let through.
func (p *Policy) unresolvedDeny(l List, ref ImageRef, tags *DigestTags) (Origin, bool) {
	if ref.Digest == "" {
		return Origin{}, false
	}
	for _, e := range l {
		pat, ok := p.compiled[e.Value]
		if !ok || pat.wholeRepo || !pat.mayNameATagOf(ref.Name) {
			continue
		}
		// A literal tag needs its resolution; a glob or expression over
		// tags, the digest's own tags on the node.
		known := tags != nil && tags.Unresolved == ""
		if pat.literalTag == "" {
			known = known && tags.Local
		}
		if !known {
			return e.Origin, true
		}
	}
	return Origin{}, false
}

// TagsToResolve is what the launch must find out about a digest-pinned
// reference before the policy can judge it for caller: the literal tags
// of its repository that rules name (denied: those a deny rule names),
// and whether any rule names its tags by a glob or an expression (then the
// digest's own tags on the node decide). Nothing when no rule names a tag
// of the repository.
func (p *Policy) TagsToResolve(caller Caller, ref ImageRef) (literal, denied []string, byPattern bool) {
	if ref.Digest == "" {
		return nil, nil, false
	}
	eff := p.Effective(caller)
	for i, l := range []List{eff.ImagesDeny, eff.ImagesAllow} {
		for _, e := range l {
			pat, ok := p.compiled[e.Value]
			if !ok || pat.wholeRepo || !pat.mayNameATagOf(ref.Name) {
				continue
			}
			if pat.literalTag == "" {
				byPattern = true
				continue
			}
			if !slices.Contains(literal, pat.literalTag) {
				literal = append(literal, pat.literalTag)
			}
			if i == 0 && !slices.Contains(denied, pat.literalTag) {
				denied = append(denied, pat.literalTag)
			}
		}
	}
	return literal, denied, byPattern
}

// Missing is the rule to cite when nothing in the list matched.
func (l List) Missing(key string) Origin { return l.missing(key) }

// Has reports whether the list holds v, and the rule that put it there.
func (l List) Has(v string) (Origin, bool) { return l.find(v) }

// ImageAllowed answers, for `containerjob images`, whether the caller may
// run ref: allowed by some images_allow rule and denied by none.
func (p *Policy) ImageAllowed(caller Caller, ref string) bool {
	_, _, err := p.judgeImage(p.Effective(caller), ref, nil)
	return err == nil
}

// JudgeImage is judgeImage for caller: the launch judges the reference a
// job's pin replaced, too, so that no pin can widen what was asked for.
func (p *Policy) JudgeImage(caller Caller, image string, tags *DigestTags) error {
	_, _, err := p.judgeImage(p.Effective(caller), image, tags)
	return err
}

// judgeImage decides whether image may run under eff: deny beats allow, and
// nothing is allowed unless a rule says so. It returns the normalized
// reference and the rule that allowed it, or the refusal. A digest-pinned
// reference is judged with what is known of its tags (DigestTags).
func (p *Policy) judgeImage(eff *Effective, image string, tags *DigestTags) (ImageRef, Origin, error) {
	ref, err := NormalizeImage(image)
	if err != nil {
		return ref, Origin{}, &Refusal{Item: err.Error(), Rule: builtin("image-reference"), Hint: hint.Of(err)}
	}
	if o, ok := p.matchImage(eff.ImagesDeny, ref, tags); ok {
		return ref, Origin{}, &Refusal{Item: fmt.Sprintf("image %q", image), Reason: "is denied", Rule: o}
	}
	if o, ok := p.unresolvedDeny(eff.ImagesDeny, ref, tags); ok {
		why := "its tags are not known on this node"
		if tags != nil && tags.Unresolved != "" {
			why = tags.Unresolved
		}
		return ref, Origin{}, &Refusal{Item: fmt.Sprintf("image %q", image), Reason: "cannot be told apart from a denied tag (" + why + ")", Rule: o,
			Hint: "run it by a tag the policy allows, or ask your admin to deny by digest"}
	}
	o, ok := p.matchImage(eff.ImagesAllow, ref, tags)
	if !ok {
		r := &Refusal{Item: fmt.Sprintf("image %q", image), Reason: "is not allowed", Rule: eff.ImagesAllow.missing("images_allow")}
		if ref.Digest != "" {
			r.Hint = "a digest runs only where a rule allows its whole repository, names the digest, or names a tag confirmed to resolve to it"
		}
		return ref, Origin{}, r
	}
	return ref, o, nil
}
