package main

import (
	"fmt"
	"os"
	"strings"
)

// The SPANK plugin (spank/containerjob.c) makes each task of a step start
// containerjob, with the --container-* options in CONTAINERJOB_SPANK_*
// variables of the task's environment. They are the user's own options:
// turning them into a `run` command line gives them no more power than
// typing that command line, and the policy judges them the same way.
const spankPrefix = "CONTAINERJOB_SPANK"

// spankArgs returns the run arguments for a task started by the plugin,
// or ok=false when this is not such a task.
func spankArgs(argv []string) (args []string, ok bool, err error) {
	if os.Getenv(spankPrefix) != "1" {
		return nil, false, nil
	}
	get := func(k string) string { return os.Getenv(spankPrefix + "_" + k) }
	var cmd []string
	switch get("MODE") {
	case "prepend":
		cmd = argv[1:]
	case "argv0":
		cmd = append([]string{get("ARGV0")}, argv[1:]...)
	default:
		return nil, true, fmt.Errorf("%s_MODE %q is not prepend or argv0", spankPrefix, get("MODE"))
	}
	if len(cmd) == 0 || cmd[0] == "" {
		return nil, true, fmt.Errorf("the task has no command")
	}
	image := get("IMAGE")
	args = []string{"run"}
	if image == "" {
		// pyxis: --container-name alone runs in the job's existing
		// container of that name.
		if get("NAME") == "" {
			return nil, true, fmt.Errorf("--container-image is empty")
		}
		args = append(args, "--existing")
	}
	if m := get("MOUNTS"); m != "" {
		for _, spec := range strings.Split(m, ",") {
			v, err := pyxisMount(spec)
			if err != nil {
				return nil, true, err
			}
			args = append(args, "--volume="+v)
		}
	}
	// As with pyxis: --container-mount-home binds home; --no-container-mount-home
	// leaves it out even where the policy mounts it by default.
	if home := os.Getenv("HOME"); home != "" {
		switch get("MOUNT_HOME") {
		case "1":
			args = append(args, "--volume="+home+":"+home)
		case "0":
			args = append(args, "--no-default-mount="+home)
		}
	}
	if w := get("WORKDIR"); w != "" {
		args = append(args, "--workdir="+w)
	}
	if e := get("ENV"); e != "" {
		for _, name := range strings.Split(e, ",") {
			if name = strings.TrimSpace(name); name != "" {
				args = append(args, "--env="+name)
			}
		}
	}
	if n := get("NAME"); n != "" {
		args = append(args, "--name="+n)
	}
	if get("READONLY") == "1" {
		args = append(args, "--read-only")
	}
	if get("ENTRYPOINT") == "0" {
		args = append(args, "--entrypoint=")
	}
	// The plugin's variables are consumed here; none reaches the container.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, spankPrefix) {
			os.Unsetenv(k)
		}
	}
	args = append(args, "--")
	if image != "" {
		args = append(args, image)
	}
	return append(args, cmd...), true, nil
}

// pyxisMount converts pyxis' SRC[:DST[:FLAGS]] to -v syntax; a lone SRC is
// mounted at the same path.
func pyxisMount(spec string) (string, error) {
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		return parts[0] + ":" + parts[0], nil
	case 2:
		return spec, nil
	case 3:
		switch parts[2] {
		case "ro", "rw":
			return spec, nil
		}
		return "", fmt.Errorf("--container-mounts %q: flag %q is not ro or rw", spec, parts[2])
	}
	return "", fmt.Errorf("--container-mounts %q is not SRC[:DST[:ro]]", spec)
}
