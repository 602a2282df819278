"""Read what a debuginfo package holds without unpacking it: RPM headers, Debian control/data.

Why: the shelf holds thousands of packages of hundreds of megabytes each;
the original CAS extracted every vmlinux to index them (hours).  An RPM's
header lists every member path, symlink target and the payload compressor,
so the payload is never opened.  A Debian package (``.deb``/``.ddeb``) is an
ar archive whose ``control.tar`` lists regular files in ``md5sums``; its
``data.tar`` is only streamed as far as needed to learn the kernel image's
build-id (and in full, streaming, when ``md5sums`` is missing).

  read_rpm(path) -> Package      header only, checked against the file size (a cut
                                 payload is caught by the signature's size tag); the
                                 tags are rpmfile's, decoded only for the dozen the
                                 index needs (rpmfile decodes all of them: 97 ms on a
                                 20,000-file header where this takes ~10 ms)
  read_deb(path) -> Package      stdlib ar + tarfile; zstd members through ``zstandard``
  read_package(path) -> Package  by magic bytes, not by name
Errors are PackageError with one line naming the file and what is wrong.
"""

import io
import os
import posixpath
import re
import stat
import struct
import tarfile
import zlib
from dataclasses import dataclass, field

from caslib.packages import debpkg
from caslib.dumps import elfnote
from caslib.streams import safetar
from caslib._vendor import load_rpmfile as _rpmfile
from caslib.records import StepError

rpmfile = _rpmfile()

RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
RPM_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
AR_MAGIC = debpkg.AR_MAGIC
_SIGTAG_SIZE, _SIGTAG_LONGSIZE = 1000, 270
# rpm's payload compressor names (RPMTAG_PAYLOADCOMPRESSOR); absent means gzip
PAYLOADS = ("gzip", "bzip2", "xz", "lzma", "zstd")


class PackageError(Exception):
    """A package that cannot be read; ``str()`` is one line naming the file."""


@dataclass
class Member:
    """One file of a package: absolute path, ``file``/``link``/``dir``, symlink target."""

    path: str
    kind: str = "file"
    linkto: str | None = None


@dataclass
class Package:
    path: str
    format: str  # "rpm" or "deb"
    name: str
    version: str
    release: str
    arch: str
    epoch: int | None = None
    payload: str | None = None
    members: list = field(default_factory=list)  # under the prefix asked for
    file_count: int = 0
    build_ids: dict = field(default_factory=dict)  # member path -> build-id read from its ELF notes
    warnings: list = field(default_factory=list)


def clean_member(path: str, name: str) -> str | None:
    """An archive member name as an absolute, normalized path; None when it climbs out (``..``)."""
    if name.startswith("./"):
        name = name[1:]
    if not name.startswith("/"):
        name = "/" + name
    if ".." in name.split("/"):
        return None
    norm = posixpath.normpath(name)
    return "/" if norm == "//" else norm


# --- RPM -----------------------------------------------------------------------------------

def _header_intro(fh, offset: int, size: int, path: str, what: str) -> tuple[int, int]:
    """(index entries, store bytes) of the header structure at ``offset``, checked."""
    fh.seek(offset)
    intro = fh.read(16)
    if len(intro) < 16:
        raise PackageError(f"{path}: truncated RPM: {what} header missing at byte {offset}")
    if intro[:4] != RPM_HEADER_MAGIC:
        raise PackageError(f"{path}: corrupt RPM: bad {what} header magic at byte {offset}")
    nindex, hsize = struct.unpack(">II", intro[8:16])
    if nindex > 1 << 20 or hsize > 1 << 28:
        raise PackageError(f"{path}: corrupt RPM: implausible {what} header "
                           f"({nindex} entries, {hsize} bytes)")
    if offset + 16 + 16 * nindex + hsize > size:
        raise PackageError(f"{path}: truncated RPM: {what} header ends at byte "
                           f"{offset + 16 + 16 * nindex + hsize}, file has {size}")
    return nindex, hsize


def _signature_size(fh, nindex: int, hsize: int) -> int | None:
    """RPMSIGTAG_SIZE/LONGSIZE: bytes of header + payload, to detect a truncated payload."""
    fh.seek(96 + 16)
    index = fh.read(16 * nindex)
    store = fh.read(hsize)
    for i in range(nindex):
        tag, typ, off, count = struct.unpack_from(">iiii", index, 16 * i)
        if tag == _SIGTAG_SIZE and typ == 4 and 0 <= off <= hsize - 4:
            return struct.unpack_from(">I", store, off)[0]
        if tag == _SIGTAG_LONGSIZE and typ == 5 and 0 <= off <= hsize - 8:
            return struct.unpack_from(">Q", store, off)[0]
    return None


def _text(value, default: str = "") -> str:
    if value is None or isinstance(value, str) and value.startswith("could not extract"):
        return default
    if isinstance(value, (list, tuple)):
        value = value[0] if value else b""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _seq(value) -> list:
    """rpmfile returns a bare value for one-element arrays; always give a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _decode(value) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


DEBUG_PREFIX = "/usr/lib/debug/"
# The tags the index needs, by rpmfile's names.  rpmfile.RPMFile decodes every
# tag of a header, copying the store tail for each string (80-100 ms on a
# 20,000-file debuginfo-common header); read_rpm, decoding only these,
# takes ~9 ms there (both measured on a loaded 2-core machine).
_WANTED = {rpmfile.headers.tags[name]: name for name in (
    "name", "version", "release", "serial", "arch", "archive_compression", "basenames",
    "dirnames", "dirindexes", "oldfilenames", "filemodes", "filelinktos")}


def _main_tags(fh, offset: int, nindex: int, hsize: int) -> dict:
    """Decode the wanted tags of the main header (index entries bound by the next offset)."""
    fh.seek(offset + 16)
    index = fh.read(16 * nindex)
    store = fh.read(hsize)
    entries = [struct.unpack_from(">iiii", index, 16 * i) for i in range(nindex)]
    offsets = sorted({e[2] for e in entries} | {hsize})
    out = {}
    for tag, typ, off, count in entries:
        name = _WANTED.get(tag)
        if name is None:
            continue
        if not 0 <= off < hsize or count < 0:
            raise ValueError(f"tag {tag} points outside the header")
        end = offsets[offsets.index(off) + 1] if typ in (6, 8, 9) else hsize
        if typ == 4:
            out[name] = list(struct.unpack_from(f">{count}I", store, off))
        elif typ == 3:
            out[name] = list(struct.unpack_from(f">{count}H", store, off))
        elif typ in (6, 9):
            out[name] = store[off:store.index(b"\0", off, hsize)]
        elif typ == 8:
            values = store[off:end].split(b"\0", count)[:count]
            if len(values) < count:
                values = store[off:].split(b"\0", count)[:count]
            if len(values) < count:
                raise ValueError(f"tag {tag}: {len(values)} of {count} strings")
            out[name] = values
    if isinstance(out.get("serial"), list):
        out["serial"] = out["serial"][0] if out["serial"] else None
    return out


def read_rpm(path: str, prefix: str | None = DEBUG_PREFIX) -> Package:
    """The header of the RPM at ``path`` (never its payload).

    ``members`` holds the members under ``prefix`` only (None: all of them);
    ``file_count`` counts them all.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        lead = fh.read(96)
        if len(lead) < 96 or lead[:4] != RPM_LEAD_MAGIC:
            raise PackageError(f"{path}: not an RPM package (no RPM lead magic)")
        sig_n, sig_size = _header_intro(fh, 96, size, path, "signature")
        main = 96 + 16 + 16 * sig_n + sig_size
        main += (8 - main % 8) % 8
        main_n, main_size = _header_intro(fh, main, size, path, "main")
        expect = _signature_size(fh, sig_n, sig_size)
        if expect is not None and main + expect > size:
            raise PackageError(f"{path}: truncated RPM: header and payload need "
                               f"{main + expect} bytes, file has {size}")
        try:
            headers = _main_tags(fh, main, main_n, main_size)
        except (struct.error, ValueError, IndexError) as exc:
            raise PackageError(f"{path}: corrupt RPM header: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}") from None
    name = _text(headers.get("name"))
    if not name:
        raise PackageError(f"{path}: corrupt RPM header: no package name")
    epoch = headers.get("serial")
    pkg = Package(path=path, format="rpm", name=name, version=_text(headers.get("version")),
                  release=_text(headers.get("release")), arch=_text(headers.get("arch"), "noarch"),
                  epoch=epoch if isinstance(epoch, int) else None,
                  payload=_text(headers.get("archive_compression"), "gzip") or "gzip")
    basenames = _seq(headers.get("basenames"))
    if basenames:
        dirnames = [_decode(d) for d in _seq(headers.get("dirnames"))]
        dirindexes = _seq(headers.get("dirindexes"))
        if len(dirindexes) != len(basenames) or (dirindexes and max(dirindexes) >= len(dirnames)):
            raise PackageError(f"{path}: corrupt RPM header: file name tables disagree")
        pkg.file_count = len(basenames)
        # only directories under ``prefix`` matter: a 20,000-file debuginfo-common
        # is skipped at the directory level instead of file by file
        wanted = set()
        dotdot = b".." in basenames or ".." in basenames
        for i, d in enumerate(dirnames):
            if prefix and not (d + "/").startswith(prefix) and not prefix.startswith(d):
                continue
            if clean_member(path, d) is None or dotdot:
                pkg.warnings.append(f"{path}: members under {d!r} climb out with '..'; ignored")
                continue
            wanted.add(i)
        picked = [] if not wanted else [(i, dirnames[di] + _decode(basenames[i]))
                                        for i, di in enumerate(dirindexes) if di in wanted]
    else:
        names = [_decode(n) for n in _seq(headers.get("oldfilenames"))]
        pkg.file_count = len(names)
        picked = []
        for i, raw in enumerate(names):
            clean = clean_member(path, raw)
            if clean is None:
                pkg.warnings.append(f"{path}: member {raw!r} climbs out with '..'; ignored")
            elif not prefix or clean.startswith(prefix):
                picked.append((i, clean))
    modes = _seq(headers.get("filemodes"))
    links = _seq(headers.get("filelinktos"))
    for i, name in picked:
        if prefix and not name.startswith(prefix):
            continue
        mode = modes[i] if i < len(modes) else 0o100644
        if stat.S_ISLNK(mode):
            target = _decode(links[i]) if i < len(links) else ""
            pkg.members.append(Member(name, "link", target))
        elif stat.S_ISDIR(mode):
            pkg.members.append(Member(name, "dir"))
        else:
            pkg.members.append(Member(name, "file"))
    return pkg


# --- Debian ----------------------------------------------------------------------------------

class _Slice(io.RawIOBase):
    """A read-only window [start, start+length) of an open file, for streaming one ar member."""

    def __init__(self, fh, start: int, length: int):
        self.fh, self.pos, self.end = fh, start, start + length

    def readable(self):
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            return 0
        self.fh.seek(self.pos)
        data = self.fh.read(n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _ar_members(fh, path: str, size: int) -> list[tuple[str, int, int]]:
    """(name, data offset, length) of each member of an ar archive (debpkg's parser)."""
    del size  # debpkg checks each member against the file's own size
    try:
        return [(m.name, m.offset, m.size) for m in debpkg.ar_members(fh, path)]
    except StepError as exc:
        raise PackageError(exc.message) from None


def _tar_stream(raw, member: str, path: str):
    """A streaming tarfile over one (possibly compressed) ar member."""
    ext = member.split(".tar", 1)[1].lstrip(".") if ".tar" in member else "?"
    buffered = io.BufferedReader(raw, 1 << 20)
    if ext == "zst":
        import zstandard
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return safetar.open_stream(reader), "zstd"
    mode = {"gz": "r|gz", "xz": "r|xz", "bz2": "r|bz2", "lzma": "r|xz", "": "r|"}.get(ext)
    if mode is None:
        raise PackageError(f"{path}: unsupported Debian member compression {member!r}")
    names = {"gz": "gzip", "xz": "xz", "bz2": "bzip2", "lzma": "lzma"}
    return safetar.open_stream(buffered, mode=mode), names.get(ext)


_CONTROL_LIMIT = 64 << 20


def _read_control(fh, path: str, name: str, start: int, length: int) -> tuple[dict, list | None]:
    """The control fields and the md5sums file list (None when absent) from control.tar.*."""
    if length > _CONTROL_LIMIT:
        raise PackageError(f"{path}: corrupt Debian package: {name} is {length} bytes")
    fields: dict = {}
    md5sums = None
    tf, _ = _tar_stream(_Slice(fh, start, length), name, path)
    with tf:
        for info in tf:
            base = info.name.lstrip("./")
            if base not in ("control", "md5sums") or not info.isfile():
                continue
            text = tf.extractfile(info).read(_CONTROL_LIMIT).decode("utf-8", "replace")
            if base == "control":
                key = None
                for line in text.splitlines():
                    if line[:1] in (" ", "\t") and key:
                        continue
                    k, sep, v = line.partition(":")
                    if sep:
                        key = k.strip()
                        fields[key] = v.strip()
            else:
                md5sums = [line.split(None, 1)[1].strip() for line in text.splitlines()
                           if len(line.split(None, 1)) == 2]
    return fields, md5sums


def _split_debian_version(text: str) -> tuple[int | None, str, str]:
    """[epoch:]upstream[-revision] -> (epoch, upstream, revision)."""
    epoch = None
    if ":" in text:
        e, text = text.split(":", 1)
        epoch = int(e) if e.isdigit() else None
    upstream, sep, revision = text.rpartition("-")
    if not sep:
        return epoch, text, ""
    return epoch, upstream, revision


_DEB_VMLINUX = re.compile(r"/usr/lib/debug/(?:boot/vmlinux-[^/]+|lib/modules/[^/]+/vmlinux)")


def read_deb(path: str, want_build_ids: bool = True) -> Package:
    """A Debian/Ubuntu (debug) package: control fields, member list, kernel build-ids.

    With ``md5sums`` the regular files are known from control.tar alone and
    data.tar is streamed only until every kernel image's ELF notes are read;
    otherwise data.tar is listed in full, streaming (flat memory).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        members = _ar_members(fh, path, size)
        names = [m[0] for m in members]
        if not names or names[0] != "debian-binary":
            raise PackageError(f"{path}: not a Debian package (first member is not debian-binary)")
        control = next((m for m in members if m[0].startswith("control.tar")), None)
        data = next((m for m in members if m[0].startswith("data.tar")), None)
        if control is None or data is None:
            raise PackageError(f"{path}: corrupt Debian package: no control.tar or data.tar member")
        try:
            fields, md5sums = _read_control(fh, path, *control)
        except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
            raise PackageError(f"{path}: corrupt Debian package: {control[0]}: {exc}") from None
        if not fields.get("Package"):
            raise PackageError(f"{path}: corrupt Debian package: control has no Package field")
        epoch, version, revision = _split_debian_version(fields.get("Version", ""))
        pkg = Package(path=path, format="deb", name=fields["Package"], version=version,
                      release=revision, arch=fields.get("Architecture", "all"), epoch=epoch)
        known = set()
        if md5sums is not None:
            for raw in md5sums:
                clean = clean_member(path, raw)
                if clean is None:
                    pkg.warnings.append(f"{path}: member {raw!r} climbs out with '..'; ignored")
                    continue
                known.add(clean)
                pkg.members.append(Member(clean, "file"))
        images = {m.path for m in pkg.members if _DEB_VMLINUX.fullmatch(m.path)}
        try:
            _scan_data(fh, path, data, pkg, known, images if md5sums is not None else None,
                       want_build_ids)
            pkg.file_count = len(md5sums) if md5sums is not None else sum(
                1 for m in pkg.members if m.kind != "dir")
        except (tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
            raise PackageError(f"{path}: corrupt Debian package: {data[0]}: "
                               f"{' '.join(str(exc).split())}") from None
        except OSError as exc:
            if exc.errno is None:  # lzma/bz2 decoder errors
                raise PackageError(f"{path}: corrupt Debian package: {data[0]}: {exc}") from None
            raise
        except Exception as exc:  # zstandard.ZstdError and friends
            if type(exc).__module__.startswith("zstandard"):
                raise PackageError(f"{path}: corrupt Debian package: {data[0]}: {exc}") from None
            raise
    return pkg


def _scan_data(fh, path: str, data: tuple, pkg: Package, known: set, images: set | None,
               want_build_ids: bool) -> None:
    """Stream data.tar: symlinks and (without md5sums) every member; ELF notes of kernel images.

    ``images`` is the set of kernel images already known from md5sums: the
    stream stops as soon as all of them have given their build-id.
    """
    name, start, length = data
    if images is not None and not (images and want_build_ids):
        tf, pkg.payload = _tar_stream(_Slice(fh, start, length), name, path)
        tf.close()
        return
    pending = set(images) if images is not None else None
    tf, pkg.payload = _tar_stream(_Slice(fh, start, length), name, path)
    with tf:
        for info in tf:
            clean = clean_member(path, info.name)
            if clean is None:
                pkg.warnings.append(f"{path}: member {info.name!r} climbs out with '..'; ignored")
                continue
            if info.issym():
                pkg.members.append(Member(clean, "link", info.linkname))
            elif info.islnk():
                target = clean_member(path, info.linkname)
                if clean not in known:
                    pkg.members.append(Member(clean, "file"))
                if target and target in pkg.build_ids:
                    pkg.build_ids[clean] = pkg.build_ids[target]
            elif info.isdir():
                if images is None:
                    pkg.members.append(Member(clean, "dir"))
            elif info.isfile():
                if clean not in known:
                    pkg.members.append(Member(clean, "file"))
                if want_build_ids and _DEB_VMLINUX.fullmatch(clean):
                    build_id = elfnote.build_id(tf.extractfile(info))
                    if build_id:
                        pkg.build_ids[clean] = build_id
                    if pending is not None:
                        pending.discard(clean)
                        if not pending:
                            return


def read_package(path: str) -> Package:
    """Read an RPM or a Debian package, told apart by magic bytes."""
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:4] == RPM_LEAD_MAGIC:
        return read_rpm(path)
    if magic == AR_MAGIC:
        return read_deb(path)
    if not magic:
        raise PackageError(f"{path}: empty file, not a package")
    raise PackageError(f"{path}: not an RPM or Debian package (unknown magic {magic[:4].hex()})")
