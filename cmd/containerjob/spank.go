package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerjob/containerjob/policy"
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
	// What containerjob cannot honour safely is refused with one line,
	// never silently done otherwise.
	if get("REMAP_ROOT") == "1" {
		return nil, true, spankRefusal("--container-remap-root", "Docker cannot make you root inside a container without making the container's root the node's root (no user namespace per container here); containers run as your own uid, as --no-container-remap-root asks")
	}
	if get("SAVE") != "" {
		return nil, true, spankRefusal("--container-save", "containerjob does not write container filesystems to files; the node's images are the admin's (image-store rule)")
	}
	// pyxis gives the user the image's files (enroot unpacks them as the
	// user); here they are root's, and no candidate gives them to the user
	// safely and cheaply (docs/design.md), so a writable root is refused
	// rather than granted in name only.
	if get("READONLY") == "0" {
		return nil, true, spankRefusal("--container-writable", "the image's files belong to root here, so the root filesystem is writable only where the image lets every user write (/tmp); write to /tmp, the job directory or a --container-mounts path, install with pip install --target or --user into one, or ask for an image with what the job installs")
	}
	if get("UNSHARE") != "" {
		return nil, true, spankRefusal("--container-unshare", "the container's namespaces are containerjob's to set: private pid, ipc and mount namespaces, the network the policy allows")
	}
	image, localOnly, err := pyxisImage(get("IMAGE"))
	if err != nil {
		return nil, true, err
	}
	// --container-name=NAME[:auto|:exec]: auto runs in the job's container
	// of that name, creating it if needed; exec only in an existing one.
	name, flag, _ := strings.Cut(get("NAME"), ":")
	switch flag {
	case "", "auto":
	case "exec":
		image, localOnly = "", false
	case "create", "no_exec":
		return nil, true, spankRefusal("--container-name "+get("NAME"), "the :"+flag+" suffix is not offered: a named container here is one running container per job and node, and every step with its name runs in it")
	default:
		return nil, true, fmt.Errorf("--container-name %q: the suffix is not :auto, :create, :exec or :no_exec", get("NAME"))
	}
	// pyxis' precedence: the image's ENV and WORKDIR (tests/env.bats,
	// tests/workdir.bats in pyxis 0.24).
	args = []string{"run", "--step-stdin", "--image-first"}
	if !firstLocalTask() {
		args = append(args, "--quiet-refusals")
	}
	if localOnly {
		args = append(args, "--local-only")
	}
	if image == "" {
		// pyxis: --container-name alone runs in the job's existing
		// container of that name.
		if name == "" {
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
			// Mounted unless the site's default mounts already do.
			args = append(args, "--mount-home")
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
	if name != "" {
		args = append(args, "--name="+name)
	}
	if get("READONLY") == "1" {
		args = append(args, "--read-only")
	}
	// pyxis runs the entrypoint before the task's command, not around it,
	// and shows its output only when it fails or --container-entrypoint-log
	// asks.
	switch {
	case get("ENTRYPOINT") == "0":
		args = append(args, "--entrypoint=")
	case get("ENTRYPOINT_LOG") == "1":
		args = append(args, "--pyxis-entrypoint=log")
	default:
		args = append(args, "--pyxis-entrypoint=quiet")
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

// spankRefusal is a --container-* option containerjob does not offer.
func spankRefusal(opt, why string) error {
	return &policy.Refusal{Item: opt, Reason: "is refused (" + why + ")", Rule: policy.Origin{Table: "built-in", Key: "pyxis-options"}}
}

// pyxisImage turns pyxis' image syntax into a Docker reference:
// [USER@][REGISTRY#]IMAGE[:TAG] (the user is enroot's credentials name,
// not part of the image), docker://REF, and dockerd://REF, the local
// engine's image (localOnly: never pulled). A path is a squashfs file,
// which is not a Docker image.
func pyxisImage(s string) (ref string, localOnly bool, err error) {
	switch {
	case s == "":
		return "", false, nil
	case strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../") ||
		strings.HasSuffix(s, ".sqsh") || strings.HasSuffix(s, ".squashfs"):
		return "", false, spankRefusal("--container-image "+s, "a squashfs file is not a Docker image; name an image by its reference, e.g. nvcr.io#nvidia/pytorch:24.01-py3")
	}
	if rest, ok := strings.CutPrefix(s, "dockerd://"); ok {
		s, localOnly = rest, true
	} else if rest, ok := strings.CutPrefix(s, "docker://"); ok {
		s = rest
	}
	if user, rest, ok := strings.Cut(s, "@"); ok && strings.Contains(rest, "#") && !strings.ContainsAny(user, "/:#") {
		s = rest // USER@REGISTRY#IMAGE: the user names enroot credentials
	}
	if registry, image, ok := strings.Cut(s, "#"); ok {
		if registry == "" || image == "" || strings.Contains(image, "#") {
			return "", false, fmt.Errorf("--container-image %q is not [USER@][REGISTRY#]IMAGE[:TAG]", s)
		}
		s = registry + "/" + image
	}
	return s, localOnly, nil
}

// pyxisMount converts pyxis' SRC[:DST[:FLAGS]] to -v syntax; a lone SRC is
// mounted at the same path. FLAGS are enroot's mount options joined with
// "+": ro and rw set the access; what containerjob does anyway (recursive
// binds, private propagation, no setuid or device access: no-new-
// privileges and the device cgroup) is accepted; anything else is refused
// rather than silently dropped.
func pyxisMount(spec string) (string, error) {
	parts := strings.Split(spec, ":")
	if len(parts) > 3 || parts[0] == "" || (len(parts) > 1 && parts[1] == "") {
		return "", fmt.Errorf("--container-mounts %q is not SRC[:DST[:FLAGS]]", spec)
	}
	if parts[0] == "tmpfs" || parts[0] == "umount" {
		return "", spankRefusal("--container-mounts "+spec, "only host directories can be mounted")
	}
	if len(parts) == 1 {
		return parts[0] + ":" + parts[0], nil
	}
	mode := ""
	if len(parts) == 3 && parts[2] != "" {
		for _, f := range strings.Split(parts[2], "+") {
			switch {
			case f == "ro" || f == "rw":
				if mode != "" && mode != f {
					return "", fmt.Errorf("--container-mounts %q: both ro and rw", spec)
				}
				mode = f
			case f == "rbind", f == "bind", f == "rprivate", f == "private", f == "nosuid", f == "nodev", strings.HasPrefix(f, "x-create="):
			default:
				return "", spankRefusal("--container-mounts "+spec, fmt.Sprintf("mount flag %q cannot be honoured: bind mounts here are recursive and private, without setuid or device access, read-only or read-write", f))
			}
		}
	}
	if mode == "" {
		return parts[0] + ":" + parts[1], nil
	}
	return parts[0] + ":" + parts[1] + ":" + mode, nil
}

// firstLocalTask: whether this task is the step's first on this node. A
// refusal that follows from the request alone (the policy's, a malformed
// option) is the same for every task of the step, so only this one prints
// it; the others exit 125 silently. SLURM_LOCALID is the user's to change,
// and so is, then, only whether their own message is printed.
func firstLocalTask() bool {
	id := os.Getenv("SLURM_LOCALID")
	return id == "" || id == "0"
}
