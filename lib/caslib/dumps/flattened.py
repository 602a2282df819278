"""Byte ranges of a dump, whether a plain file or a makedumpfile ``-F`` stream.

Why: a flattened stream (what ``makedumpfile -F`` and QEMU's kdump output
write to pipes) holds the same bytes as the dump it flattens, cut into
records ``{i64 BE offset, i64 BE size, data}`` after a 4096-byte preamble
(``signature[16]="makedumpfile"``, ``type``=1, ``version``=1, BE i64 each)
and ended by ``{-1, -1}`` (makedumpfile ``makedumpfile.h``
``makedumpfile_header``/``makedumpfile_data_header``, ``write_buffer()``).
Identification and later readers only need a few ranges, so instead of
reassembling (``makedumpfile -R``) we walk the record headers, 16 bytes
each, and read just the payload bytes a caller asks for (later records win
where they overlap, as with ``-R``).

Both sources offer ``read(offset, size) -> bytes`` (short only past the end),
``size`` (logical size) and ``bytes_read`` (what was really read from disk).
Every read is bounded: a caller never gets more than it asked for, and asks
go through ``MAX_READ``.
"""

import bisect
import os
import struct

from caslib import magic
from caslib.errors import FormatError

MAGIC = magic.FLATTENED
PREAMBLE_SIZE = 4096
MAX_READ = 64 << 20        # the largest single range any reader may ask for
MAX_RECORDS = 1 << 20      # record headers walked before giving up (16 MiB of headers)


def _check_range(offset: int, size: int) -> None:
    """Refuse reads a corrupt header could ask for: negative, or beyond the fixed cap."""
    if offset < 0 or size < 0:
        raise FormatError(f"negative offset {offset} or size {size}")
    if size > MAX_READ:
        raise FormatError(f"a {size}-byte read at offset {offset} exceeds the {MAX_READ}-byte cap")


class FileSource:
    """A plain (possibly sparse) file read with pread: no buffering, every byte counted."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.bytes_read = 0
        self.reads = 0

    def read(self, offset: int, size: int) -> bytes:
        _check_range(offset, size)
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        data = os.pread(self.fd, size, offset)
        self.bytes_read += len(data)
        self.reads += 1
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_flattened(head: bytes) -> bool:
    """A makedumpfile flattened stream (its 16-byte signature, caslib.magic)."""
    return head[:16] == MAGIC


class FlattenedSource:
    """The logical dump inside a flattened stream, read without reassembling it.

    The first read walks every record header to the end marker (so a stream
    cut short is an error, never a silently shorter dump) and indexes the
    records.  Where records overlap, the later one wins, as in ``makedumpfile
    -R``: makedumpfile ``-E -F`` writes the ELF program headers as zeros first
    and their real values at the very end of the stream.
    """

    def __init__(self, stream: FileSource):
        self.stream = stream
        self.path = stream.path
        head = stream.read(0, 32)
        if len(head) < 32:
            raise FormatError("flattened preamble is truncated", "truncated")
        if not is_flattened(head):
            raise FormatError("not a makedumpfile flattened stream", "not-a-dump")
        self.type, self.version = struct.unpack(">qq", head[16:32])
        if self.type != 1:
            raise FormatError(f"flattened preamble has type {self.type}, expected 1")
        self.records: list[tuple[int, int, int]] = []  # (logical offset, size, stream position)
        self._by_start: list[tuple[int, int]] = []     # (logical offset, record number), sorted
        self._starts: list[int] = []
        self._largest = 0
        self.next_pos = PREAMBLE_SIZE
        self.ended = False
        self.size = 0                  # the logical size (known once walked)

    @property
    def bytes_read(self) -> int:
        return self.stream.bytes_read

    @property
    def reads(self) -> int:
        return self.stream.reads

    def _step(self) -> bool:
        """Read one record header; False at the end marker."""
        if len(self.records) >= MAX_RECORDS:
            raise FormatError(f"flattened stream has more than {MAX_RECORDS} records", "too-large")
        hdr = self.stream.read(self.next_pos, 16)
        if len(hdr) < 16:
            raise FormatError("flattened stream ends inside a record header at byte"
                            f" {self.next_pos} (cut short: no end marker)", "truncated")
        offset, size = struct.unpack(">qq", hdr)
        if offset == -1 and size == -1:
            self.ended = True
            return False
        if offset < 0 or size <= 0 or size > MAX_READ:  # writers never emit empty records
            raise FormatError(f"flattened record at byte {self.next_pos} has offset {offset} and"
                            f" size {size}")
        data_pos = self.next_pos + 16
        if data_pos + size > self.stream.size:
            raise FormatError(f"flattened stream ends inside the {size}-byte record at byte"
                            f" {self.next_pos} (cut short)", "truncated")
        self.records.append((offset, size, data_pos))
        self.next_pos = data_pos + size
        self.size = max(self.size, offset + size)
        self._largest = max(self._largest, size)
        return True

    def walk_all(self) -> int:
        """Walk to the end marker (raises on a cut stream); returns the number of records."""
        if not self.ended:
            while self._step():
                pass
            self._by_start = sorted((r[0], i) for i, r in enumerate(self.records))
            self._starts = [start for start, _ in self._by_start]
        return len(self.records)

    def read(self, offset: int, size: int) -> bytes:
        _check_range(offset, size)
        self.walk_all()
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        out = bytearray(end - offset)  # gaps read as zeros, as in a reassembled sparse file
        done = []
        # latest record first; earlier ones only fill what no later one supplied
        for start, rsize, pos in self._overlapping(offset, end):
            lo, hi = max(start, offset), min(start + rsize, end)
            for a, b in _subtract((lo, hi), done):
                out[a - offset:b - offset] = self.stream.read(pos + (a - start), b - a)
            done = _merge(done + [(lo, hi)])
            if done == [(offset, end)]:
                break
        return bytes(out)

    def _overlapping(self, offset: int, end: int) -> list:
        """Records overlapping [offset, end), latest in the stream first."""
        lo = bisect.bisect_left(self._starts, offset - self._largest)
        hi = bisect.bisect_left(self._starts, end)
        hits = [i for _, i in self._by_start[lo:hi]
                if self.records[i][0] + self.records[i][1] > offset]
        return [self.records[i] for i in sorted(hits, reverse=True)]

    def close(self) -> None:
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _subtract(span, done):
    """Parts of ``span`` not covered by the sorted, merged intervals ``done``."""
    lo, hi = span
    parts = []
    for a, b in done:
        if b <= lo or a >= hi:
            continue
        if a > lo:
            parts.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        parts.append((lo, hi))
    return parts


def _merge(intervals):
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def open_source(path: str):
    """Open ``path`` as a byte source: the logical dump of a flattened stream, else the file."""
    plain = FileSource(path)
    try:
        if is_flattened(plain.read(0, 16)):
            return FlattenedSource(plain)
    except BaseException:
        plain.close()
        raise
    return plain
