"""Streams the archive peeler reads through: a look at the first bytes before reading
them (magic bytes decide what a layer is), and a parallel reader that keeps the progress
counter of the whole input current."""

from caslib.streams import parallel

READ_CHUNK = 1 << 20


class Peekable:
    """``read(n)`` over a stream whose first bytes can be looked at without consuming them."""

    def __init__(self, raw, origin: parallel.Origin | None = None):
        self.raw = raw
        self.buf = b""
        self.origin = origin   # where these bytes are in a seekable file, if they are

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.raw.read(max(n - len(self.buf), 64 * 1024))
            if not data:
                break
            self.buf += data
        return self.buf[:n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_CHUNK
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.raw.read(n)

    def readable(self):
        return True


class Tracking:
    """A parallel reader of the whole input that keeps the input counter (progress) current."""

    def __init__(self, reader, counter):
        self.reader, self.counter = reader, counter

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        self.counter.pos = max(self.counter.pos, self.reader.compressed_pos)
        return data

    def readable(self):
        return True
