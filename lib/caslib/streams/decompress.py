"""Streaming decompression with bounded memory and honest end-of-stream checks.

Used by cas-unpack (peeling layers off a dump) and cas-extract (RPM and deb
payloads).  Every reader returns at most ``n`` bytes per ``read(n)`` however
well the data compresses (a dump's zero runs compress 30,000:1), accepts
concatenated streams (``cat a.gz b.gz``, multi-frame zstd, padded xz), and
raises ``StepError`` of kind ``truncated`` when the input ends inside a
stream, or ``corrupt`` when the data is not what the magic promised, naming
the compressed offset where it happened.

Magic numbers: doc/formats.md section 7; the zstd frame layout is
RFC 8878 section 3.1.
"""

import bz2
import lzma
import queue
import struct
import threading
import zlib

from caslib import magic
from caslib.records import StepError

CHUNK = 1 << 20
CODECS = ("gzip", "bzip2", "xz", "lzma", "zstd")


def sniff(head: bytes) -> str | None:
    """The compression format whose magic starts ``head``, else None (caslib.magic)."""
    return magic.compression(head)


class Slice:
    """``read(n)`` over the next ``size`` bytes of ``fh``: a package's payload or ar member.

    ``compressed_pos`` counts what was read, for progress and error offsets.
    """

    def __init__(self, fh, size: int):
        self.fh, self.left, self.compressed_pos = fh, size, 0

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = self.left
        data = self.fh.read(n)
        self.left -= len(data)
        self.compressed_pos += len(data)
        return data

    def readable(self):
        return True

    def close(self):
        pass


class _Counting:
    """Wraps the compressed source: counts bytes for progress and error messages."""

    def __init__(self, raw, tracker=None):
        self.raw = raw
        self.pos = 0
        self.tracker = tracker

    def read(self, n=-1):
        data = self.raw.read(n if n is not None and n >= 0 else CHUNK)
        self.pos += len(data)
        if self.tracker is not None and data:
            self.tracker.feed(data)
        return data

    def readable(self):
        return True


class _Reader:
    """Common read/readinto/close for the readers below."""

    codec = ""

    def __init__(self, raw, name: str):
        self.name = name
        self.src = _Counting(raw)

    @property
    def compressed_pos(self) -> int:
        return self.src.pos

    def _truncated(self):
        return StepError(f"{self.name}: truncated {self.codec} stream: input ended after "
                         f"{self.src.pos:,} compressed bytes, inside a stream", "truncated")

    def _corrupt(self, exc):
        at = getattr(self, "member_at", None)
        where = f" (in the stream that starts at byte {at:,})" if at else ""
        return StepError(f"{self.name}: corrupt {self.codec} data near compressed byte "
                         f"{self.src.pos:,}{where}: {exc}", "corrupt")

    def readable(self):
        return True

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self):
        pass


class _StdlibReader(_Reader):
    """gzip, bzip2, xz and lzma-alone through the stdlib's incremental decompressors."""

    def __init__(self, raw, codec: str, name: str):
        super().__init__(raw, name)
        self.codec = codec
        self.dec = self._new()
        self.pending = b""     # compressed input not yet handed to the decompressor
        self.input_done = False
        self.finished = False
        self.members = 0
        self.member_at = None  # compressed offset where the stream being decoded starts

    def _new(self):
        if self.codec == "gzip":
            return zlib.decompressobj(31)
        if self.codec == "bzip2":
            return bz2.BZ2Decompressor()
        if self.codec == "xz":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ)
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)

    def _fill(self):
        if self.member_at is None:
            self.member_at = self.src.pos   # set by a caller that starts mid-file
        if not self.pending and not self.input_done:
            self.pending = self.src.read(CHUNK)
            if not self.pending:
                self.input_done = True

    def _next_member(self) -> bool:
        """After one stream ends: start the next concatenated one, or finish."""
        rest = self.dec.unused_data
        self.members += 1
        if self.codec == "xz":
            rest = rest.lstrip(b"\x00")  # stream padding
        if not rest:
            rest = self.src.read(CHUNK)
            if self.codec == "xz":
                while rest and not rest.strip(b"\x00"):
                    rest = self.src.read(CHUNK)
                rest = rest.lstrip(b"\x00")
        if not rest or self.codec == "lzma":
            if rest and self.codec == "lzma":
                raise self._corrupt(f"{len(rest)} bytes of trailing data")
            self.finished = True
            return False
        if sniff(rest[:16]) != self.codec:
            raise self._corrupt("trailing data after the last stream")
        self.dec = self._new()
        self.pending = rest
        self.member_at = self.src.pos - len(rest)
        return True

    def read(self, n=-1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while not self.finished:
            try:
                if self.codec == "gzip":
                    data = self._read_zlib(n)
                else:
                    data = self._read_bz_lzma(n)
            except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
                raise self._corrupt(exc) from None
            if data:
                return data
            if self.dec.eof:
                self._next_member()
            elif self.input_done and not self.pending:
                raise self._truncated()
        return b""

    def _read_zlib(self, n: int) -> bytes:
        if self.dec.eof:
            return b""
        if not self.dec.unconsumed_tail:
            self._fill()
            chunk, self.pending = self.pending, b""
        else:
            chunk = self.dec.unconsumed_tail
        if not chunk:
            return b""
        return self.dec.decompress(chunk, n)

    def _read_bz_lzma(self, n: int) -> bytes:
        if self.dec.eof:
            return b""
        chunk = b""
        if self.dec.needs_input:
            self._fill()
            chunk, self.pending = self.pending, b""
            if not chunk:
                return b""
        return self.dec.decompress(chunk, n)


class _ZstdFrames:
    """Walks zstd frame and block headers as the bytes stream past (RFC 8878).

    zstandard's stream reader does not report a stream cut short, so this
    tracks where each frame ends: at end of input we must be between frames.
    """

    def __init__(self):
        self.buf = bytearray()
        self.skip = 0          # payload bytes to pass before the next header
        self.state = "magic"
        self.frames = 0
        self.checksum = False
        self.error = None

    def at_boundary(self) -> bool:
        return self.state == "magic" and self.skip == 0 and not self.buf and self.frames > 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) and self.error is None:
            if self.skip:
                step = min(self.skip, len(view))
                self.skip -= step
                view = view[step:]
                continue
            need = self._need()
            take = min(need - len(self.buf), len(view))
            self.buf += view[:take]
            view = view[take:]
            if len(self.buf) == need:
                self._header(bytes(self.buf))
                self.buf.clear()

    def _need(self) -> int:
        if self.state == "magic":
            return 4
        if self.state == "skippable":
            return 4
        if self.state == "fhd":
            return 1
        if self.state == "frame-rest":
            return self.rest_len
        return 3  # block header

    def _header(self, b: bytes) -> None:
        if self.state == "magic":
            word = struct.unpack("<I", b)[0]
            if word == magic.ZSTD_FRAME:
                self.state = "fhd"
            elif magic.ZSTD_SKIPPABLE[0] <= word <= magic.ZSTD_SKIPPABLE[1]:
                self.state = "skippable"
            else:
                self.error = "not a zstd frame"
        elif self.state == "skippable":
            self.skip = struct.unpack("<I", b)[0]
            self.frames += 1
            self.state = "magic"
        elif self.state == "fhd":
            fhd = b[0]
            fcs_flag, single, self.checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, bool(fhd & 4), fhd & 3
            fcs = (1 if single else 0, 2, 4, 8)[fcs_flag]
            self.rest_len = (0 if single else 1) + (0, 1, 2, 4)[did_flag] + fcs
            self.state = "frame-rest" if self.rest_len else "block"
        elif self.state == "frame-rest":
            self.state = "block"
        else:  # block header
            value = b[0] | b[1] << 8 | b[2] << 16
            last, btype, size = value & 1, (value >> 1) & 3, value >> 3
            if btype == 3:
                self.error = "reserved block type"
                return
            self.skip = 1 if btype == 1 else size
            if last:
                self.skip += 4 if self.checksum else 0
                self.frames += 1
                self.state = "magic"


class _ZstdReader(_Reader):
    codec = "zstd"

    def __init__(self, raw, name: str):
        import zstandard  # a runtime requirement; imported here to keep start-up light

        super().__init__(raw, name)
        self.frames = _ZstdFrames()
        self.src.tracker = self.frames
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            self.src, read_size=CHUNK, read_across_frames=True, closefd=False)
        self._error = zstandard.ZstdError
        self.finished = False

    def read(self, n=-1) -> bytes:
        if self.finished:
            return b""
        if n is None or n < 0:
            n = CHUNK
        try:
            data = self.reader.read(n)
        except self._error as exc:
            raise self._corrupt(exc) from None
        if self.frames.error:
            raise self._corrupt(self.frames.error)
        if not data:
            if not self.frames.at_boundary():
                raise self._truncated()
            self.finished = True
        return data


def open_reader(raw, codec: str, name: str):
    """A file-like ``read(n)`` over the decompressed bytes of ``raw`` (a binary stream)."""
    if codec == "zstd":
        return _ZstdReader(raw, name)
    if codec in ("gzip", "bzip2", "xz", "lzma"):
        return _StdlibReader(raw, codec, name)
    raise StepError(f"{name}: unsupported compression {codec!r}", "unsupported")


class Readahead:
    """``read(n)`` served by a thread that reads ``source`` ahead, at most ``depth`` chunks.

    Why: decompressors (zlib, bz2, lzma, zstd) release the GIL, and so do
    hashlib on large buffers and os.write, so while one thread decodes the
    next chunk the caller scans, hashes and writes the last one; on two cores
    that overlaps decoding and writing as ``rpm2cpio | cpio`` does with two
    processes.  Memory stays bounded by ``depth`` chunks.  Errors from
    ``source`` (StepError, OSError) are raised in the caller, in order.  Use
    as a context manager (or call ``close()``): leaving it stops and joins the
    thread, so the stream underneath is never read by two threads.
    Used by cas-unpack (peeling layers) and cas-extract (package payloads).
    """

    def __init__(self, source, chunk: int = CHUNK, depth: int = 4):
        self.source = source
        self.chunk = chunk
        self.queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.buf = b""
        self.pos = 0
        self.done = False
        self.thread = threading.Thread(target=self._pump, name="readahead", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self):
        try:
            while not self.stop.is_set():
                data = self.source.read(self.chunk)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.chunk
        if self.pos >= len(self.buf):
            if self.done:
                return b""
            item = self.queue.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            if not item:
                self.done = True
                return b""
            self.buf, self.pos = item, 0
        if self.pos == 0 and n >= len(self.buf):
            data = self.buf  # the usual case: a whole chunk, no copy
        else:
            data = self.buf[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def readable(self):
        return True

    def close(self, wait: float | None = None):
        """Stop the thread; wait for it (``wait`` seconds at most when giving up on an error:
        it may sit in a read on a fifo or socket, and dies with the process)."""
        self.stop.set()
        while True:  # unblock a thread waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join(wait)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(None if exc_type is None else 0.5)
