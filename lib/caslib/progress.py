"""Progress of long steps on stderr: bytes, rate and ETA, only when stderr is a terminal."""

import sys
import time


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Call ``update(done)`` as often as you like; it redraws at most 5 times a second.

    Silent unless ``stream`` is a terminal (so logs and pipes stay clean).
    """

    def __init__(self, label: str, total: int | None = None, stream=None, unit: str = "bytes"):
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.label, self.total, self.unit = label, total, unit
        self.start = time.monotonic()
        self._last = 0.0
        self.done = 0

    def _fmt(self, n: float) -> str:
        return _size(n) if self.unit == "bytes" else f"{n:,.0f} {self.unit}"

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        text = f"{self.label}: {self._fmt(done)}"
        if self.total:
            text += f" of {self._fmt(self.total)} ({100 * done / self.total:.0f}%)"
        text += f", {self._fmt(rate)}/s" if self.unit == "bytes" else f", {rate:,.0f}/s"
        if self.total and rate > 0 and done < self.total:
            eta = (self.total - done) / rate
            text += f", ETA {int(eta // 60)}:{int(eta % 60):02d}"
        self.stream.write("\r\033[K" + text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
