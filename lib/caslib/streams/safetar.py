"""tarfile with bounded headers: what a small hostile archive can cost stays small.

Why: ``tarfile`` reads a GNU long name, long link or pax header whole, at
whatever size the header declares (a 10 KB ``.tar.zst`` declaring a 300 MiB
name took 1.9 GB), chains such headers without limit, collects any number
of sparse map entries, and before Python 3.11.10/3.12.6 finds ``hdrcharset``
with a quadratic regular expression (CVE-2024-6232).  ``SafeTarInfo``
replaces exactly those steps: headers over ``MAX_HEADER`` bytes, chains
longer than ``MAX_CHAIN`` and sparse maps over ``MAX_SPARSE`` entries are
refused as ``unsafe``; pax records are parsed here by one linear pass.
Everything else is the standard library's.  Use ``open_stream``.
"""

import tarfile
from tarfile import (BLOCKSIZE, GNUTYPE_LONGLINK, GNUTYPE_LONGNAME, SOLARIS_XHDTYPE,
                     SUPPORTED_TYPES, XGLTYPE, XHDTYPE, HeaderError, ReadError,
                     SubsequentHeaderError, nti)

from caslib.errors import FormatError

MAX_HEADER = 1 << 20      # bytes of one long name/link or pax header
MAX_GLOBAL = 1 << 20      # bytes of all global pax headers together
MAX_CHAIN = 16            # extension headers in front of one member
MAX_SPARSE = 1 << 16      # (offset, size) pairs of one sparse member
PAX_NAME_FIELDS = {"path", "linkpath", "uname", "gname"}


class UnsafeTar(FormatError):
    """A tar header built to cost memory or time; the caller adds the archive's name.

    Kept apart from FormatError because the tar readers (streams/layers,
    packages/debpkg) catch exactly this to prefix the archive name, while their
    other errors pass through unchanged."""

    def __init__(self, message: str):
        super().__init__(message, "unsafe")


def parse_pax(buf: bytes) -> list[tuple[bytes, bytes]]:
    """``"<len> <key>=<value>\\n"`` records, in order; one pass, no backtracking."""
    out, pos, end = [], 0, len(buf)
    while pos < end and buf[pos] != 0:
        space = buf.find(b" ", pos, min(end, pos + 21))
        digits = buf[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise ReadError("invalid pax header: bad record length")
        length = int(digits)
        stop = pos + length
        if length < len(digits) + 4 or stop > end or buf[stop - 1] != 0x0A:
            raise ReadError("invalid pax header: record length out of range")
        eq = buf.find(b"=", space + 1, stop - 1)
        if eq <= space + 1:
            raise ReadError("invalid pax header: record without keyword")
        out.append((buf[space + 1:eq], buf[eq + 1:stop - 1]))
        pos = stop
    return out


class SafeTarInfo(tarfile.TarInfo):
    """TarInfo whose extension headers are bounded (see the module docstring)."""

    def _proc_member(self, tar):
        if self.type not in (GNUTYPE_LONGNAME, GNUTYPE_LONGLINK, XHDTYPE, XGLTYPE,
                             SOLARIS_XHDTYPE):
            return super()._proc_member(tar)
        depth = getattr(tar, "_cas_chain", 0)
        if depth >= MAX_CHAIN:
            raise UnsafeTar(f"more than {MAX_CHAIN} extension headers in front of one member")
        tar._cas_chain = depth + 1
        try:
            return super()._proc_member(tar)
        finally:
            tar._cas_chain = depth

    def _proc_gnulong(self, tar):
        what = "GNU long name" if self.type == GNUTYPE_LONGNAME else "GNU long link"
        if self.size > MAX_HEADER:
            raise UnsafeTar(f"{what} header of {self.size:,} bytes (limit {MAX_HEADER:,})")
        return super()._proc_gnulong(tar)

    def _proc_sparse(self, tar):
        structs, isextended, origsize = self._sparse_structs
        del self._sparse_structs
        while isextended:
            if len(structs) > MAX_SPARSE:
                raise UnsafeTar(f"sparse map of more than {MAX_SPARSE:,} entries")
            buf = tar.fileobj.read(BLOCKSIZE)
            if len(buf) < BLOCKSIZE:
                raise ReadError("truncated sparse header")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = nti(buf[pos:pos + 12]), nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tar.fileobj.tell()
        tar.offset = self.offset_data + self._block(self.size)
        self.size = origsize
        return self

    def _proc_pax(self, tar):
        if self.size > MAX_HEADER:
            raise UnsafeTar(f"pax header of {self.size:,} bytes (limit {MAX_HEADER:,})")
        buf = tar.fileobj.read(self._block(self.size))
        pairs = parse_pax(buf[:self.size])
        pax_headers = tar.pax_headers if self.type == XGLTYPE else tar.pax_headers.copy()
        raw = {k: v for k, v in pairs}
        charset = raw.get(b"hdrcharset")
        if charset is not None:
            pax_headers["hdrcharset"] = charset.decode("utf-8", "replace")
        encoding = tar.encoding if pax_headers.get("hdrcharset") == "BINARY" else "utf-8"
        offsets, numbytes = [], []
        for key, value in pairs:
            keyword = self._decode_pax_field(key, "utf-8", "utf-8", tar.errors)
            if keyword in PAX_NAME_FIELDS:
                value = self._decode_pax_field(value, encoding, tar.encoding, tar.errors)
            else:
                value = self._decode_pax_field(value, "utf-8", "utf-8", tar.errors)
            if keyword == "GNU.sparse.offset":
                offsets.append(value)
            elif keyword == "GNU.sparse.numbytes":
                numbytes.append(value)
            pax_headers[keyword] = value
        if len(offsets) > MAX_SPARSE:
            raise UnsafeTar(f"sparse map of more than {MAX_SPARSE:,} entries")
        if self.type == XGLTYPE and sum(len(k) + len(v) for k, v in pax_headers.items()) \
                > MAX_GLOBAL:
            raise UnsafeTar(f"global pax headers over {MAX_GLOBAL:,} bytes")
        try:
            next = self.fromtarfile(tar)
        except HeaderError as exc:
            raise SubsequentHeaderError(str(exc)) from None
        try:
            if "GNU.sparse.map" in pax_headers:
                fields = pax_headers["GNU.sparse.map"].split(",")
                if len(fields) > 2 * MAX_SPARSE:
                    raise UnsafeTar(f"sparse map of more than {MAX_SPARSE:,} entries")
                numbers = [int(x) for x in fields]
                next.sparse = list(zip(numbers[::2], numbers[1::2]))
            elif "GNU.sparse.size" in pax_headers:
                next.sparse = list(zip((int(x) for x in offsets), (int(x) for x in numbytes)))
            elif pax_headers.get("GNU.sparse.major") == "1" and \
                    pax_headers.get("GNU.sparse.minor") == "0":
                self._sparse_10(next, tar)
        except ValueError:
            raise ReadError("invalid GNU sparse map in pax header") from None
        if self.type in (XHDTYPE, SOLARIS_XHDTYPE):
            next._apply_pax_info(pax_headers, tar.encoding, tar.errors)
            next.offset = self.offset
            if "size" in pax_headers:
                offset = next.offset_data
                if next.isreg() or next.type not in SUPPORTED_TYPES:
                    offset += next._block(next.size)
                tar.offset = offset
        return next

    def _sparse_10(self, next, tar) -> None:
        """GNU sparse 1.0: the map as decimal lines in front of the data, bounded."""
        buf = tar.fileobj.read(BLOCKSIZE)
        numbers, want = [], None
        while want is None or len(numbers) < want:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > 64:
                    raise ReadError("invalid GNU sparse 1.0 map")
                more = tar.fileobj.read(BLOCKSIZE)
                if not more:
                    raise ReadError("truncated GNU sparse 1.0 map")
                buf += more
                continue
            number, buf = int(buf[:nl]), buf[nl + 1:]
            if want is None:
                if number > MAX_SPARSE:
                    raise UnsafeTar(f"sparse map of {number:,} entries (limit {MAX_SPARSE:,})")
                want = 2 * number
            else:
                numbers.append(number)
        next.offset_data = tar.fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2]))


def open_stream(fileobj, bufsize: int = tarfile.RECORDSIZE, mode: str = "r|"):
    """``tarfile.open`` in stream mode with the bounded headers of this module."""
    return tarfile.open(fileobj=fileobj, mode=mode, bufsize=bufsize, tarinfo=SafeTarInfo)
