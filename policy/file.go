package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	units "github.com/docker/go-units"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/containerjob/containerjob/internal/hint"
)

// DefaultPath is where the admins' policy lives. Only root may point
// containerjob at another file.
const DefaultPath = "/etc/containerjob/policy.toml"

// DefaultAuditLog is the audit trail when the policy names none.
const DefaultAuditLog = "/var/log/containerjob/audit.log"

// maxPolicySize bounds the policy file read into memory.
const maxPolicySize = 4 << 20

// Settings are site-wide and cannot differ per group or user.
type Settings struct {
	DockerHost string `toml:"docker_host"`
	AuditLog   string `toml:"audit_log"`
	// MetricsDir is where the node's metrics are written for
	// node_exporter's textfile collector; "" (the default): none.
	MetricsDir       string `toml:"metrics_dir"`
	AuditSyslog      bool   `toml:"audit_syslog"`
	StopGraceSeconds int    `toml:"stop_grace_seconds"`
	// MountProbeSeconds bounds opening each mount source before the
	// launch (automounts are triggered then); a hung NFS server fails the
	// launch with its path instead of hanging it. 0 means the default, 20.
	MountProbeSeconds int `toml:"mount_probe_seconds"`
	// Scheduler tools, called by the privileged process with a clean
	// environment: their paths and configuration come from here only.
	Scontrol       string `toml:"scontrol"`
	SlurmConf      string `toml:"slurm_conf"`
	SlurmdSpoolDir string `toml:"slurmd_spool_dir"`
	// PBS: qstat's path and output format ("json" for OpenPBS and PBS
	// Professional, "text" for Torque).
	Qstat       string `toml:"qstat"`
	QstatFormat string `toml:"qstat_format"`
	// How a container is held to the job's allocation: "limits" copies the
	// job's CPUs and memory onto it, "cgroup-parent" also places it under
	// the step's cgroup, "none" (testing only) does neither.
	Confine string `toml:"confine"`
	// How allocated GPUs reach the container: "nvidia" (Docker device
	// requests for nvidia-container-toolkit), "cdi" (CDI names), "devices"
	// (plain device nodes), "none" (never any GPU).
	GPUsMode string `toml:"gpus_mode"`
	// Whether the engine also keeps the container's output: "none" (the
	// output goes only to the job's log; default), "json-file" or "local".
	ContainerLogs string `toml:"container_logs"`
	// Print each container's CPU time and peak memory as one line on the
	// job's stderr (always in the audit trail).
	ReportUsage bool `toml:"report_usage"`
	// Whether a bind mount's target may lie inside another bind mount
	// (-v ~/src:$JOB_DIR/x): "refuse" (default) or "allow". runc before
	// 1.1.14 (CVE-2024-45310) creates such a mountpoint through a path the
	// caller can swap for a symlink while the container starts, and so
	// creates directories as root outside the container. "allow" only
	// where containerjob doctor reports runc 1.1.14 or later.
	NestedMounts string `toml:"nested_mounts"`
	// Whether the caller's user and groups are added to the container's
	// /etc/passwd and /etc/group (generated files bound read-only over the
	// image's, which keep their own entries): "add" (default) or "off".
	UserEntries string `toml:"user_entries"`
	// How a Slurm step with several tasks runs: "shared" (default, as
	// pyxis does) gives each node one container for the step, which the
	// node's first task creates and every task of the step on that node
	// runs in (through the engine's exec), so ranks share /dev/shm, IPC
	// and PIDs; "per-task" gives each task its own container.
	StepContainers string `toml:"step_containers"`
	// slurm.conf's TmpFS (default /tmp; %n stands for the node's name),
	// where Slurm's mpi/pmix makes each step's client directory.
	SlurmTmpFS string `toml:"slurm_tmpfs"`
	// RDMA character devices under /dev/infiniband (uverbs0, rdma_cm) that
	// every container of a job step gets, where the node has them; for
	// MPI over InfiniBand or RoCE, with ulimits = ["memlock=-1"].
	FabricDevices []string `toml:"fabric_devices"`
	// Registries (hosts as image references name them: "nvcr.io",
	// "registry.example.org:5000") whose images run only for a caller
	// whose own credentials (~/.docker/config.json) the registry accepts
	// for that image, checked at every launch, even when the image is on
	// the node already: the node's image store is shared.
	PrivateRegistries []string `toml:"private_registries"`
	// The engine's image store (containerjob gc --images): once the file
	// system holding the engine's data is above ImageStoreHigh ("90%", or
	// bytes in use: "200GiB"), images containerjob pulled that no
	// container uses are removed, least recently used first, until it is
	// below ImageStoreLow; never one that ImagesKeep names (image patterns).
	ImageStoreHigh string   `toml:"image_store_high"`
	ImageStoreLow  string   `toml:"image_store_low"`
	ImagesKeep     []string `toml:"images_keep"`
}

// Rules is one table of the policy: [defaults], [group.NAME] or [user.NAME].
// Pointers tell "not set here" from a zero value, so that a later table only
// overrides what it names.
type Rules struct {
	ImagesAllow  []string `toml:"images_allow"`
	ImagesDeny   []string `toml:"images_deny"`
	Pull         []string `toml:"pull"`
	MountsAlways []string `toml:"mounts_always"`
	MountsAllow  []string `toml:"mounts_allow"`
	// MountsDefault are mounted unless the user opts out (--no-default-mount).
	MountsDefault []string `toml:"mounts_default"`
	FlagsAllow    []string `toml:"flags_allow"`
	NetworksAllow []string `toml:"networks_allow"`
	OutsideJobs   *bool    `toml:"outside_jobs"`
	MountJobDir   *bool    `toml:"mount_job_dir"`
	PidsLimit     *int64   `toml:"pids_limit"`
	// Forced values: the user cannot override them.
	EnvForce     []string `toml:"env_force"`      // NAME=VALUE
	WorkdirForce *string  `toml:"workdir_force"`  // working directory inside
	ReadOnlyRoot *bool    `toml:"read_only_root"` // root filesystem read-only
	Init         *bool    `toml:"init"`           // run an init as PID 1
	Ulimits      []string `toml:"ulimits"`        // NAME=SOFT[:HARD]
	ShmSizeMax   *string  `toml:"shm_size_max"`   // e.g. "1g"
	// LocalOnly: only images already on the node (no pull at all).
	LocalOnly *bool `toml:"local_only"`
	// CapabilitiesAllow: capabilities users may add with --cap-add.
	CapabilitiesAllow []string `toml:"capabilities_allow"`
	// Container counts on this node.
	MaxContainersPerJob  *int64 `toml:"max_containers_per_job"`
	MaxContainersPerUser *int64 `toml:"max_containers_per_user"`
	// PidsLimitPerUser caps the processes of all of a user's containers
	// on a node together; each new container gets at most what is left.
	PidsLimitPerUser *int64 `toml:"pids_limit_per_user"`
	// PortsAllow: host ports users may publish with -p, [IP:]LOW[-HIGH][/PROTO].
	PortsAllow []string `toml:"ports_allow"`
}

type document struct {
	Settings Settings         `toml:"settings"`
	Defaults Rules            `toml:"defaults"`
	Group    map[string]Rules `toml:"group"`
	User     map[string]Rules `toml:"user"`
}

// Origin says where a rule was written, for refusals and `policy explain`.
type Origin struct {
	File  string
	Line  int
	Table string // "defaults", "group.users", "user.alice", or "built-in"
	Key   string
}

func (o Origin) String() string {
	if o.Table == "built-in" {
		return "built-in rule " + o.Key
	}
	switch {
	case o.File == "":
		return fmt.Sprintf("%s in [%s]", o.Key, o.Table)
	case o.Line > 0:
		return fmt.Sprintf("%s in [%s] (%s:%d)", o.Key, o.Table, o.File, o.Line)
	}
	return fmt.Sprintf("%s in [%s] (%s)", o.Key, o.Table, o.File)
}

// table is one parsed table with the origin of every value in it.
type table struct {
	name  string
	rules Rules
	loc   *locator
	// lists holds each list key's entries with their origins, computed
	// once at load so that a decision does no attribution work.
	lists map[string][]Entry
}

func newTable(name string, r Rules, loc *locator) table {
	t := table{name: name, rules: r, loc: loc, lists: map[string][]Entry{}}
	for key, values := range map[string][]string{
		"images_allow": r.ImagesAllow, "images_deny": r.ImagesDeny, "pull": r.Pull,
		"mounts_always": r.MountsAlways, "mounts_allow": r.MountsAllow, "mounts_default": r.MountsDefault,
		"ports_allow": r.PortsAllow,
		"flags_allow": r.FlagsAllow, "networks_allow": r.NetworksAllow,
		"env_force": r.EnvForce, "ulimits": r.Ulimits, "capabilities_allow": r.CapabilitiesAllow,
	} {
		entries := make([]Entry, 0, len(values))
		for _, v := range values {
			entries = append(entries, Entry{Value: v, Origin: t.origin(key, v)})
		}
		t.lists[key] = entries
	}
	return t
}

func (t table) origin(key, value string) Origin {
	return Origin{File: t.loc.file, Line: t.loc.line(t.name, key, value), Table: t.name, Key: key}
}

// Policy is a loaded, validated policy file.
type Policy struct {
	File     string
	Settings Settings
	defaults table
	groups   map[string]table
	users    map[string]table
	compiled map[string]imagePattern // by pattern text
	ports    map[string]portRule     // by rule text
	keep     []imagePattern          // images_keep
	// image_store_high and _low, as Parse read them
	storeHigh, storeLow Watermark
}

// Load reads the policy at path, refusing a file that a non-root user could
// have written, then decodes it strictly.
// BuiltinSettings is a policy with nothing but the built-in settings (the
// default engine socket and audit log) and no rules: what the scheduler's
// cleanup hooks fall back on when the site's policy cannot be used. It
// allows nothing.
func BuiltinSettings() *Policy {
	p, err := Parse("built-in", nil)
	if err != nil {
		panic("the empty policy does not parse: " + err.Error())
	}
	return p
}

// UntrustedError: the policy file (or its directory) is not root's alone.
type UntrustedError struct{ msg string }

func (e *UntrustedError) Error() string { return e.msg }

func Load(path string) (*Policy, error) {
	data, err := readTrusted(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// readTrusted reads the file only if root owns it and neither group nor
// others may write it or its directory: the policy is the root of trust.
func readTrusted(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("policy file %s cannot be read: %w", path, errors.Unwrap(err))
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil, hint.Errorf("install the file itself", "policy file %s is a symbolic link", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy file %s cannot be opened: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkRootOwned(path, fi); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err != nil {
		return nil, err
	} else if err := checkRootOwned(dir, di); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("policy file %s is larger than %d bytes", path, maxPolicySize)
	}
	return data, nil
}

func checkRootOwned(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != 0 {
		return &UntrustedError{fmt.Sprintf("policy %s is not owned by root; run: chown root:root %s", path, path)}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &UntrustedError{fmt.Sprintf("policy %s is writable by group or others; run: chmod go-w %s", path, path)}
	}
	return nil
}

var typeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

var tableNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Parse decodes policy text. Unknown keys and wrong types are errors that
// name the file, line and key.
func Parse(path string, data []byte) (*Policy, error) {
	var doc document
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("%s:%d: %s", path, perr.Position.Line, firstLine(perr.Message))
		}
		var pperr *toml.ParseError
		if errors.As(err, &pperr) {
			return nil, fmt.Errorf("%s:%d: %s", path, pperr.Position.Line, firstLine(pperr.Message))
		}
		// Type mismatches come as plain errors: "toml: line N (last key
		// "a.b"): message".
		if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("%s:%s: %s: %s", path, m[1], m[2], m[3])
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	loc := newLocator(path, data)
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		if len(k) == 1 || (len(k) == 2 && (k[0] == "group" || k[0] == "user")) {
			return nil, fmt.Errorf("%s:%d: unknown table [%s]; the tables are [settings], [defaults], [group.NAME] and [user.NAME]",
				path, loc.line(k.String(), "", ""), k.String())
		}
		tbl, key := strings.Join(k[:len(k)-1], "."), k[len(k)-1]
		return nil, hint.Errorf("see docs/policy.md for the keys each table takes", "%s:%d: unknown key %q in [%s]",
			path, loc.line(tbl, key, ""), key, tbl)
	}
	p := &Policy{
		File:     path,
		Settings: doc.Settings,
		defaults: newTable("defaults", doc.Defaults, loc),
		groups:   map[string]table{},
		users:    map[string]table{},
		compiled: map[string]imagePattern{},
		ports:    map[string]portRule{},
	}
	if p.Settings.DockerHost == "" {
		p.Settings.DockerHost = "unix:///var/run/docker.sock"
	}
	if p.Settings.AuditLog == "" {
		p.Settings.AuditLog = DefaultAuditLog
	}
	if p.Settings.SlurmdSpoolDir == "" {
		p.Settings.SlurmdSpoolDir = "/var/spool/slurmd"
	}
	for _, e := range []struct {
		key     string
		value   *string
		allowed []string // the first is the default
	}{
		{"confine", &p.Settings.Confine, []string{"limits", "cgroup-parent", "none"}},
		{"gpus_mode", &p.Settings.GPUsMode, []string{"nvidia", "cdi", "devices", "none"}},
		{"container_logs", &p.Settings.ContainerLogs, []string{"none", "json-file", "local"}},
		{"qstat_format", &p.Settings.QstatFormat, []string{"json", "text"}},
		{"nested_mounts", &p.Settings.NestedMounts, []string{"refuse", "allow"}},
		{"user_entries", &p.Settings.UserEntries, []string{"add", "off"}},
		{"step_containers", &p.Settings.StepContainers, []string{"shared", "per-task"}},
	} {
		if *e.value == "" {
			*e.value = e.allowed[0]
		}
		if !slices.Contains(e.allowed, *e.value) {
			return nil, fmt.Errorf("%s:%d: %s %q is not %s", path, loc.line("settings", e.key, ""), e.key, *e.value, orList(e.allowed))
		}
	}
	if d := p.Settings.MetricsDir; d != "" && (!filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/") {
		return nil, fmt.Errorf("%s:%d: metrics_dir %q is not a clean absolute directory (such as /var/lib/prometheus/node-exporter)", path, loc.line("settings", "metrics_dir", ""), d)
	}
	for _, dev := range p.Settings.FabricDevices {
		if !strings.HasPrefix(dev, "/dev/infiniband/") || filepath.Clean(dev) != dev || strings.Count(dev, "/") != 3 {
			return nil, fmt.Errorf("%s:%d: fabric_devices: %q is not a device directly under /dev/infiniband/ (such as /dev/infiniband/uverbs0 or /dev/infiniband/rdma_cm)", path, loc.line("settings", "fabric_devices", ""), dev)
		}
	}
	if p.Settings.ImageStoreHigh == "" {
		p.Settings.ImageStoreHigh = "90%"
	}
	if p.Settings.ImageStoreLow == "" {
		p.Settings.ImageStoreLow = "80%"
	}
	high, herr := ParseWatermark(p.Settings.ImageStoreHigh)
	low, lerr := ParseWatermark(p.Settings.ImageStoreLow)
	switch {
	case herr != nil:
		return nil, fmt.Errorf("%s:%d: image_store_high: %v", path, loc.line("settings", "image_store_high", ""), herr)
	case lerr != nil:
		return nil, fmt.Errorf("%s:%d: image_store_low: %v", path, loc.line("settings", "image_store_low", ""), lerr)
	case (high.Bytes == 0) == (low.Bytes == 0) && (low.Bytes > high.Bytes || low.Bytes == 0 && low.Percent > high.Percent):
		return nil, fmt.Errorf("%s:%d: image_store_low %s is above image_store_high %s", path, loc.line("settings", "image_store_low", ""), p.Settings.ImageStoreLow, p.Settings.ImageStoreHigh)
	}
	p.storeHigh, p.storeLow = high, low
	for _, pat := range p.Settings.ImagesKeep {
		c, err := compileImagePattern(pat)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: images_keep: %w", path, loc.line("settings", "images_keep", ""), err)
		}
		p.keep = append(p.keep, c)
	}
	for _, r := range p.Settings.PrivateRegistries {
		if !registryHost.MatchString(r) {
			return nil, fmt.Errorf("%s:%d: private_registries: %q is not a registry host (such as nvcr.io or registry.example.org:5000)", path, loc.line("settings", "private_registries", ""), r)
		}
	}
	if p.Settings.Qstat == "" {
		p.Settings.Qstat = "/opt/pbs/bin/qstat"
	}
	if p.Settings.Scontrol == "" {
		p.Settings.Scontrol = "/usr/bin/scontrol"
	}
	if p.Settings.MountProbeSeconds <= 0 {
		p.Settings.MountProbeSeconds = 20
	}
	if p.Settings.StopGraceSeconds <= 0 {
		p.Settings.StopGraceSeconds = 10
	}
	if !strings.HasPrefix(p.Settings.DockerHost, "unix://") {
		return nil, fmt.Errorf("%s:%d: docker_host %q must be a unix:// socket; a TCP engine would accept anyone on the network",
			path, loc.line("settings", "docker_host", ""), p.Settings.DockerHost)
	}
	for name, r := range doc.Group {
		if !tableNameRE.MatchString(name) {
			return nil, fmt.Errorf("%s:%d: group name %q is not a valid group name", path, loc.line("group."+name, "", ""), name)
		}
		p.groups[name] = newTable("group."+name, r, loc)
	}
	for name, r := range doc.User {
		if !tableNameRE.MatchString(name) {
			return nil, fmt.Errorf("%s:%d: user name %q is not a valid user name", path, loc.line("user."+name, "", ""), name)
		}
		p.users[name] = newTable("user."+name, r, loc)
	}
	for _, t := range p.tables() {
		if err := p.validate(t); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Policy) tables() []table {
	out := []table{p.defaults}
	for _, name := range sortedKeys(p.groups) {
		out = append(out, p.groups[name])
	}
	for _, name := range sortedKeys(p.users) {
		out = append(out, p.users[name])
	}
	return out
}

func sortedKeys(m map[string]table) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// UserFlags are the flags of `run` (by long name) that the policy's
// flags_allow governs: the one list the CLI, the policy and its checks use.
// A test ties it to the flags the CLI registers.
var UserFlags = []string{"env", "volume", "workdir", "entrypoint", "tty", "interactive", "name", "read-only", "shm-size", "network", "pull", "cap-add", "publish"}

// ExecFlags are the user flags `exec` has.
var ExecFlags = []string{"tty", "interactive"}

var knownFlags = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range UserFlags {
		m[f] = true
	}
	return m
}()

func (p *Policy) validate(t table) error {
	fail := func(key, value, format string, args ...any) error {
		o := t.origin(key, value)
		return fmt.Errorf("%s:%d: %s in [%s]: %s", o.File, o.Line, key, t.name, fmt.Sprintf(format, args...))
	}
	r := t.rules
	for _, key := range []struct {
		name string
		list []string
	}{{"images_allow", r.ImagesAllow}, {"images_deny", r.ImagesDeny}} {
		for _, pat := range key.list {
			c, err := compileImagePattern(pat)
			if err != nil {
				return fail(key.name, pat, "%v", err)
			}
			p.compiled[pat] = c
		}
	}
	for _, v := range r.Pull {
		if _, err := parsePull(v); err != nil {
			return fail("pull", v, "%v", err)
		}
	}
	for _, key := range []struct {
		name string
		list []string
	}{{"mounts_always", r.MountsAlways}, {"mounts_allow", r.MountsAllow}, {"mounts_default", r.MountsDefault}} {
		for _, m := range key.list {
			if _, _, err := splitMountRule(m); err != nil {
				return fail(key.name, m, "%v", err)
			}
		}
	}
	for _, f := range r.FlagsAllow {
		if !knownFlags[f] {
			return fail("flags_allow", f, "unknown flag %q; known flags: %s", f, strings.Join(sortedFlagNames(), ", "))
		}
	}
	for _, n := range r.NetworksAllow {
		if err := validNetworkName(n); err != nil {
			return fail("networks_allow", n, "%v", err)
		}
	}
	for _, pr := range r.PortsAllow {
		rule, err := parsePortRule(pr)
		if err != nil {
			return fail("ports_allow", pr, "%q is not [IP:]LOW[-HIGH][/tcp|/udp]: %v", pr, err)
		}
		p.ports[pr] = rule
	}
	if r.PidsLimit != nil && *r.PidsLimit < 1 {
		return fail("pids_limit", "", "must be a positive number of processes")
	}
	for _, kv := range r.EnvForce {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(name) || reservedEnv[name] {
			return fail("env_force", kv, "must be NAME=VALUE, and not one of containerjob's own variables")
		}
	}
	if w := r.WorkdirForce; w != nil && (!filepath.IsAbs(*w) || filepath.Clean(*w) != *w) {
		return fail("workdir_force", "", "%q must be an absolute, clean path", *w)
	}
	for _, u := range r.Ulimits {
		if _, err := ParseUlimit(u); err != nil {
			return fail("ulimits", u, "%v", err)
		}
	}
	if s := r.ShmSizeMax; s != nil {
		if _, err := parseSize(*s); err != nil {
			return fail("shm_size_max", "", "%v", err)
		}
	}
	for _, c := range r.CapabilitiesAllow {
		if !capNameRE.MatchString(c) || c == "ALL" {
			return fail("capabilities_allow", c, "%q is not a capability name such as NET_RAW (ALL is never allowed)", c)
		}
	}
	for _, v := range []struct {
		key string
		n   *int64
	}{{"max_containers_per_job", r.MaxContainersPerJob}, {"max_containers_per_user", r.MaxContainersPerUser}, {"pids_limit_per_user", r.PidsLimitPerUser}} {
		if v.n != nil && *v.n < 1 {
			return fail(v.key, "", "must be at least 1")
		}
	}
	return nil
}

func sortedFlagNames() []string {
	var out []string
	for f := range knownFlags {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// splitMountRule parses "PATH" or "PATH:ro" as written in mounts_always and
// mounts_allow; PATH may use $HOME, $USER and $JOB_DIR.
func splitMountRule(s string) (path string, readOnly bool, err error) {
	path = s
	if p, ok := strings.CutSuffix(s, ":ro"); ok {
		path, readOnly = p, true
	} else if p, ok := strings.CutSuffix(s, ":rw"); ok {
		path = p
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "$") {
		return "", false, fmt.Errorf("mount %q must be an absolute path or start with $HOME or $JOB_DIR", s)
	}
	if strings.ContainsAny(path, "\x00:,") {
		return "", false, fmt.Errorf("mount %q contains a character that is not allowed in a mount path", s)
	}
	rest := path
	for {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			break
		}
		rest = rest[i:]
		ok := false
		for _, v := range []string{"$HOME", "$USER", "$JOB_DIR"} {
			after, found := strings.CutPrefix(rest, v)
			if found && (after == "" || after[0] == '/') {
				rest, ok = after, true
				break
			}
		}
		if !ok {
			return "", false, fmt.Errorf("mount %q uses an unknown variable; known: $HOME, $USER, $JOB_DIR", s)
		}
	}
	return path, readOnly, nil
}

// orList renders ["a" "b" "c"] as "a, b or c".
func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// locator finds the line of a key or of one value in a list, so that every
// decision can cite the rule that made it. It is not a TOML parser: the
// decoder has already accepted the file; this only attributes lines.
type locator struct {
	file  string
	keys  map[string]int            // "table\x00key" -> line
	items map[string]map[string]int // "table\x00key" -> value -> line
}

var (
	headerRE = regexp.MustCompile(`^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$`)
	keyRE    = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)
	quotedRE = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"|'([^']*)'`)
)

func newLocator(file string, data []byte) *locator {
	l := &locator{file: file, keys: map[string]int{}, items: map[string]map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), maxPolicySize)
	tbl, cur := "", ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := headerRE.FindStringSubmatch(line); m != nil {
			tbl = normalizeHeader(m[1])
			cur = ""
			l.keys[tbl+"\x00"] = n
			continue
		}
		rest := line
		if m := keyRE.FindStringSubmatch(line); m != nil {
			cur = tbl + "\x00" + m[1]
			if _, seen := l.keys[cur]; !seen {
				l.keys[cur] = n
			}
			rest = line[len(m[0]):]
		}
		if cur == "" {
			continue
		}
		for _, q := range quotedRE.FindAllStringSubmatch(rest, -1) {
			v := q[2]
			if q[1] != "" || strings.HasPrefix(q[0], `"`) {
				if u, err := strconv.Unquote(q[0]); err == nil {
					v = u
				}
			}
			if l.items[cur] == nil {
				l.items[cur] = map[string]int{}
			}
			if _, seen := l.items[cur][v]; !seen {
				l.items[cur][v] = n
			}
		}
	}
	return l
}

func normalizeHeader(h string) string {
	parts := strings.Split(h, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// line returns the line of value within key of table, else of the key, else
// of the table header, else 0.
func (l *locator) line(tbl, key, value string) int {
	k := tbl + "\x00" + key
	if value != "" {
		if n, ok := l.items[k][value]; ok {
			return n
		}
	}
	if n, ok := l.keys[k]; ok {
		return n
	}
	return l.keys[tbl+"\x00"]
}

// registryHost is a registry's host as a normalized image reference names
// it: lower case, with a port when it has one.
var registryHost = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)

// Watermark is a bound on the engine's data file system: a share of it, or
// bytes in use.
type Watermark struct {
	Percent float64
	Bytes   uint64
}

// BytesOf is the watermark in bytes of a file system of total bytes.
func (w Watermark) BytesOf(total uint64) int64 {
	if w.Bytes > 0 {
		return int64(w.Bytes)
	}
	return int64(w.Percent / 100 * float64(total))
}

// ParseWatermark reads "85%" or a size ("200GiB", "500M": binary units).
func ParseWatermark(s string) (Watermark, error) {
	if v, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 100 {
			return Watermark{}, fmt.Errorf("%q is not a percentage between 0 and 100", s)
		}
		return Watermark{Percent: f}, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil || n <= 0 {
		return Watermark{}, fmt.Errorf("%q is neither a percentage (\"90%%\") nor a size (\"200GiB\")", s)
	}
	return Watermark{Bytes: uint64(n)}, nil
}

// ImageStoreWatermarks are image_store_high and image_store_low.
func (p *Policy) ImageStoreWatermarks() (high, low Watermark) { return p.storeHigh, p.storeLow }

// PrivateRegistry reports whether ref's registry is one of
// private_registries: its images run only on the caller's own access.
func (p *Policy) PrivateRegistry(ref ImageRef) bool {
	return slices.Contains(p.Settings.PrivateRegistries, ref.Registry())
}

// EngineSocket is the path of docker_host's unix socket.
func (s Settings) EngineSocket() string { return strings.TrimPrefix(s.DockerHost, "unix://") }

// KeepImage reports whether images_keep names an image by any of its
// names (tags and digests, as the engine lists them).
func (p *Policy) KeepImage(names []string) bool {
	for _, n := range names {
		ref, err := NormalizeImage(n)
		if err != nil {
			continue
		}
		for _, k := range p.keep {
			// Keeping errs on the side of more: a rule for any tag of
			// a repository keeps its digests too (a moved tag's old one).
			if k.matches(ref, nil) || ref.Digest != "" && k.repo != nil && k.repo.MatchString(ref.Name) {
				return true
			}
		}
	}
	return false
}
