"""RPM packages: one header reader for the index and for cas-extract, and the payload stream.

An RPM is a 96-byte lead, the signature header, the main header (8-byte
aligned) and the compressed cpio payload (rpm ``lib/header.c``, doc/formats.md
section 9).  A header is the magic ``8e ad e8 01``, 4 reserved bytes, entry
count and store size (be32), 16-byte entries (tag, type, offset, count) and the
store.  Every header is checked against the file size before it is read, and a
payload cut short is caught by the signature's SIZE/LONGSIZE tag.

Where and why tags are decoded here: everywhere, by the tag numbers of
rpmfile's table (``rpmfile.headers.tags``, hence the pinned rpmfile range in
setup.cfg).  ``rpmfile.RPMFile`` decodes every tag of a header, copying the
store's tail for each string.  Measured on a 20,102-file kernel-debuginfo-common
header built by rpmbuild (bench/index's), medians in one process, two runs on the
shared 2-core test machine (quieter / load 11): RPMFile().headers 34 / 207 ms;
here the index's 12 tags 1.1 / 1.6 ms and the index's whole read 5 ms,
cas-extract's 17 tags (20,102 digests among them) 36 ms at load 11, and its
whole ``open_package`` 105 ms where the former RPMFile-based one took 180 ms
(same run, load 8).  rpmfile 2.2 also does not decode int64 tags
(LONGFILESIZES, written for files of 4 GiB or more).  A shelf holds thousands of headers, so the index cannot pay rpmfile's
price, and extraction has no reason to parse the same bytes a second way.

  read(path, prefix) -> read.Package   the index's view: members under ``prefix``
  open_package(path) -> RpmPackage     cas-extract's view: every file with size, digest, inode
  open_payload(pkg, fh)                the decompressed cpio stream
Tag numbers and types: rpm ``include/rpm/rpmtag.h``; digest algorithms are OpenPGP
hash ids (RFC 4880 9.4), as rpm ``include/rpm/rpmpgp.h`` has them.
"""

import os
import stat
import struct

from caslib import magic
from caslib._vendor import load_rpmfile as _rpmfile
from caslib.errors import FormatError
from caslib.packages.read import Member, Package
from caslib.pathsafety import package_path

rpmfile = _rpmfile()
_TAGS = rpmfile.headers.tags
_SIGTAG_SIZE, _SIGTAG_LONGSIZE = 1000, 270
# PAYLOADCOMPRESSOR values rpm writes -> decompress codec names; absent means gzip
COMPRESSORS = {"gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "lzma": "lzma", "zstd": "zstd"}
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
DEBUG_PREFIX = "/usr/lib/debug/"
INDEX_TAGS = ("name", "version", "release", "serial", "arch", "archive_compression",
              "basenames", "dirnames", "dirindexes", "oldfilenames", "filemodes", "filelinktos")
EXTRACT_TAGS = ("name", "version", "release", "arch", "archive_compression", "archive_format",
                "basenames", "dirnames", "dirindexes", "filesizes", "longfilesizes",
                "filemodes", "filemd5s", "filelinktos", "fileinodes", "filedevices",
                "filedigestalgo")
_INTS = {3: ">{}H", 4: ">{}I", 5: ">{}Q"}


def _intro(fh, offset: int, size: int, path: str, what: str) -> tuple[int, int]:
    """(index entries, store bytes) of the header structure at ``offset``, checked."""
    fh.seek(offset)
    intro = fh.read(16)
    if len(intro) < 16:
        raise FormatError(f"{path}: truncated RPM: {what} header missing at byte {offset}",
                          "truncated")
    if intro[:4] != magic.RPM_HEADER:
        raise FormatError(f"{path}: corrupt RPM: bad {what} header magic at byte {offset}")
    nindex, hsize = struct.unpack(">II", intro[8:16])
    if nindex > 1 << 20 or hsize > 1 << 28:
        raise FormatError(f"{path}: corrupt RPM: implausible {what} header "
                          f"({nindex} entries, {hsize} bytes)")
    if offset + 16 + 16 * nindex + hsize > size:
        raise FormatError(f"{path}: truncated RPM: {what} header ends at byte "
                          f"{offset + 16 + 16 * nindex + hsize}, file has {size}", "truncated")
    return nindex, hsize


def _entries(fh, offset: int, nindex: int, hsize: int) -> tuple[list, bytes]:
    fh.seek(offset + 16)
    index = fh.read(16 * nindex)
    return [struct.unpack_from(">iiii", index, 16 * i) for i in range(nindex)], fh.read(hsize)


def _signature_size(entries: list, store: bytes) -> int | None:
    """RPMSIGTAG_SIZE/LONGSIZE: bytes of header + payload, to detect a truncated payload."""
    for tag, typ, off, _ in entries:
        if tag == _SIGTAG_SIZE and typ == 4 and 0 <= off <= len(store) - 4:
            return struct.unpack_from(">I", store, off)[0]
        if tag == _SIGTAG_LONGSIZE and typ == 5 and 0 <= off <= len(store) - 8:
            return struct.unpack_from(">Q", store, off)[0]
    return None


class Header:
    """The main header of the RPM open in ``fh``, located and checked against the file size.

    ``data_offset`` is where the payload starts; ``tags(names)`` decodes only those.
    ``sized``: check the signature's payload size against the file (the index's only
    way to see a cut payload; extraction sees it in the payload and the digests).
    """

    def __init__(self, fh, path: str, sized: bool = True):
        self.path = path
        size = os.fstat(fh.fileno()).st_size
        lead = fh.read(96)
        if lead[:4] != magic.RPM_LEAD:
            raise FormatError(f"{path}: not an RPM package (no RPM lead magic)")
        if len(lead) < 96:
            raise FormatError(f"{path}: truncated RPM: the lead is {len(lead)} bytes", "truncated")
        sig_n, sig_size = _intro(fh, 96, size, path, "signature")
        main = 96 + 16 + 16 * sig_n + sig_size
        main += (8 - main % 8) % 8
        main_n, main_size = _intro(fh, main, size, path, "main")
        expect = _signature_size(*_entries(fh, 96, sig_n, sig_size)) if sized else None
        if expect is not None and main + expect > size:
            raise FormatError(f"{path}: truncated RPM: header and payload need "
                              f"{main + expect} bytes, file has {size}", "truncated")
        self.data_offset = main + 16 + 16 * main_n + main_size
        self.entries, self.store = _entries(fh, main, main_n, main_size)

    def tags(self, names) -> dict:
        """name -> value for the ``names`` present: a list of ints, bytes (one string), or a
        list of bytes (a string array).  FormatError when an entry lies outside the store."""
        wanted = {_TAGS[name]: name for name in names}
        try:
            return self._decode(wanted)
        except (struct.error, ValueError, IndexError) as exc:
            raise FormatError(f"{self.path}: corrupt RPM header: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}") from None

    def _decode(self, wanted: dict) -> dict:
        store, hsize = self.store, len(self.store)
        offsets = sorted({e[2] for e in self.entries} | {hsize})
        out = {}
        for tag, typ, off, count in self.entries:
            name = wanted.get(tag)
            if name is None:
                continue
            if not 0 <= off < hsize or count < 0:
                raise ValueError(f"tag {tag} points outside the header")
            if typ in _INTS:
                out[name] = list(struct.unpack_from(_INTS[typ].format(count), store, off))
            elif typ in (6, 9):
                out[name] = store[off:store.index(b"\0", off, hsize)]
            elif typ == 8:
                out[name] = _strings(store, off, count, offsets[offsets.index(off) + 1], tag)
        return out


def _strings(store: bytes, off: int, count: int, end: int, tag: int) -> list:
    """``count`` NUL-terminated strings from ``off``; the next entry's offset usually ends them."""
    values = store[off:end].split(b"\0", count)[:count]
    if len(values) < count:
        values = store[off:].split(b"\0", count)[:count]
    if len(values) < count:
        raise ValueError(f"tag {tag}: {len(values)} of {count} strings")
    return values


def _text(value, default: str = "", errors: str = "surrogateescape") -> str:
    """A string tag (or the first of an array) as text; paths keep their bytes
    (surrogateescape), the package's own fields go to the database (``replace``)."""
    if isinstance(value, list):
        value = value[0] if value else b""
    if value is None:
        return default
    return value.decode("utf-8", errors)


def _first(value) -> int | None:
    return value[0] if isinstance(value, list) and value else None


def read_header(path: str, names, sized: bool = True) -> tuple:
    """(tags, data offset) of the RPM at ``path``."""
    with open(path, "rb") as fh:
        header = Header(fh, path, sized)
        return header.tags(names), header.data_offset


# --- the index's view --------------------------------------------------------------------

def read(path: str, prefix: str | None = DEBUG_PREFIX) -> Package:
    """The header of the RPM at ``path`` (never its payload).

    ``members`` holds the members under ``prefix`` only (None: all of them);
    ``file_count`` counts them all.
    """
    headers, _ = read_header(path, INDEX_TAGS)
    field = {k: _text(headers.get(k), errors="replace") for k in ("name", "version", "release")}
    if not field["name"]:
        raise FormatError(f"{path}: corrupt RPM header: no package name")
    pkg = Package(path=path, format="rpm", **field, epoch=_first(headers.get("serial")),
                  arch=_text(headers.get("arch"), "noarch", "replace"),
                  payload=_text(headers.get("archive_compression"), "gzip", "replace") or "gzip")
    if headers.get("basenames"):
        picked = _picked_by_dir(pkg, headers, prefix)
    else:
        picked = _picked_old(pkg, headers, prefix)
    modes = headers.get("filemodes", [])
    links = headers.get("filelinktos", [])
    for i, name in picked:
        if prefix and not name.startswith(prefix):
            continue
        mode = modes[i] if i < len(modes) else 0o100644
        if stat.S_ISLNK(mode):
            target = _text(links[i]) if i < len(links) else ""
            pkg.members.append(Member(name, "link", target))
        else:
            pkg.members.append(Member(name, "dir" if stat.S_ISDIR(mode) else "file"))
    return pkg


def _picked_by_dir(pkg: Package, headers: dict, prefix: str | None) -> list:
    """(file index, path) of the members in directories under ``prefix``: a 20,000-file
    debuginfo-common is skipped at the directory level instead of file by file."""
    basenames = headers["basenames"]
    dirnames = [_text(d) for d in headers.get("dirnames", [])]
    dirindexes = headers.get("dirindexes", [])
    if len(dirindexes) != len(basenames) or (dirindexes and max(dirindexes) >= len(dirnames)):
        raise FormatError(f"{pkg.path}: corrupt RPM header: file name tables disagree")
    pkg.file_count = len(basenames)
    dotdot = b".." in basenames
    wanted = set()
    for i, d in enumerate(dirnames):
        if prefix and not (d + "/").startswith(prefix) and not prefix.startswith(d):
            continue
        if package_path(d) is None or dotdot:
            pkg.warnings.append(f"{pkg.path}: members under {d!r} climb out with '..'; ignored")
            continue
        wanted.add(i)
    if not wanted:
        return []
    return [(i, dirnames[di] + _text(basenames[i])) for i, di in enumerate(dirindexes)
            if di in wanted]


def _picked_old(pkg: Package, headers: dict, prefix: str | None) -> list:
    """(file index, path) from OLDFILENAMES (rpm before 4.0's compressed file names)."""
    names = [_text(n) for n in headers.get("oldfilenames", [])]
    pkg.file_count = len(names)
    picked = []
    for i, raw in enumerate(names):
        clean = package_path(raw)
        if clean is None:
            pkg.climbs_out(raw)
        elif not prefix or clean.startswith(prefix):
            picked.append((i, clean))
    return picked


# --- cas-extract's view ------------------------------------------------------------------

class FileEntry:
    """One file of the package header (index ``fx``)."""

    __slots__ = ("fx", "path", "mode", "size", "digest", "linkto", "inode", "device")

    def __init__(self, fx, path, mode, size, digest, linkto, inode, device):
        self.fx, self.path, self.mode, self.size = fx, path, mode, size
        self.digest, self.linkto, self.inode, self.device = digest, linkto, inode, device

    def isreg(self) -> bool:
        return stat.S_ISREG(self.mode)

    def islnk(self) -> bool:
        return stat.S_ISLNK(self.mode)


class RpmPackage:
    """The header facts cas-extract needs: every file, the payload's place and compressor."""

    def __init__(self, path, name, compressor, data_offset, digest_algo, files, large):
        self.path, self.name, self.compressor = path, name, compressor
        self.data_offset, self.digest_algo, self.files = data_offset, digest_algo, files
        self.by_path = {f.path: f for f in files}
        self.large = large   # LONGFILESIZES present: the payload uses 07070X entries

    def carriers(self) -> dict:
        """fx of each regular file -> fx of the entry that carries its data in the payload:
        hard-linked files carry it on the last link only (rpm ``lib/rpmfi.c``
        iterReadArchiveNext)."""
        last = {(f.device, f.inode): f.fx for f in self.files if f.isreg()}
        return {f.fx: last[(f.device, f.inode)] for f in self.files if f.isreg()}

    def payload_sizes(self) -> dict:
        """fx -> bytes of data that follow the entry in a stripped (07070X) payload
        (symlinks carry their target)."""
        carriers = self.carriers()
        out = {}
        for f in self.files:
            if f.isreg():
                out[f.fx] = f.size if carriers[f.fx] == f.fx else 0
            else:
                out[f.fx] = f.size if f.islnk() else 0
        return out


def open_package(path: str) -> RpmPackage:
    """Read the header of the RPM at ``path`` for extraction; FormatError when it is not one."""
    headers, data_offset = read_header(path, EXTRACT_TAGS, sized=False)
    fmt = _text(headers.get("archive_format")) or "cpio"
    if fmt != "cpio":
        raise FormatError(f"{path}: unsupported payload format {fmt!r} (only cpio)",
                          "unsupported")
    algo_id = _first(headers.get("filedigestalgo")) or 1  # absent means MD5
    algo = DIGEST_ALGOS.get(algo_id)
    if algo is None:
        raise FormatError(f"{path}: unknown file digest algorithm {algo_id} in the RPM header",
                          "unsupported")
    compressor = headers.get("archive_compression")
    return RpmPackage(path, _text(headers.get("name")),
                      _text(compressor) if compressor is not None else None, data_offset, algo,
                      _files(path, headers), "longfilesizes" in headers)


def _files(path: str, headers: dict) -> list:
    basenames = [_text(b) for b in headers.get("basenames", [])]
    dirnames = [_text(d) for d in headers.get("dirnames", [])]
    dirindexes = headers.get("dirindexes", [])
    n = len(basenames)
    sizes = headers.get("longfilesizes") or headers.get("filesizes") or [0] * n
    modes = headers.get("filemodes") or [0] * n
    if not (len(dirindexes) == len(sizes) == len(modes) == n):
        raise FormatError(f"{path}: RPM header file lists disagree in length")
    digests = [_text(d) for d in headers.get("filemd5s", [])]
    links = [_text(x) for x in headers.get("filelinktos", [])]
    inodes = headers.get("fileinodes", [])
    devices = headers.get("filedevices", [])
    files = []
    for fx in range(n):
        di = dirindexes[fx]
        if di >= len(dirnames):
            raise FormatError(f"{path}: RPM header file {fx} has a bad directory index")
        files.append(FileEntry(fx, dirnames[di] + basenames[fx], modes[fx], sizes[fx],
                               digests[fx] if fx < len(digests) else "",
                               links[fx] if fx < len(links) else "",
                               inodes[fx] if fx < len(inodes) else fx,
                               devices[fx] if fx < len(devices) else 0))
    return files


def codec_for(pkg: RpmPackage, head: bytes) -> str | None:
    """The decompress codec for the payload (None: stored uncompressed).

    rpm writes no PAYLOADCOMPRESSOR for ``w.ufdio`` payloads and reads a
    missing tag as gzip; gzdio passes plain data through, so do the same
    when the payload starts with a cpio magic.
    """
    if not pkg.compressor:
        return None if head[:5] == b"07070" else "gzip"
    codec = COMPRESSORS.get(pkg.compressor)
    if codec is None:
        raise FormatError(f"{pkg.path}: unsupported payload compressor {pkg.compressor!r} "
                          f"(supported: {', '.join(COMPRESSORS)})", "unsupported")
    return codec


def open_payload(pkg: RpmPackage, fh):
    """A decompressed ``read(n)`` stream of the cpio payload from the open file ``fh``."""
    from caslib.streams import decompress

    size = os.fstat(fh.fileno()).st_size
    fh.seek(pkg.data_offset)
    head = fh.read(16)
    fh.seek(pkg.data_offset)
    raw = decompress.Slice(fh, size - pkg.data_offset)
    codec = codec_for(pkg, head)
    if codec is None:
        return raw
    if codec == "xz":  # multi-block xz (rpm's w2T0.xzdio) decodes on every core
        from caslib.streams.xzblocks import ParallelXz
        return ParallelXz(fh.fileno(), pkg.data_offset, size, pkg.path)
    return decompress.open_reader(raw, codec, pkg.path)
