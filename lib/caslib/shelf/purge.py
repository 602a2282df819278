"""Purge old job directories under ``workDirectory`` (``cas-admin --purge``, ``autoPurge``).

Why: every job leaves a core (often gigabytes) and an extracted vmlinux;
the original CAS removed job data older than ``purgeLimit`` days.  A job's
age is its recorded start time (``jobs.started``), else the timestamp in its
directory name (``<job>/<YYYY.MM.DD.HH.MM.SS>``).  Never removed: anything
outside ``workDirectory`` (symlinks are not followed, paths are checked
after resolving), a job whose row says running with a live pid, a
directory that does not look like a job.  ``dry_run`` lists exactly what
would go and changes nothing.
"""

import os
import shutil
import stat
import time
from dataclasses import dataclass

from caslib import jobdir, logs

log = logs.get()


@dataclass
class Candidate:
    workdir: str
    job: str
    started: float
    source: str  # "database" or "directory name"


def _alive(pid) -> bool:
    if not pid or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def candidates(work: str, conn, limit_days: int, now: float | None = None) -> list[Candidate]:
    """Job directories older than ``limit_days``, oldest first; running jobs left out."""
    now = time.time() if now is None else now
    cutoff = now - limit_days * 86400
    rows = {}
    if conn is not None:
        for workdir, started, state, pid in conn.execute(
                "SELECT workdir, started, state, pid FROM jobs"):
            rows[os.path.realpath(workdir)] = (started, state, pid)
    out = []
    if not os.path.isdir(work):
        return out
    for job in sorted(os.listdir(work)):
        job_path = os.path.join(work, job)
        try:
            if not stat.S_ISDIR(os.lstat(job_path).st_mode) or not jobdir.is_valid_name(job):
                continue
            stamps = sorted(os.listdir(job_path))
        except OSError as exc:
            log.warning("cannot read %s: %s", job_path, exc.strerror)
            continue
        for stamp in stamps:
            path = os.path.join(job_path, stamp)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue  # symlinks and files are never followed or removed
            except OSError:
                continue
            if not jobdir.inside(work, path):
                continue
            row = rows.get(os.path.realpath(path))
            if row is not None:
                started, state, pid = row
                source = "database"
                if state == "running" and _alive(pid):
                    continue
            else:
                started = jobdir.parse_stamp(stamp)
                source = "directory name"
                if started is None:
                    continue  # not a job directory: leave it alone
            if started < cutoff:
                out.append(Candidate(os.path.abspath(path), job, started, source))
    out.sort(key=lambda c: (c.started, c.workdir))
    return out


def purge(cfg, conn, dry_run: bool = False, now: float | None = None, emit=None) -> tuple[int, int]:
    """Remove (or with ``dry_run`` only list) old jobs; return (count, errors).

    ``emit(dict)`` receives one entry per job: workdir, job, started (ISO),
    age_days, action (``purged``/``would-purge``/``failed``).
    """
    work = cfg.workDirectory
    limit = cfg.purgeLimit
    now = time.time() if now is None else now
    done = errors = 0
    for c in candidates(work, conn, limit, now):
        entry = {"workdir": c.workdir, "job": c.job,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.started)),
                 "age_days": round((now - c.started) / 86400, 1), "age_from": c.source}
        if dry_run:
            entry["action"] = "would-purge"
        else:
            try:
                shutil.rmtree(c.workdir)
            except OSError as exc:
                errors += 1
                entry["action"] = "failed"
                entry["error"] = f"{exc.filename or c.workdir}: {exc.strerror or exc}"
                log.warning("cannot purge %s", entry["error"])
            else:
                entry["action"] = "purged"
                if conn is not None:
                    conn.execute("DELETE FROM jobs WHERE workdir IN (?, ?)",
                                 (c.workdir, os.path.realpath(c.workdir)))
                    conn.commit()
                parent = os.path.dirname(c.workdir)
                try:
                    os.rmdir(parent)  # the <job> directory, once its last run is gone
                except OSError:
                    pass
                log.info("purged %s (%s days old)", c.workdir, entry["age_days"])
        done += entry["action"] != "failed"
        if emit is not None:
            emit(entry)
    if not dry_run and conn is not None:
        # rows of old jobs whose directories are gone already
        stale = [(wd,) for wd, in conn.execute(
            "SELECT workdir FROM jobs WHERE started < ? AND state != 'running'",
            (now - limit * 86400,)) if not os.path.lexists(wd)]
        if stale:
            conn.executemany("DELETE FROM jobs WHERE workdir = ?", stale)
            log.info("dropped %d database rows of old jobs without a directory", len(stale))
        conn.commit()
    return done, errors
