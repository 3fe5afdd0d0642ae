# containerjob hook for OpenPBS / PBS Professional.
#
# execjob_epilogue (and execjob_end as a fallback, for jobs whose epilogue
# did not run): remove every container of the job on this host, as
# `containerjob epilog --scheduler pbs --job ID`, which is idempotent.
#
# execjob_launch: when the job asks for an image (qsub -v CONTAINERJOB_IMAGE=alpine:3.20),
# prefix the job's program with containerjob, so the job script (or a task
# started by pbsdsh / mpiexec through PBS) runs in the image, as the job's
# owner, under the site policy. This is PBS's counterpart of the Slurm
# SPANK plugin's argv prepend. Tested against OpenPBS 23.06.06
# (test/e2epbs, docs/admin-guide.md).
#
# Install: contrib/pbs/install-hook (qmgr commands).
import subprocess

import pbs

CONTAINERJOB = "@BINDIR@/containerjob"

e = pbs.event()
try:
    if e.type in (pbs.EXECJOB_EPILOGUE, pbs.EXECJOB_END):
        r = subprocess.run(
            [CONTAINERJOB, "epilog", "--scheduler", "pbs", "--job", e.job.id],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
        )
        msg = r.stdout.decode(errors="replace").strip()
        if msg:
            pbs.logmsg(pbs.LOG_DEBUG, "containerjob epilog %s: %s" % (e.job.id, msg))
        if r.returncode != 0:
            pbs.logmsg(pbs.LOG_WARNING, "containerjob epilog %s failed (%d)" % (e.job.id, r.returncode))
    elif e.type == pbs.EXECJOB_LAUNCH:
        image = e.env.get("CONTAINERJOB_IMAGE") if e.env is not None else None
        if image:
            # The job's shell reads the job script from stdin (progname
            # /bin/sh, argv ["-sh"] on OpenPBS 23.06): --step-stdin passes
            # it on. argv is rebuilt in place, as PBS wants it, before
            # progname changes, so a failure leaves the job as it was.
            orig = [str(a) for a in list(e.argv)]
            argv = [CONTAINERJOB, "run", "--step-stdin", "--", image, str(e.progname)] + orig[1:]
            e.argv = []
            for a in argv:
                e.argv.append(a)
            e.progname = CONTAINERJOB
    e.accept()
except SystemExit:
    pass
except Exception as err:  # never fail the job or offline the node for cleanup
    pbs.logmsg(pbs.LOG_WARNING, "containerjob hook: %s" % err)
    e.accept()
