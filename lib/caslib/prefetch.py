"""Decompress in a second thread while the caller hashes and writes.

zlib, bz2, lzma and zstandard release the GIL while they decode, and so do
hashlib (on large buffers) and os.write, so a reader thread feeding a small
queue lets decoding and writing overlap on two cores, as ``rpm2cpio | cpio``
overlaps them in two processes.  Memory stays bounded: at most ``depth``
chunks wait in the queue.
"""

import queue
import threading

CHUNK = 1 << 20
_END = object()


class Prefetch:
    """``read(n)`` over ``source.read(chunk)`` done ahead in a daemon thread.

    An exception in the thread is re-raised by the ``read`` that reaches it.
    ``close()`` stops the thread (also when the caller gave up early).
    """

    def __init__(self, source, chunk: int = CHUNK, depth: int = 8):
        self.source = source
        self.chunk = chunk
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.current = b""
        self.pos = 0
        self.done = False
        self.thread = threading.Thread(target=self._run, name="cas-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        try:
            while not self.stop.is_set():
                data = self.source.read(self.chunk)
                if not data:
                    self._put(_END)
                    return
                if not self._put(data):
                    return
        except BaseException as exc:  # handed to the reading thread
            self._put(exc)

    def read(self, n: int = CHUNK) -> bytes:
        if self.pos >= len(self.current):
            if self.done:
                return b""
            item = self.queue.get()
            if item is _END:
                self.done = True
                return b""
            if isinstance(item, BaseException):
                self.done = True
                raise item
            self.current, self.pos = item, 0
        if self.pos == 0 and n >= len(self.current):
            data = self.current
        else:
            data = self.current[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def close(self):
        self.stop.set()
        while True:  # unblock a thread waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
