package policy

import (
	"regexp"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// envList keeps the last value of each name, in first-seen order, and
// which of them came from the job's environment last (the image may
// override those under pyxis' precedence).
type envList struct {
	order   []string
	vals    map[string]string
	fromJob map[string]bool
}

func newEnvList() *envList { return &envList{vals: map[string]string{}, fromJob: map[string]bool{}} }

func (e *envList) set(name, value string) {
	if _, ok := e.vals[name]; !ok {
		e.order = append(e.order, name)
	}
	e.vals[name] = value
	delete(e.fromJob, name)
}

// setFromJob is set for a variable of the job's environment.
func (e *envList) setFromJob(name, value string) {
	e.set(name, value)
	e.fromJob[name] = true
}

// jobNames are the variables whose value is the job environment's.
func (e *envList) jobNames() []string {
	var out []string
	for _, n := range e.order {
		if e.fromJob[n] {
			out = append(out, n)
		}
	}
	return out
}

func (e *envList) list() []string {
	out := make([]string, 0, len(e.order))
	for _, n := range e.order {
		out = append(out, n+"="+e.vals[n])
	}
	return out
}

// hostOnlyEnv names variables of the job's environment that describe the
// host, not the job: passing them would override the image's own (PATH,
// library paths) or point at things the container does not have. HOME is
// kept only when the home directory is mounted at the same path.
func hostOnlyEnv(name string, caller Caller, mounts []specs.Mount) bool {
	switch name {
	case "PATH", "HOSTNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "_", "MAIL", "TMPDIR",
		"MODULEPATH", "MODULESHOME", "LOADEDMODULES", "_LMFILES_", "MANPATH", "INFOPATH",
		"CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
		"SLURM_CONF", "DISPLAY", "XAUTHORITY", "KRB5CCNAME", "SSH_AUTH_SOCK",
		"PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE":
		return true
	case "HOME":
		return caller.Home == "" || !underAnyMount(caller.Home, mounts)
	}
	for _, p := range []string{"LD_", "BASH_FUNC_", "XDG_", "DBUS_", "SSH_", "SUDO_", "CONTAINERJOB_", "LMOD", "__LMOD", "CONDA_", "VIRTUAL_ENV"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// Variables the GPU runtime hooks read as instructions; only containerjob
// sets them, from the job's allocation.
var reservedEnv = map[string]bool{
	"NVIDIA_VISIBLE_DEVICES":     true,
	"NVIDIA_DRIVER_CAPABILITIES": true,
	"NVIDIA_MIG_CONFIG_DEVICES":  true,
	"NVIDIA_MIG_MONITOR_DEVICES": true,
	"NVIDIA_IMEX_CHANNELS":       true,
}
