"""Jobs rows whose process was killed: not ``running`` forever.

Why: a SIGKILL'd ``cas`` (or worker) cannot finish its row.  Every later
``cas`` and ``cas-admin`` run calls ``reap``, which asks the queue
(``queue.Queue.recover_lost``, the one place that decides) to fail or requeue
``running`` rows whose process is gone on this host.  A database that cannot
be reached is left alone (a debug line, never a failure).
"""

from caslib import logs


def reap(cfg) -> int:
    """Recover the lost rows of this host; returns how many."""
    from caslib.queue import open_queue

    try:
        queue = open_queue(cfg)
    except Exception as exc:  # bookkeeping never fails a run
        logs.get().debug("jobs database not reachable for reaping: %s", exc)
        return 0
    try:
        return len(queue.recover_lost())
    except Exception as exc:
        logs.get().debug("reaping jobs rows: %s", exc)
        return 0
    finally:
        queue.close()
