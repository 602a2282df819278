"""Write to a temporary name, then rename: a file CAS writes is whole or not there.

Why: a reader (the next filter, a mail client, an engineer with ``less``) must never
see half a ``mail.eml``, ``crash.in`` or vmlinux, and a failure or a signal must not
leave a file that looks complete.  The temporary file sits next to the target (same
file system, so the rename is atomic) under a name ``pathsafety.cas_writes`` knows as
ours (``.<name>.<random>.tmp``), and is removed on any failure.
"""

import contextlib
import os


def temp_name(path: str) -> str:
    """A fresh temporary name in ``path``'s directory."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{os.urandom(4).hex()}.tmp")


@contextlib.contextmanager
def renaming(path: str):
    """Yield a temporary name for the caller to create; on success it is renamed to
    ``path`` (replacing it), on any exception it is removed."""
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replacing(path: str, binary: bool = True, perm: int | None = None):
    """Yield a new file (``wb``, or ``w`` UTF-8 text) that replaces ``path`` when the
    block ends without an exception.  ``perm``: its mode, umask ignored; default
    0o666 less the umask, as ``open`` would."""
    with renaming(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        if perm is not None:
            os.fchmod(fd, perm)
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            yield fh


def write_text(path: str, text: str, perm: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8), whole or not at all."""
    with replacing(path, binary=False, perm=perm) as fh:
        fh.write(text)
