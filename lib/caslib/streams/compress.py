"""Compress a core for transfer (the seed's ``cas -f vmcore --compress``), on every core.

Why: a 64 GiB dump has to travel to the analysis host, and single-threaded
``xz -6`` takes hours.  For xz the input is cut into independent 24 MiB
blocks (three times the preset-6 dictionary, as ``xz -T0`` does), each is
compressed by stdlib ``lzma`` in a thread pool (liblzma releases the GIL),
and they are written as one .xz stream of blocks whose headers state their
compressed and uncompressed sizes, with the index of them all: the layout
``xz -T0`` writes, which ``xz -T0 -dc`` and cas-unpack both decode on every
core (xz's threaded decoder needs the sizes in the headers, and works
within one stream).  Dumps are mostly zero blocks, and a zero block always
compresses to the same bytes, so those are computed once.  zstd is cut the
same way into independent 16 MiB frames, each with its content size in the
header (zstandard releases the GIL), so that cas-unpack decodes them on every
core too (``caslib.streams.parallel``); ``zstd -dc`` reads the frames as one
file.

The output is written under a temporary name next to the input and
renamed when complete (caslib.atomicfile); an existing output is never replaced without
``force``.
"""

import collections
import lzma
import os
import stat
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

from caslib import atomicfile, errors, logs
from caslib.progress import Progress
from caslib.records import StepError
from caslib.streams.xzblocks import stream_header, stream_tail, varint

FORMATS = {"xz": ".xz", "zstd": ".zst"}
XZ_PRESET = 6
XZ_BLOCK = 3 * 8 * 1024 * 1024   # 3 x the preset-6 dictionary, the xz -T0 block size
ZSTD_LEVEL = 3
ZSTD_FRAME = 16 * 1024 * 1024


XZ_DICT = 8 << 20                # the preset-6 dictionary
_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": XZ_DICT}]
_CRC32_FLAGS = b"\x00\x01"       # stream flags: the check is CRC32 (zlib has it; not CRC64)


def _lzma2_dict_byte(size: int) -> int:
    """The LZMA2 filter property: the smallest 2^n or 3 * 2^(n-1) dictionary >= size."""
    for b in range(40):
        if (2 | (b & 1)) << (b // 2 + 11) >= size:
            return b
    return 40


def _xz_block(data: bytes) -> tuple[bytes, tuple[int, int]]:
    """``data`` as an .xz block whose header states both sizes: (block, its index record)."""
    raw = lzma.compress(data, format=lzma.FORMAT_RAW, filters=_XZ_FILTERS)
    fields = bytes([0xC0]) + varint(len(raw)) + varint(len(data)) \
        + varint(lzma.FILTER_LZMA2) + varint(1) + bytes([_lzma2_dict_byte(XZ_DICT)])
    size = -(-(1 + len(fields) + 4) // 4) * 4    # size byte, fields, padding, CRC32
    header = bytes([size // 4 - 1]) + fields
    header += b"\x00" * (size - 4 - len(header))
    header += struct.pack("<I", zlib.crc32(header))
    block = header + raw + b"\x00" * (-len(raw) % 4) + struct.pack("<I", zlib.crc32(data))
    return block, (size + len(raw) + 4, len(data))


def _compress_blocks(src, dst, threads: int, progress, size: int, pack) -> list:
    """Cut ``src`` into ``size`` blocks, ``pack`` each in a thread pool, write them in order.

    ``pack(block)`` returns (bytes, what to remember of it); the list of the
    latter, in order, is returned (the xz index records)."""
    kept = []
    zero_block = bytes(size)
    zero_packed = None
    done = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = collections.deque()

        def drain(limit):
            nonlocal done
            while len(pending) > limit:
                fut, size = pending.popleft()
                data, note = fut if isinstance(fut, tuple) else fut.result()
                dst.write(data)
                kept.append(note)
                done += size
                progress.update(done)

        while True:
            block = src.read(size)
            if not block:
                break
            if len(block) == size and block == zero_block:
                if zero_packed is None:
                    zero_packed = pack(block)
                pending.append((zero_packed, len(block)))
            else:
                pending.append((pool.submit(pack, block), len(block)))
            drain(threads + 1)   # bounded: at most threads + 1 blocks in memory
        drain(0)
    return kept


_local = threading.local()


def _zstd_frame(data: bytes) -> tuple[bytes, None]:
    """One complete frame; a compressor per thread (they are not thread-safe)."""
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        import zstandard

        cctx = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                                      write_content_size=True)
    return cctx.compress(data), None


def compress_file(path: str, fmt: str = "xz", force: bool = False,
                  threads: int | None = None) -> dict:
    """Write ``path`` + ``.xz`` (or ``.zst``); returns what was done as record keys."""
    log = logs.get()
    if fmt not in FORMATS:
        raise StepError(f"unknown compression format {fmt!r}: use xz or zstd", "usage")
    out = path + FORMATS[fmt]
    try:
        src = open(path, "rb")
    except OSError as exc:
        raise StepError(f"{path}: cannot read: {exc.strerror}", "not-found") from None
    with src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StepError(f"{path}: not a regular file", "not-found")
        if os.path.lexists(out) and not force:
            raise StepError(f"{out}: already exists (use --force to replace it)", "exists")
        threads = threads or os.cpu_count() or 1
        log.info("compressing %s to %s (%s, %d threads)", path, out, fmt, threads)
        try:
            with atomicfile.replacing(out) as dst, \
                    Progress(f"compress {os.path.basename(path)}", st.st_size) as progress:
                if fmt == "xz":
                    dst.write(stream_header(_CRC32_FLAGS))
                    records = _compress_blocks(src, dst, threads, progress, XZ_BLOCK, _xz_block)
                    dst.write(stream_tail(_CRC32_FLAGS, records))
                else:
                    _compress_blocks(src, dst, threads, progress, ZSTD_FRAME, _zstd_frame)
        except OSError as exc:
            raise StepError(f"{out}: {exc.strerror or exc}; partial output removed",
                            errors.kind_of_oserror(exc)) from None
    size = os.stat(out).st_size
    log.info("wrote %s: %s bytes from %s (%.1f%%)", out, f"{size:,}", f"{st.st_size:,}",
             100 * size / st.st_size if st.st_size else 0)
    return {"compressed": os.path.abspath(out), "compression": fmt,
            "source_bytes": st.st_size, "compressed_bytes": size}
