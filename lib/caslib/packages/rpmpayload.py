"""An RPM opened for extraction: header facts from rpmfile, the payload streamed by us.

rpmfile parses the lead, signature and main header (doc/formats.md section 9); its own
``extractfile()`` decompresses twice and reads zstd payloads whole, so the
payload is read here once, forward, through ``decompress.open_reader``.

rpmfile 2.2 does not decode int64 tags (it returns a placeholder string),
so LONGFILESIZES, which rpm writes instead of FILESIZES when a file is
4 GiB or more, is read here from the header bytes rpmfile located.
Tag numbers and types: rpm ``include/rpm/rpmtag.h``; digest algorithms are
OpenPGP hash ids (RFC 4880 9.4), as rpm ``include/rpm/rpmpgp.h`` has them.
"""

import os
import struct
from dataclasses import dataclass

from caslib.records import StepError

# PAYLOADCOMPRESSOR values rpm writes -> decompress codec names
COMPRESSORS = {"gzip": "gzip", "bzip2": "bzip2", "xz": "xz", "lzma": "lzma", "zstd": "zstd"}
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
TAG_LONGFILESIZES = 5008
TYPE_INT64 = 5
S_IFMT, S_IFREG, S_IFLNK = 0o170000, 0o100000, 0o120000


@dataclass
class FileEntry:
    """One file of the package header (index ``fx``)."""

    fx: int
    path: str          # absolute, as ``rpm -qpl`` prints it
    mode: int
    size: int
    digest: str        # hex, "" for non-regular files
    linkto: str
    inode: int
    device: int

    def isreg(self) -> bool:
        return (self.mode & S_IFMT) == S_IFREG

    def islnk(self) -> bool:
        return (self.mode & S_IFMT) == S_IFLNK


@dataclass
class RpmPackage:
    path: str
    name: str
    version: str
    release: str
    arch: str
    compressor: str | None     # PAYLOADCOMPRESSOR as written, None when absent
    data_offset: int
    digest_algo: str
    files: list
    by_path: dict
    large: bool                # LONGFILESIZES present: payload uses 07070X entries

    def payload_sizes(self) -> dict:
        """fx -> bytes of data that follow the entry in a stripped (07070X) payload.

        Hard-linked regular files carry their data on the last link only, and
        symlinks carry their target (rpm ``lib/rpmfi.c`` iterReadArchiveNext).
        """
        last_link = {}
        for f in self.files:
            if f.isreg():
                last_link[(f.device, f.inode)] = f.fx
        out = {}
        for f in self.files:
            if f.isreg():
                out[f.fx] = f.size if last_link[(f.device, f.inode)] == f.fx else 0
            elif f.islnk():
                out[f.fx] = f.size
            else:
                out[f.fx] = 0
        return out


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else b""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _array(value, count: int | None = None) -> list:
    """rpmfile returns a scalar when a tag has one element; always give a list."""
    if value is None:
        return [None] * count if count is not None else []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def read_int64_tag(fileobj, header_range, tag: int) -> list | None:
    """The values of an int64 (type 5) tag of the main header, or None if absent.

    Header layout (rpm ``lib/header.c``): magic 8E AD E8 01, 4 reserved bytes,
    index count and data size (be32), 16-byte index entries (tag, type, offset,
    count), then the data store.
    """
    start, end = header_range
    fileobj.seek(start)
    head = fileobj.read(16)
    if len(head) < 16 or head[:3] != b"\x8e\xad\xe8":
        return None
    count, store_size = struct.unpack(">ii", head[8:16])
    index = fileobj.read(16 * count)
    for i in range(count):
        etag, etype, offset, n = struct.unpack_from(">iiii", index, 16 * i)
        if etag == tag and etype == TYPE_INT64:
            if offset < 0 or offset + 8 * n > store_size:
                return None
            fileobj.seek(start + 16 + 16 * count + offset)
            return list(struct.unpack(f">{n}Q", fileobj.read(8 * n)))
    return None


def open_package(path: str) -> RpmPackage:
    """Read the header of the RPM at ``path``; StepError for anything that is not one."""
    from caslib._vendor import load_rpmfile as _rpmfile  # imported here to keep start-up light

    rpmfile = _rpmfile()

    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"\xed\xab\xee\xdb":
                raise StepError(f"{path}: not an RPM package (no RPM lead magic)", "corrupt")
            fh.seek(0)
            rpm = rpmfile.RPMFile(fileobj=fh)
            headers = rpm.headers
            data_offset = rpm.data_offset
            longsizes = None
            if "longfilesizes" in headers or TAG_LONGFILESIZES in headers:
                longsizes = read_int64_tag(fh, rpm.header_range, TAG_LONGFILESIZES)
    except StepError:
        raise
    except OSError:
        raise
    except Exception as exc:  # rpmfile raises assorted errors on damaged headers
        raise StepError(f"{path}: cannot read the RPM header: {type(exc).__name__}: {exc}",
                        "corrupt") from None

    fmt = _text(headers.get("archive_format")) or "cpio"
    if fmt != "cpio":
        raise StepError(f"{path}: unsupported payload format {fmt!r} (only cpio)", "unsupported")
    basenames = [_text(b) for b in _array(headers.get("basenames"))]
    dirnames = [_text(d) for d in _array(headers.get("dirnames"))]
    dirindexes = _array(headers.get("dirindexes"))
    n = len(basenames)
    sizes = longsizes if longsizes is not None else _array(headers.get("filesizes"), n)
    modes = _array(headers.get("filemodes"), n)
    digests = [_text(d) for d in _array(headers.get("filemd5s"), n)]
    links = [_text(x) for x in _array(headers.get("filelinktos"), n)]
    inodes = _array(headers.get("fileinodes"), n)
    devices = _array(headers.get("filedevices"), n)
    if not (len(dirindexes) == len(sizes) == len(modes) == n):
        raise StepError(f"{path}: RPM header file lists disagree in length", "corrupt")
    files, by_path = [], {}
    for fx in range(n):
        try:
            full = dirnames[dirindexes[fx]] + basenames[fx]
        except (IndexError, TypeError):
            raise StepError(f"{path}: RPM header file {fx} has a bad directory index",
                            "corrupt") from None
        entry = FileEntry(fx, full, int(modes[fx] or 0), int(sizes[fx] or 0),
                          digests[fx] if fx < len(digests) else "",
                          links[fx] if fx < len(links) else "",
                          int(inodes[fx] or 0) if fx < len(inodes) else fx,
                          int(devices[fx] or 0) if fx < len(devices) else 0)
        files.append(entry)
        by_path[full] = entry
    algo_id = headers.get("filedigestalgo")
    algo_id = int(_array(algo_id)[0]) if algo_id is not None else 1  # absent means MD5
    algo = DIGEST_ALGOS.get(algo_id)
    if algo is None:
        raise StepError(f"{path}: unknown file digest algorithm {algo_id} in the RPM header",
                        "unsupported")
    compressor = headers.get("archive_compression")
    return RpmPackage(path=path, name=_text(headers.get("name")),
                      version=_text(headers.get("version")),
                      release=_text(headers.get("release")), arch=_text(headers.get("arch")),
                      compressor=_text(compressor) if compressor is not None else None,
                      data_offset=data_offset, digest_algo=algo, files=files, by_path=by_path,
                      large=longsizes is not None)


def codec_for(pkg: RpmPackage, head: bytes) -> str | None:
    """The decompress codec for the payload (None: stored uncompressed).

    rpm writes no PAYLOADCOMPRESSOR for ``w.ufdio`` payloads and reads a
    missing tag as gzip; gzdio passes plain data through, so do the same
    when the payload starts with a cpio magic.
    """
    if pkg.compressor is None or pkg.compressor == "":
        return None if head[:5] == b"07070" else "gzip"
    codec = COMPRESSORS.get(pkg.compressor)
    if codec is None:
        raise StepError(f"{pkg.path}: unsupported payload compressor {pkg.compressor!r} "
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
