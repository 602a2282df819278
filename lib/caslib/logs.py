"""Logging: ``prog: message`` on stderr, and timestamped lines in the job's process log."""

import contextlib
import logging
import os
import sys

_LOGGER = "cas"


def setup(prog: str, level: str = "INFO") -> logging.Logger:
    """Send the ``cas`` logger to stderr as ``prog: message``."""
    log = logging.getLogger(_LOGGER)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    handler.addFilter(_GATE)
    _GATE.handler = handler
    log.addHandler(handler)
    log.propagate = False
    set_level(level)
    log.prog = prog  # type: ignore[attr-defined]
    return log


def set_level(level: str) -> None:
    logging.getLogger(_LOGGER).setLevel(getattr(logging, str(level).upper(), logging.INFO))


def get() -> logging.Logger:
    """The one CAS logger (set up by ``setup``): every module logs through this."""
    return logging.getLogger(_LOGGER)


def job_log_path(record: dict) -> str | None:
    from caslib.jobdir import is_valid_name  # jobdir imports records, which imports us

    workdir, job = record.get("workdir"), record.get("job")
    if not isinstance(workdir, str) or not is_valid_name(job) or "\0" in workdir \
            or not os.path.isdir(workdir):
        return None
    return os.path.join(workdir, f"{job}.log")


@contextlib.contextmanager
def job_log(record: dict):
    """While one record is processed, also append log lines to ``<workdir>/<job>.log``."""
    path = job_log_path(record)
    log = logging.getLogger(_LOGGER)
    handler = None
    if path:
        try:
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError:
            handler = None
    if handler is not None:
        prog = getattr(log, "prog", "cas")
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {prog} %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
    try:
        yield path
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


class _Gate(logging.Filter):
    """Holds a record's INFO/DEBUG lines for stderr until the record's outcome is known.

    Why: a record that fails should print its one error line, not the narrative of
    how far it got (that stays in the job's log).  Warnings and errors pass at once;
    on a terminal nothing is held (a person watches the narrative live).
    """

    def __init__(self):
        super().__init__()
        self.held: list | None = None
        self.handler = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.held is not None and record.levelno < logging.WARNING:
            self.held.append(record)
            return False
        return True

    def release(self, keep: bool) -> None:
        held, self.held = self.held, None
        if keep and held and self.handler is not None:
            for record in held:
                self.handler.handle(record)


_GATE = _Gate()


@contextlib.contextmanager
def hold_info():
    """While one record is processed, hold its INFO lines for stderr; yields ``drop()``,
    to call when the record ends in an error (the held lines are then never printed)."""
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty or _GATE.held is not None:
        yield lambda: None
        return
    _GATE.held = []
    state = {"keep": True}
    try:
        yield lambda: state.update(keep=False)
    finally:
        _GATE.release(state["keep"])
