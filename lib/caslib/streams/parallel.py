"""Decode an incoming dump's compression on every core when its format allows it.

Why: a 64 GiB dump compressed with ``xz -T0``, ``pzstd``, ``pbzip2`` or
``cas-unpack --compress`` is made of independent pieces (xz blocks with
their sizes in the headers, zstd frames, bzip2 streams), and one thread
decodes only one of them at a time.  When the compressed bytes are a range
of a seekable file (the input itself, a member of a plain tar, a stored zip
member) the pieces are read with ``pread``, decoded by a thread pool
(liblzma, libbz2 and libzstd release the GIL) and handed out in order, with
at most ``workers`` pieces of at most ``PIECE`` bytes decoded ahead: memory
is bounded whatever the dump's size.  This thread reader serves a layer read
as a stream (a tar inside xz); a layer that holds the core itself is decoded
by processes writing straight into the core (``caslib.procdecode``), which
use the same plans and piece boundaries.

Everything else stays on one thread, and the log says why: gzip (one
deflate stream, no independent pieces), lzma-alone, a single xz block, a
single zstd frame, one bzip2 stream of many blocks (``bzip2``, ``lbzip2``),
a pipe or download, or data inside another compressed layer.  A piece the
pool cannot decode (too large, or not what the boundary scan promised) is
handed to the ordinary one-thread reader from that piece's first byte, so
errors are reported by the same code and with the same words as without
threads.  xz uses ``xzblocks.ParallelXz`` (cas-extract's block decoder) with
the blocks found by ``xzindex``.
"""

import collections
import os
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from caslib import magic
from caslib.streams import decompress, procworker, sparse, xzblocks, xzindex

PIECE = 32 << 20          # decoded bytes of one piece held whole (xz -T0 -6 blocks are 24 MiB)
CHUNK = 1 << 20
HEADERS = 64 << 10       # zstd: the window block headers are read from (most blocks are smaller)
SCAN = 4 << 20            # bzip2: compressed bytes searched for stream starts at a time
BZ_GROUP = 8             # bzip2 streams per piece (pbzip2 streams hold 900 kB each)
_ZERO = sparse.zeros(CHUNK)   # zero chunks (most of a dump) share one object
_BZ_START = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")


@dataclass
class Origin:
    """The compressed bytes are ``[start, end)`` of the seekable file ``fd``."""

    fd: int
    start: int
    end: int


def workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def open_reader(origin: Origin | None, codec: str, name: str, log, why_not: str = ""):
    """A parallel reader over ``origin`` for ``codec``, or None (one thread; logged why)."""
    n = workers()
    if codec == "gzip":
        why = "gzip is one deflate stream with no independent pieces"
    elif codec == "lzma":
        why = "lzma-alone is one stream with no independent pieces"
    elif origin is None:
        why = why_not or "the input is not a seekable file"
    elif n < 2:
        why = "only one CPU is available"
    else:
        try:
            plan = {"xz": _xz_plan, "zstd": _zstd_plan, "bzip2": _bz_plan}[codec]
            why = plan(origin)
        except (OSError, ValueError, struct.error) as exc:
            why = f"cannot read its layout ({exc})"
        if not isinstance(why, str) or not why:
            log.info("%s: decoding %s on %d cores", name, codec, n)
            if codec == "xz":
                return xzblocks.ParallelXz(origin.fd, origin.start, origin.end, name, n,
                                           max_block=PIECE, budget=n * PIECE // 2, log=log,
                                           blocks=why)
            pieces = _zstd_pieces(origin) if codec == "zstd" else _bz_pieces(origin)
            decode = _zstd_decode if codec == "zstd" else _bz_decode
            return Ordered(origin, codec, name, log, pieces, decode, n)
    log.info("%s: decoding %s on one thread: %s", name, codec, why)
    return None


class _Fallback(Exception):
    """This piece goes to the one-thread reader (from its first byte)."""


class Ordered:
    """``read(n)`` over pieces decoded by a thread pool, handed out in order.

    ``pieces`` yields ``(offset, end, data)`` (offsets relative to the
    origin) and may raise ``_Fallback(offset, why)``; ``decode(data)``
    returns a list of byte strings or raises ``_Fallback(why)``.
    """

    threaded = True

    def __init__(self, origin: Origin, codec, name, log, pieces, decode, workers: int):
        self.origin, self.codec, self.name, self.log = origin, codec, name, log
        self.pieces, self.decode, self.workers = pieces, decode, workers
        self.pool = ThreadPoolExecutor(workers, f"cas-{codec}")
        self.pending = collections.deque()
        self.chunks = collections.deque()
        self.current, self.cpos = b"", 0
        self.compressed_pos = 0
        self.input_done = False
        self.switch = None          # (offset, why): the one-thread reader takes over there
        self.fallback = None

    def _fill(self):
        while not self.input_done and len(self.pending) < self.workers:
            try:
                offset, end, data = next(self.pieces)
            except StopIteration:
                self.input_done = True
                return
            except _Fallback as exc:
                self.input_done, self.switch = True, exc.args
                return
            self.pending.append((self.pool.submit(self.decode, data), offset, end))

    def _switch(self, offset: int, why: str) -> None:
        self.log.info("%s: %s decoded on one thread from compressed byte %s: %s", self.name,
                      self.codec, f"{offset:,}", why)
        self.close()
        raw = xzblocks.PRead(self.origin.fd, self.origin.start + offset, self.origin.end)
        self.fallback = decompress.open_reader(raw, self.codec, self.name)
        self.fallback.src.pos = offset   # error messages name offsets in the whole stream

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        if self.fallback is not None:
            data = self.fallback.read(n)
            self.compressed_pos = self.fallback.src.pos
            return data
        while self.cpos >= len(self.current):
            if self.chunks:
                self.current, self.cpos = self.chunks.popleft(), 0
                continue
            self._fill()
            if not self.pending:
                if self.switch is not None:
                    self._switch(*self.switch)
                    return self.read(n)
                self.close()
                return b""
            fut, offset, end = self.pending.popleft()
            try:
                self.chunks.extend(fut.result())
            except _Fallback as exc:
                self._switch(offset, str(exc))
                return self.read(n)
            self.compressed_pos = end
        if self.cpos == 0 and n >= len(self.current):
            data = self.current
        else:
            data = self.current[self.cpos:self.cpos + n]
        self.cpos += len(data)
        return data

    def readable(self):
        return True

    def close(self):
        for fut, _, _ in self.pending:
            fut.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


# -- xz: blocks with sizes (xz -T0, pixz, cas-unpack --compress) ---------------------

def _xz_plan(origin: Origin):
    """The blocks, from the streams' indexes, or why the stream stays on one thread."""
    try:
        blocks = xzindex.index_blocks(origin.fd, origin.start, origin.end)
    except ValueError as exc:
        return f"cannot read its index ({exc}); the one-thread reader checks the stream"
    if len(blocks) < 2:
        return "a single block (xz -T1 and older xz write one)"
    largest = max(b[2] for b in blocks)
    if largest > PIECE:
        return (f"blocks of up to {largest:,} bytes, larger than the {PIECE >> 20} MiB bound "
                "for decoding one whole (xz -7 and above)")
    return blocks


# -- zstd: independent frames (RFC 8878 section 3.1) -------------------------------

def _frame_end(fd: int, pos: int, end: int) -> tuple[int, int | None, int]:
    """(end of the frame at ``pos``, its content size or None, blocks); skippable: size 0.

    Raises _Fallback when the frame does not fit in ``[pos, end)`` or is too large
    to decode whole: the one-thread reader then reports or decodes it."""
    head = os.pread(fd, 18, pos)
    if len(head) < 8:
        raise _Fallback(pos, "input ends inside a frame header")
    word = struct.unpack_from("<I", head)[0]
    if magic.ZSTD_SKIPPABLE[0] <= word <= magic.ZSTD_SKIPPABLE[1]:
        return pos + 8 + struct.unpack_from("<I", head, 4)[0], 0, 0
    if word != magic.ZSTD_FRAME:
        raise _Fallback(pos, "not a zstd frame")
    fhd = head[4]
    fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 4, fhd & 3
    fcs_len = (1 if single else 0, 2, 4, 8)[fcs_flag]
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag]
    size = None
    if fcs_len:
        size = int.from_bytes(head[at:at + fcs_len], "little") + (256 if fcs_len == 2 else 0)
        if size > PIECE:
            raise _Fallback(pos, f"a frame of {size:,} bytes is larger than the "
                                 f"{PIECE >> 20} MiB bound for decoding it whole")
    p = pos + at + fcs_len
    blocks = 0
    win, win_at = b"", p           # block headers are read from a small window
    while True:
        if p + 3 > win_at + len(win):
            win_at, win = p, os.pread(fd, min(HEADERS, max(end - p, 0)), p)
        b = win[p - win_at:p - win_at + 3]
        if len(b) < 3:
            raise _Fallback(pos, "input ends inside the frame")
        value = b[0] | b[1] << 8 | b[2] << 16
        last, btype, bsize = value & 1, (value >> 1) & 3, value >> 3
        p += 3 + (1 if btype == 1 else bsize)
        blocks += 1
        if p - pos > PIECE:
            raise _Fallback(pos, f"a frame of more than {PIECE >> 20} MiB compressed")
        if last:
            break
    p += 4 if checksum else 0
    if p > end:
        raise _Fallback(pos, "input ends inside the frame")
    return p, size, blocks


def _zstd_plan(origin: Origin) -> str:
    pos, frames = origin.start, 0
    while pos < origin.end and frames < 2:
        try:
            pos, _size, blocks = _frame_end(origin.fd, pos, origin.end)
        except _Fallback as exc:
            return exc.args[1] if frames == 0 else ""
        frames += 1 if blocks else 0
    return "" if frames >= 2 else "a single frame (zstd -T0 writes one)"


def _zstd_pieces(origin: Origin):
    pos = origin.start
    while pos < origin.end:
        try:
            end, _size, blocks = _frame_end(origin.fd, pos, origin.end)
        except _Fallback as exc:
            raise _Fallback(exc.args[0] - origin.start, exc.args[1]) from None
        if blocks:
            data = os.pread(origin.fd, end - pos, pos)
            yield pos - origin.start, end - origin.start, data
        pos = end


def _zstd_decode(frame: bytes) -> list:
    import zstandard

    out, got = [], 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(frame, read_size=CHUNK)
        while True:
            part = reader.read(CHUNK)
            if not part:
                return out
            got += len(part)
            if got > PIECE:
                raise _Fallback(f"a frame decoding to more than {PIECE >> 20} MiB")
            out.append(_ZERO if part == _ZERO else part)
    except zstandard.ZstdError as exc:
        raise _Fallback(f"frame not decoded whole ({exc})") from None


# -- bzip2: concatenated streams (pbzip2) --------------------------------------------

def _bz_starts(origin: Origin, pos: int, limit: int) -> list:
    """Offsets of stream starts (``BZh`` + a block or end-of-stream magic) in ``[pos, limit)``."""
    data = os.pread(origin.fd, min(limit, origin.end) - pos + 9, pos)
    return [pos + m.start() for m in _BZ_START.finditer(data) if pos + m.start() < limit]


def _bz_plan(origin: Origin) -> str:
    if _bz_starts(origin, origin.start + 1, origin.start + SCAN):
        return ""
    return (f"no second stream in the first {SCAN >> 20} MiB (bzip2 and lbzip2 write one "
            "stream of many blocks; pbzip2 writes many streams)")


def _bz_bounds(origin: Origin):
    """Offsets of groups of up to BZ_GROUP streams (first start .. end), checked when decoded."""
    starts = collections.deque([origin.start])
    scanned = origin.start + 1
    while True:
        while len(starts) <= BZ_GROUP and scanned < origin.end:
            found = _bz_starts(origin, scanned, scanned + SCAN)
            scanned += SCAN
            starts.extend(found)
            if not found and scanned - starts[-1] > 2 * SCAN:
                raise _Fallback(starts[0] - origin.start,
                                f"a stream longer than {2 * SCAN >> 20} MiB")
        if len(starts) == 1 and scanned >= origin.end:
            bounds = [starts[0], origin.end]
            starts.clear()
        elif len(starts) <= BZ_GROUP and scanned >= origin.end:
            bounds = list(starts) + [origin.end]
            starts.clear()
        else:
            bounds = [starts.popleft() for _ in range(min(BZ_GROUP, len(starts) - 1))]
            bounds.append(starts[0])
        yield bounds
        if not starts:
            return


def _bz_pieces(origin: Origin):
    for bounds in _bz_bounds(origin):
        first, last = bounds[0], bounds[-1]
        data = os.pread(origin.fd, last - first, first)
        cuts = [b - first for b in bounds]
        yield first - origin.start, last - origin.start, (data, cuts)


def _bz_decode(piece) -> list:
    data, cuts = piece
    view = memoryview(data)
    out, got = [], 0
    for a, b in zip(cuts, cuts[1:]):
        got = _bz_stream(view[a:b], out, got)
    return out


def _bz_stream(data, out: list, got: int) -> int:
    """Decode one whole bzip2 stream onto ``out``; the bytes decoded so far."""
    try:
        for part in procworker.bz_stream_parts(data):
            out.append(_ZERO if part == _ZERO else part)
            got += len(part)
            if got > PIECE:
                raise _Fallback(f"streams decode to more than {PIECE >> 20} MiB")
    except procworker.Bad as exc:
        raise _Fallback(str(exc)) from None
    return got
