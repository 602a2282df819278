"""Write cores with holes: a 64 GiB dump of an idle machine takes its non-zero size on disk.

Why: ELF dumps written by kdump or QEMU carry every page of RAM, and most of
an idle machine's RAM is zero.  Skipping zero blocks with ``lseek`` leaves
holes the filesystem does not allocate; ``crash`` reads them back as zeros.
Skipping is always correct (unwritten bytes of a fresh file read as zero);
checking on 4 KiB boundaries of the output makes the skipped ranges whole
filesystem blocks, so they really become holes.

``copy_file`` also keeps a sparse source's holes by walking it with
``SEEK_DATA``/``SEEK_HOLE`` (lseek(2)), so only its data extents are read.
"""

import errno
import os

BLOCK = 4096
_ZERO_BLOCK = bytes(BLOCK)
_ZERO_CACHE = {BLOCK: _ZERO_BLOCK}
COPY_CHUNK = 1 << 20
# "no space" in its three forms: a full disk, a quota, RLIMIT_FSIZE (with SIGXFSZ ignored)


def zeros(n: int) -> bytes:
    """``n`` zero bytes, one shared object per size (decoders hand it out for zero chunks)."""
    z = _ZERO_CACHE.get(n)
    if z is None:
        if len(_ZERO_CACHE) > 8:
            _ZERO_CACHE.clear()
            _ZERO_CACHE[BLOCK] = _ZERO_BLOCK
        z = _ZERO_CACHE[n] = bytes(n)
    return z


class SparseWriter:
    """Append-only writer over a fresh file descriptor that seeks over zero blocks.

    ``written`` counts the bytes really written (the data the file will
    occupy), ``size`` the apparent size.  Call ``close()`` to set the final
    size with ``ftruncate`` (needed when the file ends in a hole).
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.size = 0
        self.written = 0

    def write(self, data) -> int:
        if not isinstance(data, bytes):
            data = bytes(data)  # bytes == bytes is one memcmp; memoryview compares per item
        n = len(data)
        if not n:
            return 0
        if data == zeros(n) if n <= 4 * COPY_CHUNK else not data.strip(b"\0"):
            self.size += n
            return n
        view = memoryview(data)
        pos = 0
        end = min((-self.size) % BLOCK or BLOCK, n)  # the first step ends on a block boundary
        run_start = None                             # start of a pending run of data blocks
        while pos < n:
            if data[pos:end] == (_ZERO_BLOCK if end - pos == BLOCK else zeros(end - pos)):
                if run_start is not None:
                    self._put(view[run_start:pos], self.size + run_start)
                    run_start = None
            elif run_start is None:
                run_start = pos
            pos, end = end, min(end + BLOCK, n)
        if run_start is not None:
            self._put(view[run_start:n], self.size + run_start)
        self.size += n
        return n

    def _put(self, view, offset: int) -> None:
        while len(view):
            done = os.pwrite(self.fd, view, offset)
            view = view[done:]
            offset += done
            self.written += done

    def close(self) -> None:
        """Give the file its full apparent size (a trailing hole has no bytes written)."""
        os.ftruncate(self.fd, self.size)


def data_extents(fd: int, size: int):
    """(start, end) of each data extent of ``fd``, by SEEK_DATA/SEEK_HOLE; whole file if unsupported."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos to the end
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield (pos, size)
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        end = min(end, size)
        if end <= start:
            return
        yield (start, end)
        pos = end


def allocated_data(fd: int, size: int) -> int:
    """Bytes in the data extents of ``fd``: what a sparse copy needs at most."""
    return sum(end - start for start, end in data_extents(fd, size))


def copy_file(src_fd: int, dst_fd: int, size: int, progress=None) -> SparseWriter:
    """Copy a raw file's data extents (zero blocks inside them become holes too)."""
    out = SparseWriter(dst_fd)
    for start, end in data_extents(src_fd, size):
        out.size = start  # the hole before this extent
        pos = start
        while pos < end:
            data = os.pread(src_fd, min(COPY_CHUNK, end - pos), pos)
            if not data:  # the file shrank under us
                end = pos
                break
            out.write(data)
            pos += len(data)
            if progress is not None:
                progress(pos)
    out.size = size
    out.close()
    return out
