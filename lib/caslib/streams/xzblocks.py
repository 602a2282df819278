"""Decode a multi-block xz stream on several cores, in order, in bounded memory.

xz decoding is the slow part of extracting from an xz RPM (about 55 MB/s on
one core).  xz's multi-threaded encoder (``xz -T``, rpm's ``w2T0.xzdio``)
cuts the data into independent blocks and records each block's compressed
and uncompressed size in its header, which is what lets a decoder hand
blocks to several threads.  Each block is wrapped into a minimal one-block
xz stream (stream header, the block as it is, a one-record index, footer)
and decoded with the stdlib's ``lzma`` in a worker thread (liblzma releases
the GIL), so liblzma itself checks the block's integrity check (CRC32,
CRC64 or SHA-256) and sizes.

Layout: "The .xz File Format" 1.1.0 (tukaani.org/xz/xz-file-format.txt),
sections 2.1 (stream header/footer), 3.1 (block header), 4 (index), 1.2
(multibyte integers).

A stream this reader cannot split (a block without sizes, as single-threaded
``xz`` writes, or blocks too large for the memory bound) is decoded by the
ordinary sequential reader instead, from the start.  When the stream's end
is known, ``xzindex.index_blocks`` reads every block's position and sizes
from the indexes instead (walking the streams from the last footer back, as
``xz --list`` does), which also splits blocks without sizes in their
headers: each stream ``cas-unpack --compress`` writes is one such block.  Concatenated streams
(``cat a.xz b.xz``, ``cas-unpack --compress`` writes one stream per block)
are followed from one to the next, each with its own flags and check.
"""

import concurrent.futures
import lzma
import os
import struct
import zlib

from caslib import magic
from caslib.streams import decompress, sparse
from caslib.records import StepError

MAGIC = magic.XZ
MAX_BLOCK = 16 << 20          # uncompressed bytes of one block we decode whole
BUDGET = 24 << 20             # uncompressed bytes in flight at once
CHUNK = 1 << 20
FEED = 256 << 10
_ZERO = sparse.zeros(CHUNK)    # the object SparseWriter compares with: equal and identical
_CHECK_SIZES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]


class PRead:
    """``read(n)`` over bytes ``[start, end)`` of a file descriptor, by pread."""

    def __init__(self, fd: int, start: int, end: int):
        self.fd, self.pos, self.end, self.start = fd, start, end, start

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        n = min(n, self.end - self.pos)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.pos)
        self.pos += len(data)
        return data


def _varint(buf: bytes, pos: int) -> tuple:
    value = shift = 0
    for i in range(9):
        if pos + i >= len(buf):
            raise ValueError("multibyte integer runs past the header")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("multibyte integer longer than 9 bytes")


def varint(value: int) -> bytes:
    """An xz variable-length integer (7 bits a byte, low first)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def stream_header(flags: bytes) -> bytes:
    return MAGIC + flags + struct.pack("<I", zlib.crc32(flags))


def stream_tail(flags: bytes, records) -> bytes:
    """The index of blocks ``records`` ((unpadded size, uncompressed size), ...) and the footer."""
    index = bytearray(b"\x00" + varint(len(records)))
    for unpadded, unc in records:
        index += varint(unpadded) + varint(unc)
    index += b"\x00" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1)
    return bytes(index) + struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"


def one_block_stream(flags: bytes, block: bytes, header_size: int, comp: int, check: int,
                     unc: int) -> bytes:
    """One block wrapped as a complete xz stream, so liblzma checks everything."""
    return stream_header(flags) + block + stream_tail(flags, [(header_size + comp + check, unc)])


def _decode(mini: bytes, unc: int) -> list:
    """The block's data as a list of chunks of at most CHUNK bytes.

    Asking for bounded pieces keeps the peak at one copy of the block (a
    single ``decompress()`` call builds the output in pieces and then joins
    them, two copies); zero pieces (most of a dump) share one object.
    """
    dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    view, pos, out, got = memoryview(mini), 0, [], 0
    try:
        while not dec.eof and got <= unc:
            if dec.needs_input:
                if pos >= len(view):
                    break
                piece = dec.decompress(view[pos:pos + FEED], CHUNK)  # bounded input copy
                pos += FEED
            else:
                piece = dec.decompress(b"", CHUNK)
            if piece:
                got += len(piece)
                out.append(_ZERO if piece == _ZERO else piece)
    except lzma.LZMAError as exc:
        raise ValueError(str(exc)) from None
    if not dec.eof:
        raise ValueError("block ends early")
    if got != unc:
        raise ValueError(f"block gave {got} bytes, its header says {unc}")
    return out


class _Unsplittable(Exception):
    pass


class ParallelXz:
    """``read(n)`` over the decompressed payload; blocks decoded ``workers`` at a time."""

    threaded = True

    def __init__(self, fd: int, start: int, end: int, name: str, workers: int | None = None,
                 max_block: int = MAX_BLOCK, budget: int = BUDGET, log=None, blocks=None):
        self.fd, self.start, self.end, self.name = fd, start, end, name
        self.max_block, self.budget, self.log = max_block, budget, log
        self.blocks = self.streams = 0
        self.raw = PRead(fd, start, end)
        self.workers = workers or max(2, min(4, os.cpu_count() or 2))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, "cas-xz")
        self.pending = []          # futures of blocks, in order
        self.inflight = 0          # uncompressed bytes submitted, not yet consumed
        self.chunks = []           # decoded chunks of the current block, next first
        self.current, self.cpos = b"", 0
        self.produced = 0          # bytes handed out so far
        self.eof = False           # index reached: no more blocks to submit
        self.fallback = None
        self.switch_when_drained = False  # an unsplittable block follows the pending ones
        self.why = ""
        self.index = list(reversed(blocks)) if blocks is not None else None  # xzindex
        head = self.raw.read(12)
        if len(head) < 12:
            raise StepError(f"{name}: truncated xz stream: no stream header", "truncated")
        if head[:6] != MAGIC or struct.pack("<I", zlib.crc32(head[6:8])) != head[8:12]:
            raise StepError(f"{name}: corrupt xz stream header", "corrupt")
        self._stream_header(head)

    def _stream_header(self, head: bytes) -> None:
        self.flags = head[6:8]
        self.check = _CHECK_SIZES[head[7] & 0x0F]
        self.streams += 1

    @property
    def compressed_pos(self) -> int:
        src = self.fallback.src.pos if self.fallback is not None else self.raw.pos - self.start
        return src

    def _indexed_block(self):
        """The next block by ``index_blocks``: its bytes with sizes from the index."""
        if not self.index:
            return None
        at, unpadded, unc, flags, check = self.index.pop()
        data = os.pread(self.fd, unpadded + (-unpadded % 4), at)
        self.raw.pos = at + len(data)
        size = (data[0] + 1) * 4 if data else 0
        if len(data) < unpadded or size + check >= unpadded:
            raise StepError(f"{self.name}: corrupt xz block at compressed byte "
                            f"{at - self.start:,}: shorter than its index says", "corrupt")
        if struct.pack("<I", zlib.crc32(data[:size - 4])) != data[size - 4:size]:
            raise StepError(f"{self.name}: corrupt xz block header at compressed byte "
                            f"{at - self.start:,}", "corrupt")
        self.flags, self.check = flags, check
        return data, size, unpadded - size - check, unc, at

    def _next_block(self):
        """Read the next block's bytes; None at the index.  Raises _Unsplittable."""
        if self.index is not None:
            return self._indexed_block()
        at = self.raw.pos
        first = self.raw.read(1)
        if not first:
            raise StepError(f"{self.name}: truncated xz stream: input ended after "
                            f"{at - self.start:,} compressed bytes, inside a stream", "truncated")
        if first == b"\x00":
            if self._after_index():
                return self._next_block()  # the first block of the next stream
            return None
        size = (first[0] + 1) * 4
        header = first + self.raw.read(size - 1)
        if len(header) < size:
            raise self._truncated()
        if struct.pack("<I", zlib.crc32(header[:-4])) != header[-4:]:
            raise StepError(f"{self.name}: corrupt xz block header at compressed byte "
                            f"{at - self.start:,}", "corrupt")
        bflags = header[1]
        if not (bflags & 0x40 and bflags & 0x80):
            raise _Unsplittable("a block without sizes in its header (single-threaded xz)")
        try:
            comp, pos = _varint(header, 2)
            unc, pos = _varint(header, pos)
        except ValueError as exc:
            raise StepError(f"{self.name}: corrupt xz block header: {exc}", "corrupt") from None
        if unc > self.max_block:
            raise _Unsplittable(f"a block of {unc:,} bytes is larger than the "
                                f"{self.max_block >> 20} MiB bound for decoding it whole")
        rest = comp + (-comp % 4) + self.check
        body = self.raw.read(rest)
        if len(body) < rest:
            raise self._truncated()
        return header + body, size, comp, unc, at

    def _raw_varint(self) -> int:
        value = shift = 0
        for _ in range(9):
            b = self.raw.read(1)
            if not b:
                raise self._truncated()
            value |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                return value
        raise StepError(f"{self.name}: corrupt xz index", "corrupt")

    def _after_index(self) -> bool:
        """Skip the index, footer and stream padding; True when another stream follows
        (its header is read), False at the end; anything else is trailing garbage."""
        start = self.raw.pos - 1
        for _ in range(2 * self._raw_varint()):
            self._raw_varint()
        self.raw.read(-(self.raw.pos - start) % 4 + 4)   # index padding and CRC32
        if len(self.raw.read(12)) < 12:                   # stream footer
            raise self._truncated()
        while self.raw.pos < self.end:                    # stream padding: zeros
            at = self.raw.pos
            chunk = self.raw.read(1 << 16)
            rest = chunk.lstrip(b"\0")
            if rest:
                self.raw.pos = at + len(chunk) - len(rest)
                break
        if self.raw.pos >= self.end:
            return False
        at = self.raw.pos
        head = self.raw.read(12)
        if head[:6] != MAGIC or len(head) < 12:
            raise StepError(f"{self.name}: corrupt xz data near compressed byte "
                            f"{at - self.start:,}: trailing data after the last stream", "corrupt")
        if struct.pack("<I", zlib.crc32(head[6:8])) != head[8:12]:
            raise StepError(f"{self.name}: corrupt xz stream header at compressed byte "
                            f"{at - self.start:,}", "corrupt")
        self._stream_header(head)
        return True

    def _truncated(self):
        return StepError(f"{self.name}: truncated xz stream: input ended after "
                         f"{self.raw.pos - self.start:,} compressed bytes, inside a block",
                         "truncated")

    def _fill(self):
        while not self.eof and (not self.pending or
                                (len(self.pending) < self.workers and self.inflight < self.budget)):
            block = self._next_block()
            if block is None:
                self.eof = True
                return
            data, size, comp, unc, at = block
            mini = one_block_stream(self.flags, data, size, comp, self.check, unc)
            self.pending.append((self.pool.submit(_decode, mini, unc), at))
            self.inflight += unc
            self.blocks += 1

    def _switch_to_sequential(self, why: str):
        """Restart with the one-thread decoder and skip what was already handed out."""
        if self.log is not None:
            self.log.info("%s: xz decoded on one thread from here (%s bytes already out): %s",
                          self.name, f"{self.produced:,}", why)
        for fut, _ in self.pending:
            fut.cancel()
        self.pending = []
        self.fallback = decompress.open_reader(PRead(self.fd, self.start, self.end), "xz",
                                               self.name)
        skip = self.produced
        while skip:
            got = self.fallback.read(min(skip, 1 << 20))
            if not got:
                raise StepError(f"{self.name}: xz stream shorter on the second read", "changed")
            skip -= len(got)

    def read(self, n: int = 1 << 20) -> bytes:
        if self.fallback is not None:
            data = self.fallback.read(n)
            self.produced += len(data)
            return data
        if self.cpos >= len(self.current) and self.chunks:
            self.current, self.cpos = self.chunks.pop(0), 0
            self.inflight -= len(self.current)
        if self.cpos >= len(self.current):
            try:
                self._fill()
            except _Unsplittable as exc:
                self.why = str(exc)
                if not self.pending:
                    self._switch_to_sequential(self.why)
                    return self.read(n)
                self.eof = True   # hand out what is decoded, then switch
                self.switch_when_drained = True
            if not self.pending:
                if self.switch_when_drained and self.eof:
                    self._switch_to_sequential(self.why)
                    return self.read(n)
                return b""
            fut, at = self.pending.pop(0)
            try:
                self.chunks = fut.result()
            except ValueError as exc:
                raise StepError(f"{self.name}: corrupt xz data in the block at compressed byte "
                                f"{at - self.start:,}: {exc}", "corrupt") from None
            self.current, self.cpos = self.chunks.pop(0), 0
            self.inflight -= len(self.current)
        if self.cpos == 0 and n >= len(self.current):
            data = self.current
        else:
            data = self.current[self.cpos:self.cpos + n]
        self.cpos += len(data)
        self.produced += len(data)
        return data

    def close(self):
        for fut, _ in self.pending:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
