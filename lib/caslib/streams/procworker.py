"""One piece decoded inside a decoder process (``caslib.streams.procdecode``) and written sparsely.

Why a module of its own: this is all a worker process runs, so it imports
only the codecs.  A task names the piece's compressed bytes ``[at, at+len)``
of the input descriptor and, when known, its uncompressed offset ``out``;
without one, the worker decodes the piece into memory (at most
``parallel.PIECE`` bytes), reports its size and goes on with its next task;
the offset arrives later as a message of its own, and the held piece is
written then.  So a worker whose piece decoded faster than its neighbour's
never waits for it (the parent bounds how much a worker holds).
Zero 4 KiB pages are skipped (``sparse.SparseWriter``), so they stay holes.
"""

import bz2
import json
import lzma
import os
import signal
import sys

from caslib.streams import sparse
from caslib.streams.xzblocks import one_block_stream

CHUNK = 1 << 20
FEED = 1 << 20
PIECE = 32 << 20         # as parallel.PIECE: a piece held whole while its offset is unknown
_ZERO = sparse.zeros(CHUNK)


class Bad(Exception):
    """The piece is not what the parent expected: it reports or falls back."""


class _Sink:
    """Where decoded bytes go: straight into the core at ``out``, or held until it is known."""

    def __init__(self, out_fd: int, out):
        self.fd = out_fd
        self.writer = None
        self.held, self.got = [], 0
        if out is not None:
            self._start(out)

    def _start(self, out: int) -> None:
        self.writer = sparse.SparseWriter(self.fd)
        self.writer.size = out

    def put(self, data: bytes) -> None:
        self.got += len(data)
        if self.writer is not None:
            self.writer.write(data)
            return
        if self.got > PIECE:
            raise Bad(f"a piece decoding to more than {PIECE >> 20} MiB")
        self.held.append(_ZERO if data == _ZERO else data)

    def place(self, out: int) -> int:
        """Write the held piece at ``out`` (its offset, now known): the bytes written."""
        self._start(out)
        for data in self.held:
            self.writer.write(data)
        self.held = []
        return self.writer.written


def _pread_all(fd: int, n: int, at: int) -> bytes:
    data = os.pread(fd, n, at)
    if len(data) < n:
        raise Bad("input ends inside the piece")
    return data


def _xz(task, in_fd, sink) -> None:
    """One block wrapped as a one-block stream, so liblzma checks sizes and the check."""
    at, unpadded, unc = task["at"], task["len"], task["size"]
    first = _pread_all(in_fd, 1, at)
    header = (first[0] + 1) * 4
    comp = unpadded - header - task["check"]
    if comp <= 0:
        raise Bad("block shorter than its header")
    wrapped = one_block_stream(bytes.fromhex(task["flags"]), b"", header, comp, task["check"], unc)
    head, tail = wrapped[:12], wrapped[12:]
    stored = unpadded + (-unpadded % 4)
    dec = lzma.LZMADecompressor(lzma.FORMAT_XZ)

    def feed():
        yield head
        pos = 0
        while pos < stored:
            piece = _pread_all(in_fd, min(FEED, stored - pos), at + pos)
            pos += len(piece)
            yield piece
        yield tail

    source = feed()
    try:
        while not dec.eof:
            if dec.needs_input:
                data = next(source, None)
                if data is None:
                    raise Bad("block ends early")
                part = dec.decompress(data, CHUNK)
            else:
                part = dec.decompress(b"", CHUNK)
            if part:
                sink.put(part)
                if sink.got > unc:
                    raise Bad(f"block gives more than the {unc:,} bytes its index says")
    except lzma.LZMAError as exc:
        raise Bad(str(exc)) from None
    if sink.got != unc:
        raise Bad(f"block gave {sink.got:,} bytes, its index says {unc:,}")


_DCTX = []


def _zstd(task, in_fd, sink) -> None:
    import zstandard

    if not _DCTX:   # one context for every frame: its window buffer is allocated once
        _DCTX.append(zstandard.ZstdDecompressor())
    frame = _pread_all(in_fd, task["len"], task["at"])
    try:
        reader = _DCTX[0].stream_reader(frame, read_size=CHUNK)
        while True:
            part = reader.read(CHUNK)
            if not part:
                break
            sink.put(part)
    except zstandard.ZstdError as exc:
        raise Bad(f"frame not decoded whole ({exc})") from None
    if task["size"] is not None and sink.got != task["size"]:
        raise Bad(f"frame gave {sink.got:,} bytes, its header says {task['size']:,}")


def bz_stream_parts(data):
    """The decoded bytes of ``data``, one whole bzip2 stream, CHUNK at a time; Bad if it is not.

    Shared with the thread decoder (``parallel``), so both judge a stream alike."""
    dec = bz2.BZ2Decompressor()
    try:
        part = dec.decompress(data, CHUNK)
        while True:
            if part:
                yield part
            if dec.eof or dec.needs_input:
                break
            part = dec.decompress(b"", CHUNK)
    except OSError as exc:
        raise Bad(f"stream not decoded whole ({exc})") from None
    if not dec.eof or dec.unused_data:
        raise Bad("stream boundary not where the scan found it")


def _bzip2(task, in_fd, sink) -> None:
    cuts, at = task["cuts"], task["at"]
    for a, b in zip(cuts, cuts[1:]):
        for part in bz_stream_parts(_pread_all(in_fd, b - a, at + a)):
            sink.put(part)


CODECS = {"xz": _xz, "zstd": _zstd, "bzip2": _bzip2}


def decode(task: dict, in_fd: int, out_fd: int, held: dict, say) -> None:
    """Decode one task; answer ``done``, or ``size`` and hold it until its offset comes."""
    sink = _Sink(out_fd, task.get("out"))
    CODECS[task["codec"]](task, in_fd, sink)
    if sink.writer is None:
        held[task["id"]] = sink
        say({"id": task["id"], "size": sink.got})
    else:
        say({"id": task["id"], "done": sink.writer.written})


def place(msg: dict, held: dict, say) -> None:
    """The offset of a held piece: write it and answer ``done``."""
    sink = held.pop(msg["id"], None)
    if sink is not None:      # None: a piece that failed, whose offset came anyway
        say({"id": msg["id"], "done": sink.place(msg["out"])})


def main(argv) -> None:
    """A decoder process: tasks and offsets as JSON lines on stdin, answers on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops us, by pid
    in_fd, out_fd = int(argv[0]), int(argv[1])
    rd, wr = sys.stdin.buffer, sys.stdout.buffer

    def say(msg):
        wr.write(json.dumps(msg).encode() + b"\n")
        wr.flush()

    held = {}                   # id -> _Sink of a decoded piece waiting for its offset
    try:
        for line in rd:
            msg = json.loads(line)
            try:
                if "codec" in msg:
                    decode(msg, in_fd, out_fd, held, say)
                else:
                    place(msg, held, say)
            except OSError as exc:
                say({"id": msg["id"], "error": exc.strerror or str(exc), "errno": exc.errno})
            except Bad as exc:
                say({"id": msg["id"], "error": str(exc)})
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    except BaseException as exc:  # never a traceback: the parent reports it
        try:
            say({"error": f"decoder process failed: {exc!r}"})
        except OSError:
            pass
    os._exit(0)
