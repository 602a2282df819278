"""Known-crash signatures: a stable hash per bug, stored per job, to answer "seen before?".

Why a hash of names: two dumps of one bug differ in addresses, offsets, PIDs, CPUs and
KASLR, and across kernels of one release stream also in offsets and compiler suffixes
(``.cold``, ``.isra.0``); the kind, the culprit function and the functions (and modules)
of the first reliable frames from the culprit on do not.  Different bugs differ in at
least one of them.  This is what ABRT's server does for user-space backtraces.

The ``signatures`` table (see db.signatures_migration) holds one row per job directory:
``(job, identifier, workdir, signature, kind, culprit, kernel, created)``.
"""

import hashlib
import json
import sqlite3
import time

from caslib.diagnosis import kernlog

VERSION = 1        # part of the hashed text: bump when what goes in changes
TOP_FRAMES = 5     # reliable frames from the culprit on


def frames_from_culprit(culprit: dict | None, backtrace: list) -> list:
    """The reliable frames from the culprit on (all of them when it is not among them)."""
    names = [kernlog.base_name(f.split()[0]) for f in backtrace]
    if culprit and culprit.get("function") in names:
        return backtrace[names.index(culprit["function"]):]
    return backtrace


def compute(kind: str, culprit: dict | None, backtrace: list, top: int = TOP_FRAMES) -> str:
    """'<kind>:<16 hex>' from the kind, culprit and top reliable frames (names only)."""
    frames = []
    for label in frames_from_culprit(culprit, backtrace)[:top]:
        name, _, module = label.partition(" [")
        frames.append([kernlog.base_name(name), module.rstrip("]") or None])
    modules = sorted({m for _f, m in frames if m} | (
        {culprit["module"]} if culprit and culprit.get("module") else set()))
    text = json.dumps([VERSION, kind, (culprit or {}).get("function"), frames, modules],
                      separators=(",", ":"))
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def store(conn: sqlite3.Connection, record: dict, signature: str, kind: str,
          culprit: str | None, now: float | None = None) -> None:
    """Remember this job's signature (a re-run of the same job directory replaces its row)."""
    kernel = record.get("kernel") if isinstance(record.get("kernel"), dict) else {}
    with conn:
        conn.execute(
            "INSERT INTO signatures (job, identifier, workdir, signature, kind, culprit, kernel, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(workdir) DO UPDATE SET "
            "signature = excluded.signature, kind = excluded.kind, culprit = excluded.culprit, "
            "kernel = excluded.kernel",
            (record.get("job"), record.get("id"), record.get("workdir"), signature, kind, culprit,
             kernel.get("release"), time.time() if now is None else now))


def seen_before(conn: sqlite3.Connection, signature: str, exclude_workdir: str | None = None,
                limit: int = 20) -> list:
    """Earlier jobs with this signature, newest first: [{identifier, job, date, kernel, workdir}].

    For ``cas-jobs --signature SIG`` as well as for cas-triage (which leaves out the job
    being triaged).
    """
    rows = conn.execute(
        "SELECT identifier, job, created, kernel, workdir FROM signatures WHERE signature = ? "
        "AND workdir IS NOT ? ORDER BY created DESC, id DESC LIMIT ?",
        (signature, exclude_workdir, int(limit))).fetchall()
    return [{"identifier": r[0], "job": r[1],
             "date": time.strftime("%Y-%m-%d", time.localtime(r[2])), "created": r[2],
             "kernel": r[3], "workdir": r[4]} for r in rows]
