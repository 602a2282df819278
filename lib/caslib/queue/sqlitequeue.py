"""The local queue backend: the ``jobs`` table of the CAS SQLite database.

Why it is safe with several workers: a job is claimed by one UPDATE of the
oldest queued row inside BEGIN IMMEDIATE, guarded by ``state = 'queued'``,
so two workers can never both see it queued.  Each call opens and closes
its own connection: the worker's runners, ``cas-jobs`` and ``cas`` itself
all write the table, and a held connection would only pin the WAL.
"""

import json
import sqlite3
import time

from caslib import db, logs
from caslib.queue import FINAL, Queue, pid_alive, this_host
from caslib.records import StepError

_COLUMNS = ("id, job, identifier, workdir, source, state, submitted, started, finished, release, "
            "error, error_step, error_kind, error_message, email, pid, host, worker_pid, attempt, "
            "rerun_of, args, panic, requeues, cancel")


def to_job(row) -> dict:
    """A table row as the job dict of queue.py."""
    (id_, job, ident, workdir, source, state, submitted, started, finished, release, error, estep,
     ekind, emsg, email, pid, host, wpid, attempt, rerun_of, args, panic, requeues, cancel) = row
    if estep or ekind or emsg:
        err = {"step": estep, "kind": ekind, "message": emsg}
    elif error:  # rows written before the queue: "step: message"
        step, _, message = error.partition(": ")
        err = {"step": step if message else None, "kind": None, "message": message or error}
    else:
        err = None
    try:
        options = json.loads(args) if args else None
    except ValueError:
        options = None
    return {
        "job_id": id_, "job": job, "identifier": ident, "state": state, "source": source,
        "email": email, "workdir": workdir, "submitted": submitted, "started": started,
        "finished": finished, "kernel": release, "panic": panic, "error": err,
        "attempt": attempt, "rerun_of": rerun_of, "requeues": requeues,
        "cancel_requested": bool(cancel) and state == "running",
        "worker": {"host": host, "pid": wpid, "runner": pid} if host else None,
        "options": options,
    }


def _alive(job: dict) -> bool:
    """Is the process that runs this job still there: its runner (a queued job), its
    worker (claimed, runner not started yet), or the foreground cas?"""
    w = job["worker"]
    if not job["options"]:
        return pid_alive(w.get("runner"), b"cas")
    if w.get("runner"):
        return pid_alive(w["runner"], b"--run-job\0%d\0" % job["job_id"])
    return pid_alive(w.get("pid"), b"cas-worker")


class SqliteQueue(Queue):
    def __init__(self, path: str, readonly: bool = False, host: str | None = None):
        self.path, self.readonly = path, readonly
        self.host = host or this_host()

    def _connect(self):
        if self.readonly:
            return db.connect_readonly(self.path)
        return db.connect(self.path)

    def _write(self, fn):
        """Run ``fn(conn)`` in one BEGIN IMMEDIATE transaction; DatabaseError on trouble."""
        if self.readonly:
            raise StepError(f"{self.path}: opened read-only; this needs casuser", "permission")
        conn = self._connect()
        try:
            with db.transaction(conn):
                return fn(conn)
        except sqlite3.Error as exc:
            raise db.friendly(exc, self.path) from None
        finally:
            conn.close()

    def _read(self, sql: str, params=()) -> list:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise db.friendly(exc, self.path) from None
        finally:
            conn.close()

    def submit(self, options, rerun_of=None, attempt=1):
        def insert(conn):
            cur = conn.execute(
                "INSERT INTO jobs (job, identifier, source, state, submitted, email, attempt, "
                "rerun_of, args) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (options.get("job") or options["identifier"], options["identifier"],
                 options["file"], time.time(), options.get("email"), attempt, rerun_of,
                 json.dumps(options, sort_keys=True)))
            return cur.lastrowid
        return self.get(self._write(insert))

    def claim(self, worker_pid):
        def take(conn):
            return conn.execute(
                f"UPDATE jobs SET state = 'running', started = ?, host = ?, worker_pid = ?, "
                f"pid = NULL WHERE id = (SELECT id FROM jobs WHERE state = 'queued' "
                f"AND args IS NOT NULL ORDER BY id LIMIT 1) AND state = 'queued' "
                f"RETURNING {_COLUMNS}", (time.time(), self.host, worker_pid)).fetchone()
        row = self._write(take)
        return to_job(row) if row else None

    def attach(self, job_id, runner_pid, workdir=None, job=None):
        def update(conn):
            if workdir:
                conn.execute("UPDATE jobs SET pid = ?, workdir = ?, job = COALESCE(?, job) "
                             "WHERE id = ? AND state = 'running'", (runner_pid, workdir, job, job_id))
            else:
                conn.execute("UPDATE jobs SET pid = ? WHERE id = ? AND state = 'running'",
                             (runner_pid, job_id))
        self._write(update)

    def finish(self, job_id, state, release=None, error=None, panic=None):
        def update(conn):
            row = conn.execute("SELECT state, cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] in FINAL:
                return
            final = "cancelled" if row[1] and state != "done" else state
            if final == "queued":  # interrupted: the next worker starts it afresh
                conn.execute("UPDATE jobs SET state = 'queued', started = NULL, pid = NULL, "
                             "host = NULL, worker_pid = NULL, workdir = NULL WHERE id = ?",
                             (job_id,))
                return
            err = error or {}
            if final == "cancelled":
                err = {"step": "queue", "kind": "cancelled", "message": "cancelled while running"}
            conn.execute(
                "UPDATE jobs SET state = ?, finished = ?, release = ?, panic = ?, error = ?, "
                "error_step = ?, error_kind = ?, error_message = ? WHERE id = ?",
                (final, time.time(), release, panic,
                 f"{err.get('step')}: {err.get('message')}" if err else None,
                 err.get("step"), err.get("kind"), err.get("message"), job_id))
        self._write(update)
        return self.get(job_id)

    def cancel(self, job_id):
        def update(conn):
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StepError(f"no job {job_id}", "not-found")
            if row[0] == "queued":
                conn.execute("UPDATE jobs SET state = 'cancelled', finished = ?, "
                             "error_step = 'queue', error_kind = 'cancelled', "
                             "error_message = 'cancelled before it ran' WHERE id = ?",
                             (time.time(), job_id))
            elif row[0] == "running":
                conn.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
            return row[0]
        before = self._write(update)
        job = self.get(job_id)
        job["was"] = before
        return job

    def list(self, state=None, identifier=None, since=None, signature=None):
        where, params = [], []
        for clause, value in (("state = ?", state), ("identifier = ?", identifier),
                              ("COALESCE(submitted, started) >= ?", since),
                              ("workdir IN (SELECT workdir FROM signatures WHERE signature = ?)",
                               signature)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return [to_job(r) for r in self._read(sql + " ORDER BY id", tuple(params))]

    def get(self, job_id):
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return to_job(rows[0]) if rows else None

    def cancel_requested(self, job_ids) -> list:
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        return [r[0] for r in self._read(
            f"SELECT id FROM jobs WHERE cancel = 1 AND state = 'running' AND id IN ({marks})",
            tuple(job_ids))]

    def recover_lost(self):
        """Requeue once a queued job whose process is gone on this host; fail it the second time.

        A plain ``cas`` run (no stored options) cannot be requeued: it is failed.
        """
        lost = [j for j in self.list(state="running")
                if (j["worker"] or {}).get("host") == self.host and not _alive(j)]
        if not lost or self.readonly:
            return []
        log, done = logs.get(), []

        def update(conn):
            for j in lost:
                w = j["worker"]
                gone = f"pid {w.get('runner') or w.get('pid')} on {w['host']} is gone"
                if j["options"] and j["requeues"] < 1 and not j["cancel_requested"]:
                    n = conn.execute(
                        "UPDATE jobs SET state = 'queued', started = NULL, pid = NULL, host = NULL, "
                        "worker_pid = NULL, workdir = NULL, requeues = requeues + 1 "
                        "WHERE id = ? AND state = 'running'", (j["job_id"],)).rowcount
                    what = f"requeued (worker lost: {gone}; partial run kept in {j['workdir']})"
                else:
                    state = "cancelled" if j["cancel_requested"] else "failed"
                    n = conn.execute(
                        "UPDATE jobs SET state = ?, finished = ?, error = ?, error_step = 'worker', "
                        "error_kind = 'worker-lost', error_message = ? "
                        "WHERE id = ? AND state = 'running'",
                        (state, time.time(), f"worker: worker lost ({gone})",
                         f"worker lost ({gone})", j["job_id"])).rowcount
                    what = f"{state} (worker lost: {gone})"
                if n:
                    log.warning("job %s: %s", j["job_id"], what)
                    done.append(j["job_id"])
        self._write(update)
        return done
