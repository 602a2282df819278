"""A single forward pass over a cpio archive: the payload of an RPM.

rpm writes "new ASCII" cpio (``070701``; ``070702`` is the same with a
checksum field) unless the package holds a file of 4 GiB or more; then
every entry gets rpm's stripped header ``07070X`` + 8 hex digits of the
file's index into the package header, and the size, name and mode come
from the header instead (rpm ``lib/cpio.c`` rpmcpioStrippedHeaderWrite,
``lib/rpmfi.c`` iterReadArchiveNext).  The trailer is always a newc entry
named ``TRAILER!!!``.

Layout (man 5 cpio, "New ASCII Format"): a 110-byte header (magic then 13
eight-digit hex fields), the NUL-terminated name, padding to a multiple of
4 counted from the start of the archive, the data, padding to 4 again.

``walk()`` yields one ``Member`` per entry with a bounded ``read(n)``; what
the caller leaves unread is skipped (read and dropped: the stream is a
decompressor, so it is never seeked, least of all backwards).
"""

from dataclasses import dataclass, field

from caslib.errors import FormatError

NEWC = b"070701"
CRC = b"070702"
STRIPPED = b"07070X"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110
STRIPPED_SIZE = 14
CHUNK = 1 << 20
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "devmajor", "devminor",
           "rdevmajor", "rdevminor", "namesize", "check")


@dataclass
class Member:
    """One archive entry.  ``name`` is as stored (rpm: ``./usr/...``); ``fx`` is the
    header index for stripped entries, else None."""

    name: str | None
    fx: int | None
    mode: int
    size: int
    nlink: int = 1
    ino: int = 0
    check: int = 0
    _walker: "object" = field(default=None, repr=False)
    _left: int = 0

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes of this member's data; b"" at its end."""
        if self._left <= 0:
            return b""
        data = self._walker._read_some(min(n, self._left))
        self._left -= len(data)
        return data

    def isreg(self) -> bool:
        return (self.mode & 0o170000) == 0o100000

    def islnk(self) -> bool:
        return (self.mode & 0o170000) == 0o120000

    def isdir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000


class Walker:
    """Reads entries from ``stream`` (any object with ``read(n)``) in order."""

    def __init__(self, stream, name: str, stripped=None):
        """``stripped(fx) -> (name, mode, size)`` describes ``07070X`` entries from the
        package header; without it such an archive is refused."""
        self.stream = stream
        self.name = name
        self.stripped = stripped
        self.buf = b""
        self.offset = 0        # bytes of archive consumed so far (for padding and messages)
        self.finished = False

    # -- low level ---------------------------------------------------------------------
    def _read_some(self, n: int) -> bytes:
        """At most ``n`` bytes, at least one; raises truncated at end of stream."""
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
        else:
            data = self.stream.read(n)
            if len(data) > n:  # a source that ignores n: keep the excess
                data, self.buf = data[:n], data[n:]
            if not data:
                raise self._truncated()
        self.offset += len(data)
        return data

    def _exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            data = self._read_some(n - got)
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            n -= len(self._read_some(min(n, CHUNK)))

    def _pad(self) -> None:
        self._skip(-self.offset % 4)

    def _truncated(self):
        return FormatError(f"{self.name}: cpio payload ends early, inside an entry "
                         f"(after {self.offset:,} uncompressed bytes)", "truncated")

    def _corrupt(self, what: str):
        return FormatError(f"{self.name}: corrupt cpio payload at uncompressed byte "
                         f"{self.offset:,}: {what}", "corrupt")

    # -- entries -----------------------------------------------------------------------
    def _next(self) -> Member | None:
        start = self.offset
        magic = self._exact(6)
        if magic == STRIPPED:
            if self.stripped is None:
                raise self._corrupt("stripped 07070X entry without a package header to describe it")
            raw = self._exact(8)
            fx = _hex(raw, "file index", self, start)
            self._pad()
            try:
                name, mode, size = self.stripped(fx)
            except (IndexError, KeyError):
                raise self._corrupt(f"07070X entry names file index {fx}, "
                                    "which the package header does not have") from None
            return Member(name, fx, mode, size, _walker=self, _left=size)
        if magic not in (NEWC, CRC):
            raise self._corrupt(f"bad entry magic {magic!r} (expected 070701, 070702 or 07070X)")
        raw = self._exact(HEADER_SIZE - 6)
        values = {f: _hex(raw[i * 8:i * 8 + 8], f, self, start) for i, f in enumerate(_FIELDS)}
        namesize = values["namesize"]
        if not 1 <= namesize <= 65536:
            raise self._corrupt(f"implausible name size {namesize}")
        name = self._exact(namesize)
        if name[-1:] != b"\0":
            raise self._corrupt("entry name is not NUL-terminated")
        self._pad()
        text = name[:-1].decode("utf-8", "surrogateescape")
        if text == TRAILER:
            self.finished = True
            return None
        return Member(text, None, values["mode"], values["size"], values["nlink"], values["ino"],
                      values["check"], _walker=self, _left=values["size"])

    def __iter__(self):
        while not self.finished:
            member = self._next()
            if member is None:
                return
            yield member
            # whatever the consumer left unread is dropped, then the data padding
            self._skip(member._left)
            member._left = 0
            self._pad()


def _hex(raw: bytes, what: str, walker: Walker, start: int) -> int:
    try:
        return int(raw, 16)
    except ValueError:
        raise FormatError(f"{walker.name}: corrupt cpio header at uncompressed byte {start:,}: "
                        f"{what} {raw!r} is not hex", "corrupt") from None


def walk(stream, name: str, stripped=None):
    """Iterate over the entries of the cpio archive in ``stream``; see ``Walker``."""
    return iter(Walker(stream, name, stripped))
