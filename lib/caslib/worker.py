"""cas-worker: run queued jobs, oldest first, at most N at a time.

``cas-worker [--jobs N] [--once] [--machine M]``.  Each job runs in a
runner process (runner.py: cas's own pipeline driver) in a session of its
own, so a Ctrl-C on the worker's terminal reaches the worker only and the
worker decides what to stop.  SIGTERM/SIGINT: claim nothing new, send
SIGTERM to every runner (each stops its steps and puts its job back to
``queued``), wait for them, exit 143/130.  Jobs whose process is gone on
this machine (a worker killed with SIGKILL) are requeued once, failed the
second time (``error.kind`` ``worker-lost``), found when a worker starts and
after each runner ends.
"""

import os
import signal
import subprocess
import sys
import time

from caslib import cli, logs, records
from caslib.queue import open_queue
from caslib.records import StepError, UsageError

PROG = "cas-worker"
POLL = 0.2          # seconds between looks at the queue when there is room
STOP_GRACE = 60.0   # seconds a runner gets to stop its pipeline before SIGKILL


def default_jobs(cfg) -> int:
    return cfg.get("maxJobs") or max(1, (os.cpu_count() or 2) // 2)


class Worker:
    def __init__(self, cfg, jobs: int, once: bool, machine: str | None):
        self.cfg, self.jobs, self.once, self.machine = cfg, jobs, once, machine
        self.queue = open_queue(cfg, host=machine)
        self.running: dict[int, subprocess.Popen] = {}
        self.cancelling: set[int] = set()
        self.stop_signal = None

    def _stop(self, signum, _frame):
        self.stop_signal = signum

    def spawn(self, job: dict) -> None:
        argv = [sys.executable, os.path.realpath(sys.argv[0]), "--run-job", str(job["job_id"])]
        if self.cfg.path:
            argv += ["--config", self.cfg.path]
        if self.machine:
            argv += ["--machine", self.machine]
        logs.get().info("job %s (%s): started", job["job_id"], job["identifier"])
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                                    start_new_session=True)
        except OSError as exc:
            self.queue.finish(job["job_id"], "queued")
            raise StepError(f"cannot start a runner ({argv[1]}): {exc.strerror}", "os-error")
        self.running[job["job_id"]] = proc

    def reap(self) -> None:
        ended = [(j, p) for j, p in self.running.items() if p.poll() is not None]
        for job_id, proc in ended:
            del self.running[job_id]
            self.cancelling.discard(job_id)
            job = self.queue.get(job_id) or {}
            logs.get().info("job %s: %s", job_id, job.get("state"))
        if ended:
            self.queue.recover_lost()  # a runner that died before saying how it ended

    def cancel_requested(self) -> None:
        for job_id in self.queue.cancel_requested(list(self.running)):
            if job_id not in self.cancelling:
                logs.get().info("job %s: cancel requested, stopping it", job_id)
                self.cancelling.add(job_id)
                self.running[job_id].send_signal(signal.SIGTERM)

    def fill(self) -> bool:
        """Claim jobs while there is room; False when the queue had nothing."""
        while len(self.running) < self.jobs and self.stop_signal is None:
            job = self.queue.claim(os.getpid())
            if job is None:
                return False
            self.spawn(job)
        return True

    def shutdown(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for job_id, proc in self.running.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logs.get().error("job %s: runner did not stop; killing it", job_id)
                proc.kill()
                proc.wait()
        self.running.clear()
        self.queue.recover_lost()

    def loop(self) -> int:
        self.queue.recover_lost()
        while self.stop_signal is None:
            try:
                self.reap()
                self.cancel_requested()
                had_work = self.fill()
            except StepError as exc:
                if exc.kind != "busy":
                    raise
                # another process held the database longer than the busy timeout: try again
                logs.get().warning("%s", exc.message)
                had_work = True
            if self.once and not had_work and not self.running:
                return records.EXIT_OK
            time.sleep(POLL)
        logs.get().info("signal %d: stopping %d running job(s), they go back to the queue",
                        self.stop_signal, len(self.running))
        self.shutdown()
        return 128 + self.stop_signal


def main(argv=None) -> int:
    """cas-worker's command line (man cas-worker)."""
    return records.main_wrapper(PROG, run_command, argv)


def parse_args(argv):
    parser = cli.argument_parser(
        PROG, "Run queued CAS jobs (cas --queue), oldest first.",
        "example: cas-worker --jobs 2 --once")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="run at most N jobs at a time (default: maxJobs, else 1 per 2 cores)")
    # -j means --job (a job name) in every other command; -j N kept for one release
    cli.add_alias(parser, "-j", "jobs", type=int)
    parser.add_argument("--once", action="store_true",
                        help="run until the queue is empty, then exit")
    parser.add_argument("--machine", metavar="HOST",
                        help="name recorded as where jobs run (default: the host name)")
    parser.add_argument("--run-job", type=int, metavar="N",
                        help="internal: run claimed job N in this process (the worker does this)")
    parser.add_argument("--slurm-tail", metavar="JOBDIR",
                        help="internal: the Slurm job of a job queued with backend slurm")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"{PROG}: --jobs must be at least 1")
    if args.machine is not None and not args.machine.strip():
        raise UsageError(f"{PROG}: --machine needs a name")
    return args


def run_command(argv) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    try:
        if args.slurm_tail is not None:
            from caslib.queue.slurmjob import run_tail

            return run_tail(args.slurm_tail, cfg)
        if args.run_job is not None:
            from caslib.queue.runner import run_job

            return run_job(args.run_job, cfg, args.machine)
        worker = Worker(cfg, args.jobs or default_jobs(cfg), args.once, args.machine)
        signal.signal(signal.SIGTERM, worker._stop)
        signal.signal(signal.SIGINT, worker._stop)
        return worker.loop()
    except StepError as exc:
        logs.get().error("%s", exc.message)
        return records.EXIT_ERROR

