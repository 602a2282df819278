"""Serve the first bytes of a multi-piece layer from the one-thread decoder.

Why: peeling must see a layer's first bytes to know whether it holds the
core itself or an archive.  Decoding them with the one-thread reader costs a
few KiB of work; starting the thread pool would decode ``workers`` whole
pieces only to throw them away when the layer then goes to the decoder
processes (``caslib.streams.procdecode``).  Read further (a tar inside the layer),
the thread reader (``caslib.streams.parallel``) takes over after skipping what was
served.
"""

from caslib.streams import decompress, parallel, xzblocks
from caslib.records import StepError

CHUNK = 1 << 20


class Deferred:
    """A parallel reader (``threaded``) whose first MiB comes from the one-thread decoder."""

    HEAD_LIMIT = 1 << 20

    def __init__(self, threaded, origin: parallel.Origin, codec: str, name: str, log):
        self.threaded, self.origin, self.codec, self.name, self.log = (
            threaded, origin, codec, name, log)
        self.head = None
        self.served = 0
        self.switched = False
        self.done_pos = 0

    @property
    def compressed_pos(self) -> int:
        if self.switched:
            return self.threaded.compressed_pos
        return self.done_pos if self.head is None else self.head.compressed_pos

    def fresh(self) -> bool:
        return not self.switched

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        if not self.switched and self.served < self.HEAD_LIMIT:
            if self.head is None:
                raw = xzblocks.PRead(self.origin.fd, self.origin.start, self.origin.end)
                self.head = decompress.open_reader(raw, self.codec, self.name)
            data = self.head.read(min(n, self.HEAD_LIMIT - self.served))
            self.served += len(data)
            return data
        if not self.switched:
            self.switched = True
            self.log.info("%s: %s decoded by threads, handed out in order (the layer is read "
                          "as a stream, not written as the core)", self.name, self.codec)
            skip = self.served
            while skip:
                got = self.threaded.read(min(skip, CHUNK))
                if not got:
                    raise StepError(f"{self.name}: stream shorter on the second read", "changed")
                skip -= len(got)
        return self.threaded.read(n)

    def readable(self):
        return True

    def close(self):
        self.threaded.close()


def deferred_in(stream) -> "Deferred | None":
    """The Deferred reader right under ``stream`` (a Peekable, maybe over _Tracking)."""
    raw = getattr(stream, "raw", None)
    raw = getattr(raw, "reader", raw)
    return raw if isinstance(raw, Deferred) and raw.fresh() else None
