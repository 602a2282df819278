"""Purge old job directories under ``workDirectory`` (``cas-admin --purge``, ``autoPurge``).

Why: every job leaves a core (often gigabytes) and an extracted vmlinux;
the original CAS removed job data older than ``purgeLimit`` days.  A job's
age is its recorded start time (``jobs.started``), else the timestamp in its
directory name (``<job>/<YYYY.MM.DD.HH.MM.SS>``).  Never removed: anything
outside ``workDirectory`` (symlinks are not followed, paths are checked
after resolving), a job whose row says running with a live pid, a
directory that does not look like a job.  ``dry_run`` lists exactly what
would go and changes nothing.

Dumps uploaded through cas-web's form wait in ``workDirectory/.uploads/<dir>``
(the job directory is made from them); such a directory goes when it is older
than ``purgeLimit`` days (its modification time) and no queued or running job
still has its file as the source.
"""

import os
import shutil
import stat
import time
from dataclasses import dataclass

from caslib import jobdir, logs

log = logs.get()


UPLOADS = ".uploads"     # cas-web's upload area under workDirectory (never a job name)


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
                "SELECT workdir, started, state, pid FROM jobs WHERE workdir IS NOT NULL"):
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


def upload_candidates(work: str, conn, limit_days: int, now: float) -> list[tuple[str, float]]:
    """(directory, mtime) of the uploads older than ``limit_days`` that no live job reads."""
    top = os.path.join(work, UPLOADS)
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            return []
        names = sorted(os.listdir(top))
    except OSError:
        return []
    wanted = set()
    if conn is not None:
        for (source,) in conn.execute(
                "SELECT source FROM jobs WHERE state IN ('queued', 'running')"):
            if isinstance(source, str):
                wanted.add(os.path.dirname(os.path.realpath(source)))
    out = []
    for name in names:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or not jobdir.inside(work, path):
            continue  # symlinks and files are never followed or removed
        if st.st_mtime < now - limit_days * 86400 and os.path.realpath(path) not in wanted:
            out.append((os.path.abspath(path), st.st_mtime))
    out.sort(key=lambda c: (c[1], c[0]))
    return out


def _remove(path: str, entry: dict) -> bool:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        entry["action"] = "failed"
        entry["error"] = f"{exc.filename or path}: {exc.strerror or exc}"
        log.warning("cannot purge %s", entry["error"])
        return False
    entry["action"] = "purged"
    return True


def _entry(now: float, started: float, source: str, dry_run: bool, **where) -> dict:
    return dict(where, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                age_days=round((now - started) / 86400, 1), age_from=source,
                action="would-purge" if dry_run else None)


def purge(cfg, conn, dry_run: bool = False, now: float | None = None,
          emit=None) -> tuple[int, int, int]:
    """Remove (or with ``dry_run`` only list) old jobs and uploads: (jobs, uploads, errors).

    ``emit(dict)`` receives one entry per job (workdir, job) or upload
    (upload), with started (ISO), age_days, age_from and action
    (``purged``/``would-purge``/``failed``).
    """
    work = cfg.workDirectory
    limit = cfg.purgeLimit
    now = time.time() if now is None else now
    done = uploads = errors = 0
    for c in candidates(work, conn, limit, now):
        entry = _entry(now, c.started, c.source, dry_run, workdir=c.workdir, job=c.job)
        if not dry_run:
            if not _remove(c.workdir, entry):
                errors += 1
            else:
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
    for path, mtime in upload_candidates(work, conn, limit, now):
        entry = _entry(now, mtime, "modification time", dry_run, upload=path)
        if dry_run or _remove(path, entry):
            uploads += 1
            if not dry_run:
                log.info("purged the upload %s (%s days old)", path, entry["age_days"])
        else:
            errors += 1
        if emit is not None:
            emit(entry)
    if not dry_run and conn is not None:
        # rows of old jobs whose directories are gone already, or that never had one (a
        # queued job cancelled or failed before it started)
        stale = [(row,) for row, wd in conn.execute(
            "SELECT id, workdir FROM jobs WHERE coalesce(started, submitted) < ? "
            "AND state NOT IN ('running', 'queued')",
            (now - limit * 86400,)) if wd is None or not os.path.lexists(wd)]
        if stale:
            conn.executemany("DELETE FROM jobs WHERE id = ?", stale)
            log.info("dropped %d database rows of old jobs without a directory", len(stale))
        conn.commit()
    return done, uploads, errors
