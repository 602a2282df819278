"""The job queue as an interface, so the local SQLite queue and a cluster scheduler are
interchangeable behind ``cas --queue``, ``cas-worker`` and ``cas-jobs``.

A job is a dict (the JSON ``cas-jobs --json`` prints)::

    {"job_id": 7, "job": "1", "identifier": "12345", "state": "queued|running|done|failed|cancelled",
     "source": FILE|URL, "email": ..., "workdir": ..., "submitted": t, "started": t, "finished": t,
     "kernel": release, "panic": message, "error": {"step", "kind", "message"} | null,
     "attempt": 1, "rerun_of": job_id | null, "requeues": 0,
     "worker": {"host": ..., "pid": worker pid, "runner": pid of the pipeline driver},
     "slurm": {"job_id", "partition", "state", "node"} | null (the Slurm backend only),
     "options": {"identifier", "file", "email", "modules", "strip", "job",
                 "release", "vmlinux", "package"}}

``options`` are the ``cas`` arguments of the job; ``cas_argv(options)`` turns them
back into the argument list the pipeline is started with.
"""

import abc
import os
import socket

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
FORCE_OPTIONS = ("release", "vmlinux", "package")


def this_host() -> str:
    return socket.gethostname() or "localhost"


def pid_alive(pid, marker: bytes | None = None) -> bool:
    """True when a process with this pid exists on this host (ours or another user's).

    With ``marker``, a process whose command line does not contain it is another
    program that was given the same pid after ours died: not alive.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if marker:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return marker in fh.read(65536)
        except OSError:
            return True  # no /proc to ask: trust the pid
    return True


def cas_argv(options: dict) -> list:
    """The ``cas`` arguments that run the job described by ``options``."""
    argv = ["-i", options["identifier"], "-f", options["file"]]
    for key, flag in (("email", "-e"), ("job", "--job"), ("release", "--release"),
                      ("vmlinux", "--vmlinux"), ("package", "--package")):
        if options.get(key):
            argv += [flag, str(options[key])]
    if options.get("modules"):
        argv.append("-m")
    if options.get("strip"):
        argv.append("--strip")
    return argv


class Queue(abc.ABC):
    """What every backend provides.  Methods raise records.StepError on trouble."""

    @abc.abstractmethod
    def submit(self, options: dict, rerun_of: int | None = None, attempt: int = 1) -> dict:
        """Record a new job as ``queued``; return it."""

    @abc.abstractmethod
    def claim(self, worker_pid: int) -> dict | None:
        """Take the oldest queued job for this worker (state ``running``), or None."""

    @abc.abstractmethod
    def attach(self, job_id: int, runner_pid: int, workdir: str | None = None,
               job: str | None = None) -> None:
        """Note the process running the pipeline and, once known, its job directory."""

    @abc.abstractmethod
    def finish(self, job_id: int, state: str, release: str | None = None,
               error: dict | None = None, panic: str | None = None) -> dict:
        """End a running job: done, failed, cancelled, or back to queued (interrupted)."""

    @abc.abstractmethod
    def cancel(self, job_id: int) -> dict:
        """Cancel: a queued job leaves the queue, a running one is asked to stop."""

    @abc.abstractmethod
    def list(self, state: str | None = None, identifier: str | None = None,
             since: float | None = None, signature: str | None = None) -> list:
        """Jobs, oldest first; ``signature``: only those cas-triage gave that signature."""

    @abc.abstractmethod
    def get(self, job_id: int) -> dict | None:
        """One job, or None."""

    @abc.abstractmethod
    def cancel_requested(self, job_ids) -> list:
        """Which of these running jobs someone asked to cancel (the worker stops them)."""

    @abc.abstractmethod
    def recover_lost(self) -> list:
        """Running jobs whose process is gone on this host: requeued once, then failed."""

    def close(self) -> None:
        """Release the backend's resources."""


def open_queue(cfg, readonly: bool = False, host: str | None = None) -> Queue:
    """The queue backend for this site: the local SQLite queue (the ``database``), or
    Slurm (``[queue] backend = slurm``) with the same table as its record.

    ``host`` is the name workers record as where a job runs (``cas-worker --machine``).
    """
    if cfg.backend == "slurm":
        from caslib.queue.slurmqueue import SlurmQueue

        return SlurmQueue(cfg, readonly=readonly, host=host)
    from caslib.queue.sqlitequeue import SqliteQueue

    return SqliteQueue(cfg.database, readonly=readonly, host=host)
