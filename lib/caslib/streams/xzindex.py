"""Where every block of a run of xz streams is, from the streams' indexes.

Why: xz's own multi-threaded decoder needs each block's sizes in its block
header, which single-threaded encoders (Python's ``lzma``, so each stream
``cas-unpack --compress`` writes) leave out.  Every stream ends with an
index of its blocks' sizes and a footer giving the index's size, so, when
the end of the data is known, the streams can be walked from the last
footer back to the first header, as ``xz --list`` does.  The result feeds
``xzblocks.ParallelXz``.

Layout: "The .xz File Format" 1.1.0, sections 2.1.2 (stream footer), 2.2
(stream padding) and 4 (index).
"""

import os
import struct
import zlib

from caslib.streams.xzblocks import _CHECK_SIZES, MAGIC, _varint

MAX_INDEX = 32 << 20        # bytes of one stream's index we read


class Block(tuple):
    """(offset, unpadded size, uncompressed size, stream flags, check size) from an index."""


def _footer(fd: int, start: int, pos: int) -> tuple[int, bytes, int]:
    """The stream ending at ``pos`` (after its padding): (its end, footer, index size)."""
    tail = os.pread(fd, min(1 << 16, pos - start), max(start, pos - (1 << 16)))
    stripped = tail.rstrip(b"\0")
    pad = len(tail) - len(stripped)
    if pad % 4 or not stripped:
        raise ValueError("stream padding is not a multiple of four bytes")
    pos -= pad
    foot = os.pread(fd, 12, pos - 12)
    if len(foot) < 12 or foot[10:12] != b"YZ" or pos - 12 < start:
        raise ValueError("no stream footer at the end")
    if struct.pack("<I", zlib.crc32(foot[4:10])) != foot[:4]:
        raise ValueError("damaged stream footer")
    index_size = (struct.unpack_from("<I", foot, 4)[0] + 1) * 4
    if index_size > MAX_INDEX or pos - 12 - index_size < start + 12:
        raise ValueError("index too large or outside the input")
    return pos, foot, index_size


def _records(fd: int, index_at: int, index_size: int, limit: int) -> list:
    """The (unpadded size, uncompressed size) records of the index at ``index_at``."""
    index = os.pread(fd, index_size, index_at)
    if len(index) < index_size or index[0] != 0:
        raise ValueError("no index where the footer says")
    if struct.pack("<I", zlib.crc32(index[:-4])) != index[-4:]:
        raise ValueError("damaged index")
    count, at = _varint(index, 1)
    if count > limit:
        raise ValueError(f"more than {limit:,} blocks")
    records = []
    for _ in range(count):
        unpadded, at = _varint(index, at)
        unc, at = _varint(index, at)
        records.append((unpadded, unc))
    return records


def index_blocks(fd: int, start: int, end: int, limit: int = 1 << 22) -> list:
    """Every block of the xz streams filling ``[start, end)`` of ``fd``, first to last.

    Raises ValueError when the bytes are not whole streams (truncated, trailing
    data, a damaged index): the sequential reader then reports what is wrong.
    """
    streams = []
    pos = end
    while pos > start:
        pos, foot, index_size = _footer(fd, start, pos)
        index_at = pos - 12 - index_size
        records = _records(fd, index_at, index_size, limit)
        blocks_size = sum(u + (-u % 4) for u, _ in records)
        head_at = index_at - blocks_size - 12
        if head_at < start:
            raise ValueError("the index describes more blocks than the input holds")
        head = os.pread(fd, 12, head_at)
        if head[:6] != MAGIC or head[6:8] != foot[8:10]:
            raise ValueError("no stream header where the index says")
        streams.append((head_at, head[6:8], records))
        limit -= len(records)
        pos = head_at
    blocks = []
    for head_at, flags, records in reversed(streams):
        at = head_at + 12
        check = _CHECK_SIZES[flags[1] & 0x0F]
        for unpadded, unc in records:
            blocks.append(Block((at, unpadded, unc, flags, check)))
            at += unpadded + (-unpadded % 4)
    return blocks
