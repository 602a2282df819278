"""The CAS database (SQLite at the ``database`` key): kernels index, jobs, servers.

Why SQLite in WAL mode: cas-findkernel reads while cas-admin writes, and
several jobs record themselves at once; WAL lets readers go on during a
write, and the busy timeout makes writers queue instead of failing.  The
schema is versioned with ``PRAGMA user_version`` and migrated forward in one
transaction; a database from a newer CAS is refused, never rewritten.

Public API (other steps code against it):
  connect(path, timeout=30.0) -> sqlite3.Connection
      creates the parent directory and the schema, WAL mode, foreign keys on;
      raises DatabaseError (a records.StepError) with one line naming the file
      when it is not a database, locked for longer than ``timeout``, or unreadable.
  transaction(conn)  context manager: BEGIN IMMEDIATE ... COMMIT / ROLLBACK.
  friendly(exc, path) -> DatabaseError  for sqlite3 errors raised later.

Tables (schema version 5; version 2 added the index kernels(base), version 3 the
queue columns of jobs, see ``jobs_queue_migration``, version 4 the signatures table,
version 5 the Slurm columns of jobs: slurm_id, slurm_partition, slurm_state, slurm_node):
  packages(id, path UNIQUE, size, mtime_ns, format 'rpm'|'deb', name, epoch, version,
           release, arch, payload, files, error, indexed)
  kernels(id, package -> packages.id ON DELETE CASCADE, release, base, flavour, machine,
          vmlinux, modules_prefix, modules, build_id)
  jobs(id, job, identifier, workdir UNIQUE (NULL while queued), source,
       state queued|running|done|failed|cancelled, submitted, started, finished, release,
       error, error_step, error_kind, error_message, email, pid, host, worker_pid, attempt,
       rerun_of -> jobs.id, args (the cas arguments, JSON), panic, requeues, cancel)
  servers(host, port, arch, crash, status, checked; PRIMARY KEY(host, port))
  signatures(id, job, identifier, workdir UNIQUE, signature, kind, culprit, kernel, created)
"""

import contextlib
import os
import sqlite3

from caslib.records import StepError

SCHEMA_VERSION = 5

def jobs_queue_migration() -> list:
    """Version 3: the jobs table becomes the queue (cas --queue, cas-worker, cas-jobs).

    SQLite cannot widen a CHECK constraint in place, so the table is rebuilt:
    new states queued and cancelled, workdir and started empty while queued,
    the structured error, the worker (host, pid), attempts and reruns.
    """
    return [
        """CREATE TABLE jobs_v3(
            id INTEGER PRIMARY KEY,
            job TEXT NOT NULL,
            identifier TEXT,
            workdir TEXT UNIQUE,
            source TEXT,
            state TEXT NOT NULL
                CHECK(state IN ('queued','running','done','failed','cancelled')),
            submitted REAL,
            started REAL,
            finished REAL,
            release TEXT,
            error TEXT,
            error_step TEXT, error_kind TEXT, error_message TEXT,
            email TEXT,
            pid INTEGER,
            host TEXT,
            worker_pid INTEGER,
            attempt INTEGER NOT NULL DEFAULT 1,
            rerun_of INTEGER REFERENCES jobs_v3(id) ON DELETE SET NULL,
            args TEXT,
            panic TEXT,
            requeues INTEGER NOT NULL DEFAULT 0,
            cancel INTEGER NOT NULL DEFAULT 0)""",
        """INSERT INTO jobs_v3 (id, job, identifier, workdir, source, state, submitted, started,
            finished, release, error, email, pid)
           SELECT id, job, identifier, workdir, source, state, started, started, finished,
                  release, error, email, pid FROM jobs""",
        "DROP TABLE jobs",
        "ALTER TABLE jobs_v3 RENAME TO jobs",
        "CREATE INDEX jobs_started ON jobs(started)",
        "CREATE INDEX jobs_state ON jobs(state, id)",
    ]


MIGRATIONS = {
    1: [
        """CREATE TABLE packages(
            id INTEGER PRIMARY KEY,
            path TEXT UNIQUE NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            format TEXT NOT NULL CHECK(format IN ('rpm','deb')),
            name TEXT, epoch INTEGER, version TEXT, release TEXT, arch TEXT,
            payload TEXT, files INTEGER, error TEXT,
            indexed REAL NOT NULL)""",
        """CREATE TABLE kernels(
            id INTEGER PRIMARY KEY,
            package INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            release TEXT NOT NULL, base TEXT, flavour TEXT, machine TEXT,
            vmlinux TEXT NOT NULL, modules_prefix TEXT,
            modules INTEGER NOT NULL DEFAULT 0, build_id TEXT)""",
        "CREATE INDEX kernels_release ON kernels(release)",
        "CREATE INDEX kernels_build_id ON kernels(build_id)",
        "CREATE INDEX kernels_package ON kernels(package)",
        """CREATE TABLE jobs(
            id INTEGER PRIMARY KEY,
            job TEXT NOT NULL,
            identifier TEXT,
            workdir TEXT UNIQUE NOT NULL,
            source TEXT,
            state TEXT NOT NULL CHECK(state IN ('running','done','failed')),
            started REAL NOT NULL,
            finished REAL,
            release TEXT,
            error TEXT,
            email TEXT,
            pid INTEGER)""",
        "CREATE INDEX jobs_started ON jobs(started)",
        """CREATE TABLE servers(
            host TEXT NOT NULL,
            port INTEGER NOT NULL DEFAULT 22,
            arch TEXT, crash TEXT, status TEXT, checked REAL,
            PRIMARY KEY(host, port))""",
    ],
    # cas-findkernel's "nearest" suggestions look kernels up by base release
    2: ["CREATE INDEX kernels_base ON kernels(base)"],
    3: jobs_queue_migration(),
}


def signatures_migration() -> list:
    """cas-triage's known-crash signatures, one row per job directory (caslib.diagnosis.signatures)."""
    return [
        """CREATE TABLE signatures(
            id INTEGER PRIMARY KEY,
            job TEXT, identifier TEXT,
            workdir TEXT UNIQUE,
            signature TEXT NOT NULL,
            kind TEXT, culprit TEXT, kernel TEXT,
            created REAL NOT NULL)""",
        "CREATE INDEX signatures_signature ON signatures(signature)",
    ]


MIGRATIONS[4] = signatures_migration()
# version 5: where the Slurm backend sent a job (slurmqueue.py); NULL for local jobs
MIGRATIONS[5] = [f"ALTER TABLE jobs ADD COLUMN {c}" for c in (
    "slurm_id INTEGER", "slurm_partition TEXT", "slurm_state TEXT", "slurm_node TEXT")]


class DatabaseError(StepError):
    """The database cannot be used; the message is one line naming the file."""

    def __init__(self, message: str, kind: str = "database"):
        super().__init__(message, kind)


def friendly(exc: Exception, path: str, timeout: float | None = None) -> DatabaseError:
    """Turn an sqlite3 error into one line a person can act on."""
    text = str(exc)
    low = text.lower()
    if "not a database" in low or "malformed" in low:
        return DatabaseError(f"{path}: not an SQLite database ({text})", "corrupt")
    if "locked" in low or "busy" in low:
        wait = f" after waiting {timeout:g} s" if timeout is not None else ""
        return DatabaseError(f"{path}: database is locked by another process; gave up{wait}",
                             "busy")
    if "readonly" in low or "read-only" in low:
        return DatabaseError(f"{path}: database is read-only for this user ({text})", "permission")
    if "unable to open" in low:
        return DatabaseError(f"{path}: cannot open database ({text})", "os-error")
    return DatabaseError(f"{path}: database error: {text}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE (take the write lock now, waiting up to the busy timeout), then COMMIT."""
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"{path}: database schema version {version} is newer than this "
                            f"CAS supports ({SCHEMA_VERSION}); upgrade CAS", "version")
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        # re-read under the write lock: another process may have migrated meanwhile
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(step)}")


def connect(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating if needed) the CAS database at ``path``; DatabaseError on trouble."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"{parent}: cannot create database directory: {exc.strerror}",
                            "os-error") from None
    if os.path.isdir(path):
        raise DatabaseError(f"{path}: is a directory, not a database", "usage")
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise DatabaseError(f"{path}: cannot read database: permission denied", "permission")
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=timeout)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # WAL needs a writable directory; reading still works
            conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise friendly(exc, path, timeout) from None
    return conn


def connect_readonly(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """Open an existing database for reading only (users who may list but not write).

    Nothing is created or migrated; a database older than this CAS is read as
    it is only when it already has the current schema, else DatabaseError.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise DatabaseError(f"{path}: no database yet (nothing has been queued or run)",
                            "not-found")
    # Reading a WAL database needs its -shm file; when no CAS process has the database
    # open there is none, and a user who may not write the directory cannot make one.
    # Then (no -wal file either) the main file holds everything: read it as immutable.
    conn = None
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(f"file:{path}?{query}", uri=True, timeout=timeout)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            break
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if "immutable" in query or os.path.exists(path + "-wal") or not (
                    "readonly" in str(exc) or "unable to open" in str(exc)):
                raise friendly(exc, path, timeout) from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise DatabaseError(f"{path}: database schema version {version}, this CAS reads "
                            f"{SCHEMA_VERSION}; run any CAS command as casuser once to "
                            "migrate it", "version")
    return conn
