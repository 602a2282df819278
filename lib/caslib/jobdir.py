"""Identifiers, job names and the job directory (man/cas-records.7, THE JOB DIRECTORY).

``<workDirectory>/<job>/<YYYY.MM.DD.HH.MM.SS>``; a second run in the same
second gets ``...SS-2``, ``-3``, ... created with ``mkdir`` so two runs can
never share a directory.
"""

import os
import re
import time

from caslib.records import StepError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
STAMP_FORMAT = "%Y.%m.%d.%H.%M.%S"
_STAMP = re.compile(r"(\d{4})\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)(?:-(\d+))?")


def check_name(value, what: str = "identifier") -> str:
    """Return ``value`` if it is a safe identifier/job name, else raise StepError(kind=usage)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise StepError(f"bad {what} {shown!r}: use 1-64 characters of A-Z a-z 0-9 . _ -, "
                        "not starting with '.' or '-'", "usage")
    return value


def is_valid_name(value) -> bool:
    return isinstance(value, str) and bool(_NAME.fullmatch(value))


def parse_stamp(name: str) -> float | None:
    """Seconds since the epoch (local time) for a job's timestamp directory name, else None."""
    m = _STAMP.fullmatch(name)
    if not m:
        return None
    try:
        return time.mktime(time.strptime(".".join(m.groups()[:6]), STAMP_FORMAT))
    except (ValueError, OverflowError):
        return None


def create(work_directory: str, job: str, now: float | None = None) -> str:
    """Create and return a new, empty job directory for ``job`` (validated first)."""
    check_name(job, "job name")
    parent = os.path.join(work_directory, job)
    os.makedirs(parent, exist_ok=True)
    stamp = time.strftime(STAMP_FORMAT, time.localtime(now if now is not None else time.time()))
    for n in range(1, 10000):
        path = os.path.join(parent, stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        return os.path.abspath(path)
    raise StepError(f"{parent}: too many jobs started in the same second", "busy")


def inside(base: str, path: str) -> bool:
    """True when ``path`` (resolved) lies inside ``base`` (resolved)."""
    base_r = os.path.realpath(base)
    path_r = os.path.realpath(path)
    return path_r == base_r or path_r.startswith(base_r.rstrip(os.sep) + os.sep)
