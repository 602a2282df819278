"""Write a core from independent compressed pieces decoded by worker processes.

Why: decoder threads (``caslib.streams.parallel``) share one interpreter; liblzma
releases the GIL while it decodes, but the per-chunk Python work (zero-page
checks, writes, queue hand-offs) does not, and on two cores the threads got
about 1.3 of them.  Here each worker is a process of its own: it ``pread``\\ s
its piece (an xz block, a zstd frame, a group of bzip2 streams) from the
input, decodes it, and ``pwrite``\\ s the non-zero 4 KiB pages straight into
the partial core at the piece's uncompressed offset, so the output is
sparse and nothing is shipped back.  Offsets come from the xz index or a
zstd frame's content size; when a piece's size is unknown until decoded
(bzip2, zstd frames without a size) the worker holds the piece (at most
``parallel.PIECE`` bytes) until its offset comes, which the parent hands
out in order as the sizes of the pieces before it are known.  Meanwhile
the worker decodes its next piece: a worker whose piece decoded quickly does
not sit idle while its neighbour finishes a slower one.

Memory per worker: one piece's compressed bytes, the piece it decodes (at
most ``parallel.PIECE`` bytes) and the decoded pieces waiting for their
offsets; it gets a new task only while those hold less than ``HOLD`` bytes.
The workers ask the kernel to kill them when this process dies
(``lifeline``), are killed by pid on any error or signal, and every wait
for them has a deadline.  A piece a worker cannot decode is reported by the
ordinary one-thread reader from that piece's first byte (so the words are
the same as without workers), or, for xz, as a corrupt block.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import time

from caslib import lifeline
from caslib.streams import decompress, parallel, sparse, xzblocks, xzindex
from caslib.streams.headfirst import Deferred
from caslib.records import StepError

CHUNK = 1 << 20
HOLD = 32 << 20      # decoded bytes a worker may hold (waiting for offsets) and still get a task
STALL = 300.0        # seconds a worker may take over one piece before we give up on it
_STOPS = {signal.SIGINT, signal.SIGTERM}
# glibc gives each 1 MiB decoded chunk fresh mmap'd pages (and page faults) unless told to
# keep such blocks on the heap for reuse; the workers' memory stays bounded by what they hold
_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(32 << 20), MALLOC_TRIM_THRESHOLD_=str(64 << 20))


# -- the pieces ---------------------------------------------------------------------

def _xz_tasks(origin):
    for at, unpadded, unc, flags, check in xzindex.index_blocks(origin.fd, origin.start,
                                                               origin.end):
        yield {"codec": "xz", "at": at, "len": unpadded, "size": unc, "flags": flags.hex(),
               "check": check}


def _zstd_tasks(origin):
    pos = origin.start
    while pos < origin.end:
        try:
            end, size, blocks = parallel._frame_end(origin.fd, pos, origin.end)
        except parallel._Fallback as exc:
            raise parallel._Fallback(exc.args[0] - origin.start, exc.args[1]) from None
        if blocks:
            yield {"codec": "zstd", "at": pos, "len": end - pos, "size": size}
        pos = end


def _bz_tasks(origin):
    for bounds in parallel._bz_bounds(origin):
        yield {"codec": "bzip2", "at": bounds[0], "len": bounds[-1] - bounds[0], "size": None,
               "cuts": [b - bounds[0] for b in bounds]}


TASKS = {"xz": _xz_tasks, "zstd": _zstd_tasks, "bzip2": _bz_tasks}


# -- the parent -------------------------------------------------------------------------

class _Worker:
    def __init__(self, in_fd: int, out_fd: int):
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from caslib.streams import procworker; procworker.main(sys.argv[2:])")
        lib = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        dies_with_us = lifeline.preexec(signal.SIGKILL)

        def child():
            dies_with_us()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)

        # SIGINT/SIGTERM wait until the fork is done: raised inside Python's at-fork hooks
        # they would be printed and ignored, and the run would go on
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        self.proc = None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-c", code, lib, str(in_fd), str(out_fd)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(in_fd, out_fd),
                preexec_fn=child, bufsize=0, env=_ENV)
        finally:
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)  # a pending signal raises here
            except BaseException:
                if self.proc is not None:
                    self.stop(kill=True)
                raise
        self.buf = b""
        self.decoding = False   # a task sent whose size or end has not come back
        self.pending = []       # its pieces not yet written (held, or being decoded)
        self.since = time.monotonic()

    def free(self) -> bool:
        return not self.decoding and sum(p.size or 0 for p in self.pending) < HOLD

    def busy(self) -> bool:
        """Working, as opposed to holding pieces that wait for others' sizes."""
        return self.decoding or any(p.sent_out for p in self.pending)

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    def stop(self, kill: bool) -> None:
        proc = self.proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        if kill and proc.poll() is None:
            proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


class _Piece:
    def __init__(self, number: int, task: dict):
        self.id = number
        self.task, self.at, self.size = task, task["at"], task["size"]
        self.out = None        # uncompressed offset, once known
        self.worker = None
        self.sent_out = False
        self.done = False
        self.error = None


def workers() -> int:
    return parallel.workers()


def write_core(out, reader: Deferred, size_hint=None, progress=None) -> tuple[str, int]:
    """Decode ``reader``'s whole layer into a new partial file of ``out``: (path, size)."""
    n = workers()
    reader.head = None       # the one-thread decoder of the first bytes: its work is done
    reader.log.info("%s: %s decoded by %d worker processes, each writing its pieces at their "
                    "offsets", reader.name, reader.codec, n)
    out.warn_space(size_hint)
    path, fd = out.new_part()
    job = _Job(out, reader, fd, n, progress)
    try:
        size = job.run()
        os.ftruncate(fd, size)
    except OSError as exc:
        out.discard(path)
        raise out.disk_error(exc, job.cursor) from None
    except BaseException:
        out.discard(path)
        raise
    finally:
        job.stop()
        os.close(fd)
    return path, size


class _Job:
    def __init__(self, out, reader: Deferred, fd: int, n: int, progress):
        self.out, self.reader, self.fd, self.n, self.progress = out, reader, fd, n, progress
        self.origin, self.codec, self.name = reader.origin, reader.codec, reader.name
        self.tasks = TASKS[self.codec](self.origin)
        self.pieces = []        # in input order, not yet complete
        self.cursor = 0         # output offset after the last piece with a known offset
        self.switch = None      # (compressed offset, output offset): one thread from there
        self.sel = selectors.DefaultSelector()
        self.workers = []
        self.by_id = {}         # pieces not yet written, by the number their messages carry
        self.numbered = 0
        self.input_done = False

    def run(self) -> int:
        for _ in range(self.n):
            w = _Worker(self.origin.fd, self.fd)
            self.workers.append(w)
            self.sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        while True:
            self._submit()
            if not self.pieces:
                break
            self._wait()
            self._retire()
        if self.switch is not None:
            os.ftruncate(self.fd, self.cursor)
            return self._sequential(self.switch, self.cursor)
        if self.max_size and self.cursor > self.max_size:
            raise self._too_large()
        return self.cursor

    @property
    def max_size(self):
        return getattr(self.out, "max_size", None)

    def _too_large(self):
        return StepError(f"{self.out.workdir}: the core grows past maxCoreSize "
                         f"({self.max_size:,} bytes); stopped and removed the partial file",
                         "too-large")

    def _free(self):
        return next((w for w in self.workers if w.free()), None)

    def _submit(self) -> None:
        while not self.input_done and self.switch is None and (w := self._free()) is not None:
            try:
                task = next(self.tasks)
            except StopIteration:
                self.input_done = True
                return
            except parallel._Fallback as exc:
                self.input_done = True
                self._fall_back(exc.args[0], exc.args[1])
                return
            except ValueError as exc:   # the xz index changed under us or is damaged
                raise StepError(f"{self.name}: corrupt xz index: {exc}", "corrupt") from None
            self.numbered += 1
            piece = _Piece(self.numbered, task)
            self.by_id[piece.id] = piece
            piece.worker = w
            w.pending.append(piece)
            if not w.busy():
                w.since = time.monotonic()
            w.decoding = True
            self.pieces.append(piece)
            piece.sent_out = True       # the task carries the offset, if _assign finds one
            self._assign()
            piece.sent_out = piece.out is not None
            w.send(dict(task, id=piece.id, out=piece.out))

    def _assign(self) -> None:
        """Give offsets, in order, to pieces whose size and predecessors' sizes are known."""
        for piece in self.pieces:
            if piece.out is not None:
                continue
            if piece.size is None or piece.error:
                return
            piece.out = self.cursor
            self.cursor += piece.size
            if self.max_size and self.cursor > self.max_size:
                raise self._too_large()
            if piece.worker is not None and not piece.sent_out and not piece.done:
                if not piece.worker.busy():
                    piece.worker.since = time.monotonic()
                piece.sent_out = True
                piece.worker.send({"id": piece.id, "out": piece.out})

    def _wait(self) -> None:
        events = self.sel.select(timeout=5.0)
        now = time.monotonic()
        for key, _ in events:
            w = key.data
            chunk = os.read(w.proc.stdout.fileno(), 65536)
            if not chunk:
                raise StepError(f"{self.name}: a decoder process ended unexpectedly "
                                f"(exit status {w.proc.wait(5)})", "os-error")
            w.buf += chunk
            while b"\n" in w.buf:
                line, w.buf = w.buf.split(b"\n", 1)
                self._message(w, json.loads(line))
            w.since = now
        for w in self.workers:
            if w.busy() and now - w.since > STALL:
                at = w.pending[-1 if w.decoding else 0].at - self.origin.start
                raise StepError(f"{self.name}: a decoder process took more than {STALL:.0f} s "
                                f"over the piece at compressed byte {at:,}", "timeout")

    def _message(self, w: _Worker, msg: dict) -> None:
        piece = self.by_id.get(msg.get("id"))
        if piece is None:      # the worker failed outside any piece
            why = msg.get("error", "a decoder process answered out of turn")
            raise StepError(f"{self.name}: {why}", "os-error")
        if w.pending and piece is w.pending[-1]:
            w.decoding = False      # a size, an end or an error: that decoding is over
        if "size" in msg:
            piece.size = msg["size"]
            self._assign()
        elif "done" in msg:
            piece.done = True
            w.pending.remove(piece)
            del self.by_id[piece.id]
            if self.progress:
                self.progress(piece.at + piece.task["len"] - self.origin.start)
        elif "error" in msg:
            if msg.get("errno"):
                raise OSError(msg["errno"], msg["error"])
            piece.error = msg["error"]
            piece.worker = None
            w.pending.remove(piece)

    def _retire(self) -> None:
        while self.pieces and self.pieces[0].done:
            self.pieces.pop(0)
        if self.pieces and self.pieces[0].error:
            bad = self.pieces[0]
            if self.codec == "xz":
                raise StepError(f"{self.name}: corrupt xz data in the block at compressed byte "
                                f"{bad.at - self.origin.start:,}: {bad.error}", "corrupt")
            self._fall_back(bad.at - self.origin.start, bad.error)

    def _fall_back(self, offset: int, why: str) -> None:
        """From the piece at ``offset`` on, the one-thread reader decodes (or reports).

        The pieces before it finish; those after it are stopped (their workers killed),
        and the core is cut where the first of them starts, so none of their bytes
        stays behind.  A killed worker holds no earlier piece: ``offset`` is either
        the first piece not yet written (``_retire``) or past every piece handed out
        (``_submit``)."""
        self.input_done = True
        keep = [p for p in self.pieces if p.at - self.origin.start < offset]
        for p in self.pieces[len(keep):]:
            if p.out is not None:
                self.cursor = min(self.cursor, p.out)
            if p.worker is not None and not p.done:
                self._restart(p.worker)
        self.pieces = keep
        self.switch = offset
        self.reader.log.info("%s: %s decoded on one thread from compressed byte %s: %s",
                             self.name, self.codec, f"{offset:,}", why)

    def _restart(self, w: _Worker) -> None:
        """A worker busy on a piece we no longer want: kill it (by pid), start no other."""
        if w not in self.workers:
            return
        self.sel.unregister(w.proc.stdout)
        w.stop(kill=True)
        for p in w.pending:
            p.worker = None
        w.pending = []
        self.workers.remove(w)

    def _sequential(self, offset: int, out_at: int) -> int:
        raw = xzblocks.PRead(self.origin.fd, self.origin.start + offset, self.origin.end)
        dec = decompress.open_reader(raw, self.codec, self.name)
        dec.src.pos = offset     # error messages name offsets in the whole stream
        writer = sparse.SparseWriter(self.fd)
        writer.size = out_at
        while True:
            data = dec.read(CHUNK)
            if not data:
                return writer.size
            writer.write(data)
            if self.max_size and writer.size > self.max_size:
                raise self._too_large()
            if self.progress:
                self.progress(dec.src.pos)

    def stop(self) -> None:
        for w in self.workers:
            w.stop(kill=w.proc.poll() is None and (bool(w.pending) or bool(self.pieces)))
        self.sel.close()
