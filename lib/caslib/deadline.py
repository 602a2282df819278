"""Overall deadlines: a peer that sends one byte every few seconds still ends.

Why: an idle timeout (``downloadTimeout``, the SMTP socket timeout) never
fires against a server that trickles a byte just before it would, and a
FIFO with no writer blocks ``read(2)`` for ever.  ``transferDeadline`` bounds
the whole transfer:

- ``Deadline(seconds, what)``: ``check()`` raises StepError(kind=timeout)
  once the time is up; ``left()`` is what remains (for poll timeouts);
- ``PipeReader(fd, deadline, what)``: ``read(n)`` from a pipe or FIFO that
  waits with ``poll`` at most until the deadline (no writer, a silent writer);
- ``alarm(seconds, what)``: a context manager for blocking library calls in
  the main thread (smtplib): SIGALRM ends them with ``TimeoutError``.
"""

import contextlib
import os
import select
import signal
import time

from caslib.records import StepError



class Deadline:
    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, done: int | None = None) -> None:
        if self.left() <= 0:
            after = f" after {done:,} bytes" if done is not None else ""
            raise StepError(f"{self.what}: not finished within transferDeadline "
                            f"({self.seconds:g} s){after}", "timeout")


class PipeReader:
    """Unbuffered reads from a pipe/FIFO fd, never blocking past the deadline."""

    def __init__(self, fd: int, deadline: Deadline):
        self.fd, self.deadline, self.pos = fd, deadline, 0
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def read(self, n: int = -1) -> bytes:
        n = 1 << 20 if n is None or n < 0 else n
        while True:
            self.deadline.check(self.pos)
            ready = self.poller.poll(max(1, int(min(self.deadline.left(), 3600) * 1000)))
            if not ready:
                continue
            try:
                data = os.read(self.fd, n)  # b"" once a writer came and went: the end
            except BlockingIOError:
                continue
            self.pos += len(data)
            return data

    def readable(self):
        return True

    def fileno(self):
        return self.fd

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def open_fifo(path: str, deadline: Deadline) -> PipeReader:
    """Open a FIFO for reading without waiting for a writer in open(2)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    return PipeReader(fd, deadline)


@contextlib.contextmanager
def alarm(seconds: float, what: str):
    """End a blocking call in the main thread after ``seconds`` with TimeoutError."""
    def ring(_signum, _frame):
        raise TimeoutError(f"{what}: not finished within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
