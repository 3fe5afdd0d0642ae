/*
 * containerjob SPANK plugin: pyxis-style --container-* options for srun,
 * salloc and sbatch, running the step's tasks through containerjob.
 *
 * The plugin decides nothing about security: it only turns the options into
 * a containerjob command line for each task. The task then runs containerjob
 * as the job's user; containerjob escalates through sudo, establishes the
 * caller and job from the kernel and scontrol, and applies the site policy.
 * So a refusal is an ordinary task failure (exit 125, one line in the job's
 * output), never a plugin error that could drain the node.
 *
 * Mechanism (see docs/design.md):
 *   Slurm >= 23.11: spank_prepend_task_argv() in task_init prepends the
 *     containerjob path; slurmstepd then runs TaskProlog, sets rlimits and
 *     execs as usual.
 *   Slurm < 23.11 (Debian 12 has 22.05): task_init replaces argv[0] of the
 *     task with the containerjob path and passes the original argv[0] in the
 *     task environment; slurmstepd still runs TaskProlog and sets rlimits
 *     before its execve. Lost: --multi-prog (argv is per task there).
 *
 * plugstack.conf:
 *   required /usr/local/lib/containerjob/spank_containerjob.so containerjob=/usr/local/bin/containerjob
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <slurm/slurm.h>
#include <slurm/spank.h>
#include <slurm/slurm_version.h>

SPANK_PLUGIN(containerjob, 1);

#define DEFAULT_CONTAINERJOB "/usr/local/bin/containerjob"
/* launcher.JobMarkDir */
#define JOB_MARK_DIR "/run/containerjob/jobs"
#define MAX_OPT_LEN 8192

static char containerjob_path[1024] = DEFAULT_CONTAINERJOB;

/*
 * A mistake in plugstack.conf is the admin's and must not fail every job on
 * the node: slurm_spank_init runs for every job, and since Slurm 25.05 any
 * non-zero return of a SPANK callback fails the job. It is logged here, and
 * only steps that ask for a container are refused, with this line.
 */
static char config_error[512];

/* Option values, as the user gave them. */
static char *opt_image;
static char *opt_mounts;
static char *opt_workdir;
static char *opt_env;
static char *opt_name;
static int opt_mount_home = -1;  /* -1 unset, 0 no, 1 yes */
static int opt_readonly = -1;
static int opt_entrypoint = -1;
static int opt_remap_root = -1;
static int opt_entrypoint_log = -1;
static char *opt_save;
static char *opt_unshare;

enum {
	OPT_IMAGE = 1, OPT_MOUNTS, OPT_WORKDIR, OPT_ENV, OPT_NAME,
	OPT_MOUNT_HOME, OPT_NO_MOUNT_HOME, OPT_READONLY, OPT_WRITABLE,
	OPT_ENTRYPOINT, OPT_NO_ENTRYPOINT, OPT_REMAP_ROOT, OPT_NO_REMAP_ROOT,
	OPT_SAVE, OPT_ENTRYPOINT_LOG, OPT_UNSHARE,
};

/* Values are checked only for shape here; containerjob validates them. */
static int set_string(char **dst, const char *name, const char *val)
{
	size_t i, n;

	if (val == NULL || val[0] == '\0') {
		slurm_error("containerjob: --%s needs a value", name);
		return -1;
	}
	n = strlen(val);
	if (n > MAX_OPT_LEN) {
		slurm_error("containerjob: --%s is longer than %d bytes", name, MAX_OPT_LEN);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (val[i] == '\n' || val[i] == '\r') {
			slurm_error("containerjob: --%s contains a line break", name);
			return -1;
		}
	}
	free(*dst);
	*dst = strdup(val);
	return *dst ? 0 : -1;
}

static int option_cb(int val, const char *optarg, int remote)
{
	(void) remote;
	switch (val) {
	case OPT_IMAGE:         return set_string(&opt_image, "container-image", optarg);
	case OPT_MOUNTS:        return set_string(&opt_mounts, "container-mounts", optarg);
	case OPT_WORKDIR:       return set_string(&opt_workdir, "container-workdir", optarg);
	case OPT_ENV:           return set_string(&opt_env, "container-env", optarg);
	case OPT_NAME:          return set_string(&opt_name, "container-name", optarg);
	case OPT_MOUNT_HOME:    opt_mount_home = 1; return 0;
	case OPT_NO_MOUNT_HOME: opt_mount_home = 0; return 0;
	case OPT_READONLY:      opt_readonly = 1; return 0;
	case OPT_WRITABLE:      opt_readonly = 0; return 0;
	case OPT_ENTRYPOINT:    opt_entrypoint = 1; return 0;
	case OPT_NO_ENTRYPOINT: opt_entrypoint = 0; return 0;
	case OPT_REMAP_ROOT:    opt_remap_root = 1; return 0;
	case OPT_NO_REMAP_ROOT: opt_remap_root = 0; return 0;
	case OPT_SAVE:          return set_string(&opt_save, "container-save", optarg);
	case OPT_ENTRYPOINT_LOG: opt_entrypoint_log = 1; return 0;
	case OPT_UNSHARE:       return set_string(&opt_unshare, "container-unshare", optarg);
	}
	return -1;
}

static struct spank_option options[] = {
	{ "container-image", "[USER@][REGISTRY#]IMAGE[:TAG]|PATH",
	  "[containerjob] the image to run the step's tasks in (checked against the site policy)",
	  1, OPT_IMAGE, option_cb },
	{ "container-mounts", "SRC[:DST[:ro]][,...]",
	  "[containerjob] bind mount host paths into the container (as the policy allows)",
	  1, OPT_MOUNTS, option_cb },
	{ "container-workdir", "PATH",
	  "[containerjob] working directory inside the container",
	  1, OPT_WORKDIR, option_cb },
	{ "container-env", "NAME[,NAME...]",
	  "[containerjob] environment variables whose host value overrides the image's",
	  1, OPT_ENV, option_cb },
	{ "container-name", "NAME",
	  "[containerjob] name the container; later steps of the job with the same name reuse it",
	  1, OPT_NAME, option_cb },
	{ "container-mount-home", NULL,
	  "[containerjob] bind mount the user's home directory", 0, OPT_MOUNT_HOME, option_cb },
	{ "no-container-mount-home", NULL,
	  "[containerjob] do not bind mount the user's home directory", 0, OPT_NO_MOUNT_HOME, option_cb },
	{ "container-readonly", NULL,
	  "[containerjob] make the container's root filesystem read-only", 0, OPT_READONLY, option_cb },
	{ "container-writable", NULL,
	  "[containerjob] refused: the image's files are root's; write to /tmp or your mounts", 0, OPT_WRITABLE, option_cb },
	{ "container-entrypoint", NULL,
	  "[containerjob] run the image's entrypoint (default)", 0, OPT_ENTRYPOINT, option_cb },
	{ "no-container-entrypoint", NULL,
	  "[containerjob] do not run the image's entrypoint", 0, OPT_NO_ENTRYPOINT, option_cb },
	{ "container-entrypoint-log", NULL,
	  "[containerjob] show the entrypoint's own output (else shown only when it fails)", 0, OPT_ENTRYPOINT_LOG, option_cb },
	{ "container-remap-root", NULL,
	  "[containerjob] refused: containers always run as your own uid", 0, OPT_REMAP_ROOT, option_cb },
	{ "no-container-remap-root", NULL,
	  "[containerjob] run as your own uid inside the container (always so)", 0, OPT_NO_REMAP_ROOT, option_cb },
	{ "container-save", "PATH",
	  "[containerjob] refused: containerjob does not save container filesystems", 1, OPT_SAVE, option_cb },
	{ "container-unshare", "NAMESPACES",
	  "[containerjob] refused: containerjob sets the container's namespaces", 1, OPT_UNSHARE, option_cb },
	SPANK_OPTIONS_TABLE_END
};

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	int i;

	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "containerjob=", 13) == 0) {
			const char *p = av[i] + 13;
			if (p[0] != '/' || strlen(p) >= sizeof(containerjob_path)) {
				snprintf(config_error, sizeof(config_error),
					 "plugstack.conf argument %.256s must be an absolute path", av[i]);
				continue;
			}
			snprintf(containerjob_path, sizeof(containerjob_path), "%s", p);
		} else {
			snprintf(config_error, sizeof(config_error),
				 "unknown plugstack.conf argument %.256s", av[i]);
		}
	}
	if (config_error[0] != '\0')
		slurm_error("containerjob: %s; container steps are refused until it is fixed, other jobs run", config_error);
	/* Register in every context, the allocator (sbatch/salloc) included,
	 * so #SBATCH --container-* lines parse and reach the job's steps. An
	 * option another plugin (pyxis) already has stays that plugin's. */
	for (i = 0; options[i].name != NULL; i++) {
		if (spank_option_register(sp, &options[i]) != ESPANK_SUCCESS)
			slurm_error("containerjob: cannot register --%s (does another plugin in plugstack.conf, pyxis say, have it?)", options[i].name);
	}
	return 0;
}

static int setenv_task(spank_t sp, const char *name, const char *val)
{
	if (val == NULL)
		return 0;
	if (spank_setenv(sp, name, val, 1) != ESPANK_SUCCESS) {
		slurm_error("containerjob: cannot set %s for the task", name);
		return -1;
	}
	return 0;
}

static const char *tristate(int v)
{
	return v < 0 ? NULL : (v ? "1" : "0");
}

/* pyxis' yes/no spellings of its PYXIS_CONTAINER_* booleans. */
static int parse_bool(const char *v)
{
	if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "y") || !strcasecmp(v, "on"))
		return 1;
	if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "n") || !strcasecmp(v, "off"))
		return 0;
	return -1;
}

/*
 * Where a PYXIS_CONTAINER_* variable is read: in a task, the job's
 * environment (spank_getenv); where sbatch, salloc and srun run, the
 * process's own. 0 when set and it fits buf.
 */
typedef int (*env_getter)(spank_t sp, const char *var, char *buf, int len);

static int task_getenv(spank_t sp, const char *var, char *buf, int len)
{
	return spank_getenv(sp, var, buf, len) == ESPANK_SUCCESS ? 0 : -1;
}

static int own_getenv(spank_t sp, const char *var, char *buf, int len)
{
	const char *v = getenv(var);
	(void) sp;
	if (v == NULL || snprintf(buf, len, "%s", v) >= len)
		return -1;
	return 0;
}

/*
 * The PYXIS_CONTAINER_* variables of the job's environment stand in for
 * options that were not given, as with pyxis; they are the user's own
 * words either way, and containerjob judges them the same.
 */
static int pyxis_env(spank_t sp, env_getter get)
{
	static const struct { const char *var; char **dst; const char *opt; } strs[] = {
		{ "PYXIS_CONTAINER_IMAGE", &opt_image, "container-image" },
		{ "PYXIS_CONTAINER_MOUNTS", &opt_mounts, "container-mounts" },
		{ "PYXIS_CONTAINER_WORKDIR", &opt_workdir, "container-workdir" },
		{ "PYXIS_CONTAINER_NAME", &opt_name, "container-name" },
		{ "PYXIS_CONTAINER_SAVE", &opt_save, "container-save" },
		{ "PYXIS_CONTAINER_ENV", &opt_env, "container-env" },
		{ "PYXIS_CONTAINER_UNSHARE", &opt_unshare, "container-unshare" },
	};
	static const struct { const char *var; int *dst; int invert; } bools[] = {
		{ "PYXIS_CONTAINER_MOUNT_HOME", &opt_mount_home, 0 },
		{ "PYXIS_CONTAINER_REMAP_ROOT", &opt_remap_root, 0 },
		{ "PYXIS_CONTAINER_ENTRYPOINT", &opt_entrypoint, 0 },
		{ "PYXIS_CONTAINER_ENTRYPOINT_LOG", &opt_entrypoint_log, 0 },
		{ "PYXIS_CONTAINER_WRITABLE", &opt_readonly, 1 },
		{ "PYXIS_CONTAINER_READONLY", &opt_readonly, 0 },
	};
	char buf[MAX_OPT_LEN + 1];
	size_t i;

	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		if (*strs[i].dst != NULL || get(sp, strs[i].var, buf, sizeof(buf)) != 0)
			continue;
		if (set_string(strs[i].dst, strs[i].opt, buf))
			return -1;
	}
	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		int v;
		if (*bools[i].dst != -1 || get(sp, bools[i].var, buf, sizeof(buf)) != 0)
			continue;
		if ((v = parse_bool(buf)) < 0) {
			slurm_error("containerjob: %s=%s is not a yes or no", bools[i].var, buf);
			return -1;
		}
		*bools[i].dst = bools[i].invert ? !v : v;
	}
	return 0;
}

/*
 * The options as containerjob reads them (cmd/containerjob/spank.go): set
 * for a task with setenv_task, for submit-check with own_setenv.
 */
typedef int (*env_setter)(spank_t sp, const char *name, const char *val);

static int own_setenv(spank_t sp, const char *name, const char *val)
{
	(void) sp;
	return val == NULL ? 0 : setenv(name, val, 1);
}

static int export_options(spank_t sp, env_setter set)
{
	return set(sp, "CONTAINERJOB_SPANK_IMAGE", opt_image) ||
	    set(sp, "CONTAINERJOB_SPANK_MOUNTS", opt_mounts) ||
	    set(sp, "CONTAINERJOB_SPANK_WORKDIR", opt_workdir) ||
	    set(sp, "CONTAINERJOB_SPANK_ENV", opt_env) ||
	    set(sp, "CONTAINERJOB_SPANK_NAME", opt_name) ||
	    set(sp, "CONTAINERJOB_SPANK_MOUNT_HOME", tristate(opt_mount_home)) ||
	    set(sp, "CONTAINERJOB_SPANK_READONLY", tristate(opt_readonly)) ||
	    set(sp, "CONTAINERJOB_SPANK_ENTRYPOINT", tristate(opt_entrypoint)) ||
	    set(sp, "CONTAINERJOB_SPANK_ENTRYPOINT_LOG", tristate(opt_entrypoint_log)) ||
	    set(sp, "CONTAINERJOB_SPANK_REMAP_ROOT", tristate(opt_remap_root)) ||
	    set(sp, "CONTAINERJOB_SPANK_SAVE", opt_save) ||
	    set(sp, "CONTAINERJOB_SPANK_UNSHARE", opt_unshare);
}

/*
 * Where sbatch, salloc or srun (outside a job) runs, as the user, before
 * anything is queued: asks `containerjob submit-check` whether this host's
 * policy would refuse the container options whatever the compute node,
 * and stops the submission when it says so (it has printed the node's own
 * refusal line). No policy here, no answer within SUBMIT_WAIT_MS, anything
 * else: nothing is said, the node decides. A courtesy, never a trust
 * boundary. -1 only for a refusal.
 */
#define SUBMIT_WAIT_MS 10000
static int submit_check(void)
{
	const char *image = opt_image ? opt_image : getenv("PYXIS_CONTAINER_IMAGE");
	struct timespec tick = { 0, 10 * 1000 * 1000 };
	int status, waited = 0, fd;
	pid_t pid, r;

	if (image == NULL || image[0] == '\0' || config_error[0] != '\0')
		return 0;
	/* A step of a job that runs: its node answers within a second. */
	if (spank_context() == S_CTX_LOCAL && getenv("SLURM_JOB_ID") != NULL)
		return 0;
	pid = fork();
	if (pid < 0)
		return 0;
	if (pid == 0) {
		char *const argv[] = { "containerjob", "submit-check", NULL };
		/* The options as the node's task will get them; a malformed
		 * one is the node's to refuse. */
		if (pyxis_env(NULL, own_getenv) || export_options(NULL, own_setenv))
			_exit(0);
		unsetenv("CONTAINERJOB_SPANK");
		setenv("CONTAINERJOB_SUBMIT_CHECK", "1", 1);
		if ((fd = open("/dev/null", O_RDWR)) >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
		}
		execv(containerjob_path, argv);
		_exit(0);
	}
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && waited < SUBMIT_WAIT_MS) {
		nanosleep(&tick, NULL);
		waited += 10;
	}
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return 0;
	}
	return (r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 125) ? -1 : 0;
}

/*
 * Runs in sbatch, salloc and srun once the options are read: the job's
 * image goes into the job control environment, which slurmd hands to the
 * Prolog as SPANK_CONTAINERJOB_IMAGE, so that `containerjob prolog` can
 * pull it (for the job's owner, as the policy allows) before the first
 * step. The user's own words; failing to set it costs only the prefetch.
 */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void) ac; (void) av;

	if (spank_context() != S_CTX_ALLOCATOR && spank_context() != S_CTX_LOCAL)
		return 0;
	if (submit_check() != 0)
		return -1;
	if (opt_image == NULL)
		return 0;
	if (spank_job_control_setenv(sp, "CONTAINERJOB_IMAGE", opt_image, 1) != ESPANK_SUCCESS)
		slurm_info("containerjob: the Prolog will not prefetch %s", opt_image);
	return 0;
}

/*
 * Runs in srun, as the user, on the node srun runs on (in a batch job, the
 * batch host), before the step's tasks start: the step's image is resolved
 * there once, by `containerjob --resolve`, which pins it for the job, and
 * what it printed goes to every task of the step in CONTAINERJOB_IMAGE_PIN
 * ("IMAGE PINNED"), so that every node runs the same digest however the
 * tag moves meanwhile. Best effort: without a job, or when containerjob
 * refuses or fails here, the variable is not set and each node resolves
 * for itself; each task's launch reports its own errors. The variable is
 * the user's to forge, which containerjob allows for (a digest of the
 * requested repository, judged by the policy like any other).
 */
int slurm_spank_local_user_init(spank_t sp, int ac, char **av)
{
	const char *image = opt_image;
	static char val[MAX_OPT_LEN + 1024 + 2];
	char out[1024];
	size_t n = 0;
	ssize_t r;
	int fds[2], status;
	pid_t pid;
	(void) sp; (void) ac; (void) av;

	if (spank_context() != S_CTX_LOCAL)
		return 0;
	if (image == NULL)
		image = getenv("PYXIS_CONTAINER_IMAGE");
	if (image == NULL || image[0] == '\0' || getenv("SLURM_JOB_ID") == NULL || pipe(fds) < 0)
		return 0;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return 0;
	}
	if (pid == 0) {
		char *const argv[] = { containerjob_path, "--resolve", "--", (char *) image, NULL };
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 2);
		}
		dup2(fds[1], 1);
		close(fds[0]);
		execv(containerjob_path, argv);
		_exit(127);
	}
	close(fds[1]);
	while (n < sizeof(out) - 1 && (r = read(fds[0], out + n, sizeof(out) - 1 - n)) != 0) {
		if (r < 0)
			break;
		n += (size_t) r;
	}
	close(fds[0]);
	out[n] = '\0';
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 0;
	/* One line, a reference: anything else is not an answer. */
	if (n == 0 || out[n - 1] != '\n' || strchr(out, '\n') != out + n - 1 || strchr(out, ' ') != NULL)
		return 0;
	out[n - 1] = '\0';
	if ((size_t) snprintf(val, sizeof(val), "%s %s", image, out) >= sizeof(val))
		return 0;
	setenv("CONTAINERJOB_IMAGE_PIN", val, 1);
	return 0;
}

/*
 * Runs in the task, as the job's user, just before slurmstepd's own
 * TaskProlog, rlimits and execve.
 */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void) ac; (void) av;

	if (!spank_remote(sp))
		return 0;
	if (pyxis_env(sp, task_getenv))
		return -1;
	/* A step with --container-name alone runs in the job's existing
	 * container of that name (pyxis); containerjob refuses it when there
	 * is none. It never runs on the host. */
	if (opt_image == NULL && opt_name == NULL)
		return 0;
	if (config_error[0] != '\0') {
		slurm_error("containerjob: this node's plugstack.conf is wrong (%s); ask the admin", config_error);
		return -1;
	}

	if (setenv_task(sp, "CONTAINERJOB_SPANK", "1") || export_options(sp, setenv_task))
		return -1;

#if SLURM_VERSION_NUMBER >= SLURM_VERSION_NUM(23, 11, 0)
	{
		const char *prefix[] = { containerjob_path };
		if (setenv_task(sp, "CONTAINERJOB_SPANK_MODE", "prepend"))
			return -1;
		if (spank_prepend_task_argv(sp, 1, prefix) != ESPANK_SUCCESS) {
			slurm_error("containerjob: spank_prepend_task_argv failed");
			return -1;
		}
	}
#else
	{
		int argc = 0;
		char **argv = NULL;

		if (spank_get_item(sp, S_JOB_ARGV, &argc, &argv) != ESPANK_SUCCESS ||
		    argc < 1 || argv == NULL || argv[0] == NULL) {
			slurm_error("containerjob: the task has no command");
			return -1;
		}
		if (setenv_task(sp, "CONTAINERJOB_SPANK_MODE", "argv0") ||
		    setenv_task(sp, "CONTAINERJOB_SPANK_ARGV0", argv[0]))
			return -1;
		/* slurmstepd execs task->argv, which is this array: the task now
		 * starts containerjob, which finds the real command in the env. */
		argv[0] = strdup(containerjob_path);
		if (argv[0] == NULL)
			return -1;
	}
#endif
	return 0;
}

/* The step's name as containerjob labels it (from the step's cgroup). */
static void step_name(uint32_t step, char *buf, size_t len)
{
	switch (step) {
	case SLURM_BATCH_SCRIPT:
		snprintf(buf, len, "batch");
		break;
	case SLURM_EXTERN_CONT:
		snprintf(buf, len, "extern");
		break;
#ifdef SLURM_INTERACTIVE_STEP
	case SLURM_INTERACTIVE_STEP:
		snprintf(buf, len, "interactive");
		break;
#endif
	default:
		snprintf(buf, len, "%u", step);
	}
}

/*
 * Whether a launch of the step on this host left its mark
 * (launcher.LiveMark): each containerjob launch in a job writes one in
 * JOB_MARK_DIR/slurm-JOB/@live/STEP before it creates or joins a container
 * and removes it once it ended having left nothing (it removed its
 * container, or left the step's shared one to a task still in it). A
 * launch killed outright, one that failed or one that could not remove its
 * container keeps it. Anything but an empty or missing directory counts
 * as a mark: when in doubt, clean.
 */
static int step_live(uint32_t job, const char *step)
{
	char dir[128];
	struct dirent *e;
	DIR *d;
	int live = 0;

	snprintf(dir, sizeof(dir), JOB_MARK_DIR "/slurm-%u/@live/%s", job, step);
	if ((d = opendir(dir)) == NULL)
		return errno != ENOENT;
	while (!live && (e = readdir(d)) != NULL)
		live = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return live;
}

/*
 * The step's cleanup on this node, in slurmstepd as root: whatever
 * containers the step's tasks left here (a client killed with SIGKILL, a
 * task that died mid-launch) are removed, named ones kept for the job's
 * later steps. The wrapper form (srun containerjob IMG) is covered too:
 * the plugin sees every step. A step whose launches here all ended having
 * left nothing (no mark, step_live) starts no process. A failure is
 * logged and never fails the step: the epilogue and gc remain. when says
 * which hook runs it.
 */
static void step_cleanup(spank_t sp, const char *when)
{
	uint32_t job = 0, step = 0;
	char jobs[32], steps[32];
	pid_t pid;
	int status;

	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		return;
	snprintf(jobs, sizeof(jobs), "%u", job);
	step_name(step, steps, sizeof(steps));
	/* A job that never made a container on this host has no directory
	 * under JOB_MARK_DIR at all, and a step whose launches all ended
	 * cleanly has no mark in it: either step ends without starting a
	 * process. */
	if (!step_live(job, steps))
		return;

	pid = fork();
	if (pid < 0) {
		slurm_error("containerjob: step %s.%s: cannot fork the cleanup %s", jobs, steps, when);
		return;
	}
	if (pid == 0) {
		char *const argv[] = { containerjob_path, "epilog", "--scheduler", "slurm",
			"--job", jobs, "--step", steps, "--quiet", NULL };
		char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", NULL };
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execve(containerjob_path, argv, envp);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) == pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		slurm_info("containerjob: step %s.%s: cleanup %s exited with status %d; the epilogue will remove what is left",
			   jobs, steps, when, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* This node's tasks of the step that have ended, and whether one of them
 * did not exit 0 (slurmstepd runs one plugin instance per step). */
static uint32_t tasks_ended;
static int task_failed;

/*
 * Runs in slurmstepd, as root, as each task of the step ends, before
 * slurmstepd waits for the step's output to close. A container whose
 * containerjob was killed still holds the descriptors it was handed (the
 * output handoff): slurmstepd would wait for them 60 s ("Abandoning IO")
 * and srun with it, where the step's cgroup would have ended every process
 * of a step without a container at once. So once every task here has
 * ended and one failed, the step's containers go now, where a launch left
 * its mark (a killed containerjob always does). A step whose tasks all
 * exited 0 needs nothing here: each containerjob removed its own container
 * (the step's end below still looks for marks).
 */
int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
	uint32_t ntasks = 0;
	int status = 0;
	(void) ac; (void) av;

	if (!spank_remote(sp))
		return 0;
	tasks_ended++;
	if (spank_get_item(sp, S_TASK_EXIT_STATUS, &status) != ESPANK_SUCCESS ||
	    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		task_failed = 1;
	if (!task_failed || spank_get_item(sp, S_JOB_LOCAL_TASK_COUNT, &ntasks) != ESPANK_SUCCESS ||
	    tasks_ended < ntasks)
		return 0;
	step_cleanup(sp, "after its tasks");
	return 0;
}

/*
 * Runs in slurmstepd, as root, when the step ends: the cleanup again, for
 * what a step whose tasks all exited 0 left, or what appeared since (a
 * client of a task that ended was still running until slurmstepd killed
 * the step's processes: its mark is left). A step whose launches all
 * ended cleanly (a batch job's step among them) costs a directory read.
 */
int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void) ac; (void) av;

	if (spank_remote(sp))
		step_cleanup(sp, "at its end");
	return 0;
}
