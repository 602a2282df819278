"""One queued job in its own process (``cas-worker --run-job N``): cas's pipeline runner,
with the job's row in the queue as its record keeper.

Why a process per job: stopping one job (cancel, SIGTERM) is a signal to
one process whose ``cas`` driver already knows how to stop its steps, and
a runner that dies takes no other job with it.  A runner whose worker
disappears (SIGKILL) stops its pipeline and leaves the row alone: the next
worker or ``cas-jobs`` finds the pid gone and requeues the job once.
"""

import os
import signal
import threading
import time

from caslib import cas, logs
from caslib.messages import failmail
from caslib.queue import cas_argv, open_queue
from caslib.records import Interrupted, UsageError


class QueueJob:
    """cas.run_pipeline's record keeper for a job that is already a row of the queue."""

    def __init__(self, queue, job: dict, cfg):
        self.queue, self.job, self.cfg = queue, job, cfg
        self.row = job["job_id"]
        self.orphaned = False

    def start(self, record: dict, source: str, email) -> None:
        if record.get("workdir"):
            self.queue.attach(self.row, os.getpid(), record["workdir"], record.get("job"))

    def finish(self, state: str, release, error, record: dict | None = None) -> None:
        if error == "interrupted" and record is None:
            if self.orphaned:
                return  # the next worker or cas-jobs finds this pid gone
            self.queue.finish(self.row, "queued")
            return
        err = (record or {}).get("error")
        if state == "failed" and not err:
            err = {"step": "cas", "kind": "failed", "message": error or "failed"}
        rec = record or {}
        panic = (((rec.get("crash") or {}).get("panic") or {}).get("message")
                 or ((rec.get("dmesg") or {}).get("panic") or {}).get("message"))
        # a log-only analysis is done, and says why it is only that
        job = self.queue.finish(self.row, state, release,
                                err if state == "failed" else rec.get("analysis_error"), panic)
        if job and job["state"] == "failed":
            failmail.notify(self.cfg, self.row, record, self.job.get("email"))


def _watch_parent(job: QueueJob) -> None:
    """Stop this job when the worker that started it is gone (killed with SIGKILL)."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            logs.get().error("job %s: worker %d is gone: stopping the pipeline", job.row, parent)
            job.orphaned = True
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _interrupt_once(signum, _frame):
    """The first SIGTERM/SIGINT stops the job; more (the worker and cas-jobs may both send
    one) must not interrupt the stopping and the row's update."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


def run_job(job_id: int, cfg, host: str | None = None) -> int:
    logs.setup(f"cas-worker[{job_id}]", cfg.debugLevel)
    signal.signal(signal.SIGTERM, _interrupt_once)
    signal.signal(signal.SIGINT, _interrupt_once)
    queue = open_queue(cfg, host=host)
    job = queue.get(job_id)
    if job is None or job["state"] != "running" or not job["options"]:
        raise UsageError(f"cas-worker: job {job_id} is not a claimed queued job")
    queue.attach(job_id, os.getpid())
    keeper = QueueJob(queue, job, cfg)
    threading.Thread(target=_watch_parent, args=(keeper,), daemon=True).start()
    args = cas.build_parser().parse_args(cas_argv(job["options"]))
    logs.get().info("job %s: cas %s", job_id, " ".join(cas_argv(job["options"])))
    return cas.run_pipeline(args, cfg, keeper)
