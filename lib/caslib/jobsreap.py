"""Jobs rows whose ``cas`` was killed: marked ``failed`` (killed), not ``running`` forever.

Why: a SIGKILL'd ``cas`` cannot finish its row.  Every later ``cas`` and
``cas-admin`` run calls ``reap``: a ``running`` row whose pid no longer
exists on this machine becomes ``failed`` with the error ``killed: ...``.
A database that cannot be reached is left alone (a warning, never a failure).
"""

import time

from . import lifeline, logs


def gone(pid) -> bool:
    """True when the ``cas`` of a row (its pid) is no longer alive on this machine."""
    return not isinstance(pid, int) or pid <= 0 or not lifeline.alive(pid)


def reap(cfg, conn=None) -> int:
    """Mark dead ``running`` rows failed; returns how many."""
    from . import db

    own = conn is None
    try:
        conn = conn or db.connect(cfg.database, 5.0)
    except Exception as exc:
        logs.get().debug("jobs database not reachable for reaping: %s", exc)
        return 0
    try:
        rows = conn.execute("SELECT id, pid, started FROM jobs WHERE state = 'running'").fetchall()
        dead = [(row[0], row[1]) for row in rows if gone(row[1])]
        with conn:
            for rowid, pid in dead:
                conn.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? "
                             "WHERE id = ? AND state = 'running'",
                             (time.time(), f"killed: its cas process (pid {pid}) is gone", rowid))
        for rowid, pid in dead:
            logs.get().debug("job row %d: cas pid %s is gone; marked failed (killed)", rowid, pid)
        return len(dead)
    except Exception as exc:  # bookkeeping never fails a run
        logs.get().debug("reaping jobs rows: %s", exc)
        return 0
    finally:
        if own:
            conn.close()
