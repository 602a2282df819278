"""Run a program with a time limit and kill its whole process group when it is over.

Why a process group: crash runs gdb inside itself and ``cmd | shell`` pipes
start children; killing only the first process would leave them holding the
output file and the memory.  The child starts a new session, so it and all it
starts share one group that SIGTERM, then SIGKILL, reach at once.  Ctrl-C or
SIGTERM to CAS (records.Interrupted) ends the group the same way before
unwinding.  While it runs, the output size shows on stderr when that is a
terminal (caslib.progress).
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from caslib import lifeline
from caslib.progress import Progress

GRACE = 5  # seconds between SIGTERM and SIGKILL


@dataclass
class Outcome:
    exit_status: int | None   # None when killed for the time limit
    timed_out: bool
    seconds: float


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group, wait GRACE seconds, then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; children in the group may remain
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def _show_size(progress, out) -> None:
    """The output's size so far on the progress line."""
    try:
        progress.update(os.fstat(out.fileno()).st_size)
    except OSError:
        pass


def run(argv: list, cwd: str, out_path: str, timeout: float, label: str = "crash") -> Outcome:
    """Run ``argv`` in ``cwd``, stdin from /dev/null, stdout and stderr into ``out_path``."""
    start = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lifeline.preexec(signal.SIGKILL))
        progress = Progress(label, None)
        try:
            while True:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    _kill_group(proc)
                    return Outcome(None, True, time.monotonic() - start)
                try:
                    status = proc.wait(min(1.0, left))
                    break
                except subprocess.TimeoutExpired:
                    _show_size(progress, out)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            progress.close()
        # the leader exited; anything it left running in its group goes too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return Outcome(status, False, time.monotonic() - start)
