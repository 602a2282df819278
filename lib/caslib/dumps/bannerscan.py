"""Fallback: find the kernel release in a dump's raw bytes when no header names it.

Why: some dumps (QEMU ELF without the vmcoreinfo device, sadump, s390,
Xen, LKCD) have no VMCOREINFO; the crashed kernel's ``vmcoreinfo_data`` page
(``OSRELEASE=...``) and its ``linux_banner`` (``Linux version ...``) still sit
in RAM as plain text.  Many copies of banners live in memory (printk
buffer, page cache, a previous kernel after kexec, guests), so the scan
collects every distinct hit within ``buffersize`` bytes and only answers
when they agree: OSRELEASE hits must all name one release (the banner
then only supplies the version string), and without OSRELEASE every banner
must.  Otherwise it reports the candidates as ambiguous (doc/formats.md section 6;
retrace-server ``get_kernel_release`` scans 64 MB the same way, less
carefully).

Speed: the file is mapped (``mmap``) 32 MiB window after window, with its
page table filled at once (``MAP_POPULATE``) and advised sequential, and searched in place with ``mmap.find`` (a C substring search,
no copy) for the two fixed prefixes; the regular expressions run only on
the 512 bytes after a hit.  Each window overlaps the next by 512 bytes so
a hit across the edge is seen once, with its whole line.  What cannot be
mapped (a pipe, a character device, an empty file) is read in chunks with
``preadv`` instead, searched the same way.  A file truncated while it is
being scanned would kill the process with SIGBUS: dumps are not
truncated under the scanner (cas-unpack renames a finished core).
"""

import mmap
import os
import re
import stat

CHUNK = 8 << 20                  # the read fallback's buffer
WINDOW = 32 << 20                # one mapping (smaller windows cost more in mmap set-up)
OSRELEASE = b"OSRELEASE="
BANNER = b"Linux version "
OVERLAP = 512                    # longer than any OSRELEASE line or banner we keep
MAX_HITS = 4096                  # distinct hits kept; copies beyond are only counted
_RELEASE = re.compile(rb"[0-9]+\.[0-9]+[\x21-\x7e]{0,62}")
_BANNER_TAIL = re.compile(rb"[\x20-\x7e]{1,400}")
_VERSION = re.compile(r" (#[0-9]+ .+)$")


class ScanResult:
    """What a scan saw: distinct OSRELEASE values and banners, each with its first offset."""

    def __init__(self):
        self.scanned = 0
        self.osrelease: dict = {}   # release -> first offset
        self.banners: dict = {}     # full banner -> first offset
        self.hits = 0

    def banner_release(self, banner: str) -> str | None:
        m = _RELEASE.match(banner[len("Linux version "):].encode())
        return m.group(0).decode() if m else None

    def verdict(self) -> dict:
        """{release, banner, version} on agreement; {candidates} when hits disagree; {} if none."""
        releases = sorted(self.osrelease, key=self.osrelease.get)
        first_seen = {}      # banner release -> offset of its first copy
        complete = {}        # banner release -> its first complete banner (with "#1 SMP ...")
        for banner in sorted(self.banners, key=self.banners.get):
            rel = self.banner_release(banner)
            if not rel:
                continue
            first_seen.setdefault(rel, self.banners[banner])
            if _VERSION.search(banner):
                complete.setdefault(rel, banner)
        if len(releases) > 1:
            return {"candidates": releases}
        if releases:
            release = releases[0]
        elif len(first_seen) == 1:
            release = next(iter(first_seen))
        elif first_seen:
            return {"candidates": sorted(first_seen, key=first_seen.get)}
        else:
            return {}
        # fragments (e.g. inside the compressed kernel image) vouch for the release only;
        # the banner reported is a complete copy
        banner = complete.get(release)
        version = _VERSION.search(banner).group(1) if banner else None
        return {"release": release, "banner": banner, "version": version,
                "osrelease_hit": bool(releases), "banner_hit": release in first_seen}


def _record(result: ScanResult, buf: bytes, pos: int, base: int, kind: str) -> None:
    result.hits += 1
    if kind == "osrelease":
        m = _RELEASE.match(buf, pos + len(OSRELEASE))
        if not m:
            return
        end = m.end()
        if end >= len(buf) or buf[end] not in b"\n\0":
            return  # inside other text, or cut by the scan limit: not a whole vmcoreinfo line
        value = m.group(0).decode("ascii")
        if value not in result.osrelease and len(result.osrelease) < MAX_HITS:
            result.osrelease[value] = base + pos
    else:
        m = _BANNER_TAIL.match(buf, pos)
        rel = _RELEASE.match(buf, pos + len(BANNER))
        if not m or not rel or rel.end() >= len(buf) or buf[rel.end()] != 0x20:
            return  # "Linux version %s" format strings, or a release cut by the scan limit
        value = m.group(0).decode("ascii").rstrip()
        if value not in result.banners and len(result.banners) < MAX_HITS:
            result.banners[value] = base + pos


def _fill(fd: int, buf: bytearray, offset: int, want: int, pipe: bool = False) -> int:
    """pread ``want`` bytes at ``offset`` into ``buf[OVERLAP:]``; fewer only at the end.
    From a pipe the bytes are simply the next ones (``offset`` is where they are)."""
    view = memoryview(buf)[OVERLAP:OVERLAP + want]
    got = 0
    while got < want:
        n = os.readv(fd, [view[got:]]) if pipe else os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            break
        got += n
    return got


def scan(path: str, limit: int, start: int = 0, progress=None) -> ScanResult:
    """Scan ``limit`` bytes of ``path`` from ``start`` for OSRELEASE= lines and banners."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size > start and limit > 0:
            result = _scan_mapped(fd, st.st_size, limit, start, progress)
            if result is not None:
                return result
        return _scan_read(fd, limit, start, progress)
    finally:
        os.close(fd)


def _map(fd: int, lo: int, hi: int):
    """A read-only mapping of ``[lo, hi)`` (rounded down to the allocation granularity)."""
    off = lo - lo % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    mm = mmap.mmap(fd, hi - off, flags=flags, prot=mmap.PROT_READ, offset=off)
    if hasattr(mmap, "MADV_SEQUENTIAL"):
        mm.madvise(mmap.MADV_SEQUENTIAL)
    return mm, off


def _scan_mapped(fd: int, size: int, limit: int, start: int, progress,
                 window: int = WINDOW) -> ScanResult | None:
    """The scan over mapped windows; None if the file cannot be mapped at all."""
    result = ScanResult()
    end = min(size, start + limit)
    pos = start
    while pos < end:
        hi = min(pos + window, end)         # hits starting in [pos, hi) belong to this window
        map_end = min(hi + OVERLAP, end)     # their context, never past the scan limit
        try:
            mm, off = _map(fd, pos, map_end)
        except (OSError, ValueError):
            if pos == start:
                return None
            raise
        try:
            for needle, kind in ((OSRELEASE, "osrelease"), (BANNER, "banner")):
                stop = min(hi + len(needle) - 1, map_end) - off
                at = mm.find(needle, pos - off, stop)
                while at >= 0:
                    context = mm[at:min(at + OVERLAP, map_end - off)]
                    _record(result, context, 0, off + at, kind)
                    at = mm.find(needle, at + 1, stop)
        finally:
            mm.close()
        result.scanned += hi - pos
        pos = hi
        if progress:
            progress.update(result.scanned)
    return result


def _skip(fd: int, count: int) -> bool:
    """Read past ``count`` bytes of a pipe; False when it ends first."""
    while count > 0:
        got = len(os.read(fd, min(count, CHUNK)))
        if not got:
            return False
        count -= got
    return True


def _search(result: ScanResult, buf: bytearray, lo: int, stop: int, end: int, base: int):
    """Record the hits that start in ``buf[lo:stop]`` (``buf[:end]`` is valid data, file
    offset ``base`` at ``buf[0]``)."""
    view = memoryview(buf)[:end]
    for needle, kind in ((OSRELEASE, "osrelease"), (BANNER, "banner")):
        limit_at = min(end, stop + len(needle) - 1)
        pos = buf.find(needle, lo, limit_at)
        while 0 <= pos < stop:
            _record(result, view, pos, base, kind)
            pos = buf.find(needle, pos + 1, limit_at)
    view.release()


def _scan_read(fd: int, limit: int, start: int = 0, progress=None) -> ScanResult:
    """The scan by reading, for what cannot be mapped.

    Two buffers: a reader thread fills one (preadv releases the GIL) while this
    thread searches the other, so the copy from the page cache overlaps the search.
    Each buffer starts with the unexamined tail of the previous chunk.
    """
    from concurrent.futures import ThreadPoolExecutor

    result = ScanResult()
    bufs = [bytearray(OVERLAP + CHUNK), bytearray(OVERLAP + CHUNK)]
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
        pipe = False
    except OSError:   # a pipe or socket: skip to ``start`` by reading
        pipe = True
        if not _skip(fd, start):
            return result
    pool = ThreadPoolExecutor(1)
    try:
        want = min(CHUNK, limit)
        pending = pool.submit(_fill, fd, bufs[0], start, want, pipe) if want > 0 else None
        offset = start         # file offset of the next read
        lo = OVERLAP           # buf[lo:] holds unexamined bytes
        base = start - lo      # file offset of buf[0]
        i = 0
        while pending is not None:
            n = pending.result()
            buf = bufs[i]
            result.scanned += n
            offset += n
            last = n < want or result.scanned >= limit
            pending = None
            if not last:
                want = min(CHUNK, limit - result.scanned)
                pending = pool.submit(_fill, fd, bufs[1 - i], offset, want, pipe)
            end = OVERLAP + n
            # hits starting in the last OVERLAP bytes wait for the next chunk (full context)
            stop = end if last else max(lo, end - OVERLAP)
            _search(result, buf, lo, stop, end, base)
            if progress:
                progress.update(result.scanned)
            if pending is None:
                break
            # the reader writes bufs[1 - i][OVERLAP:]; the carried tail goes just before it
            carried = end - stop
            bufs[1 - i][OVERLAP - carried:OVERLAP] = buf[stop:end]
            base = base + stop - (OVERLAP - carried)
            lo = OVERLAP - carried
            i = 1 - i
    finally:
        if pending is not None:
            pending.result()
        pool.shutdown()
    return result
