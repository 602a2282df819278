"""Children die with their parent: no orphaned step or crash after a SIGKILL.

Why: ``cas`` runs six processes and cas-crash a crash process group; a
SIGKILL (OOM killer, ``kill -9``, a lost session) gives no chance to stop
them, and they would go on writing into the job for hours.  Linux delivers
a chosen signal to a child when its parent dies if the child asked with
``prctl(PR_SET_PDEATHSIG)``; ``preexec(sig)`` is the ``preexec_fn`` that
asks, and exits at once if the parent is already gone.  SIGTERM lets a step
remove its partial files (records.Interrupted); crash gets SIGKILL.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc: nothing to ask for
    _prctl = None


def preexec(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` for Popen: deliver ``sig`` to the child when this process dies."""
    parent = os.getpid()

    def ask() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # died between fork and prctl
            os._exit(128 + int(sig))

    return ask


def alive(pid: int) -> bool:
    """True when a process ``pid`` exists (and is not a zombie)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[-1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
