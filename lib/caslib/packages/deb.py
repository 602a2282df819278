"""Debian ``.deb``/``.ddeb`` packages, read in one forward pass, for the index and for cas-extract.

A .deb is an ar archive (``!<arch>\\n``, then 60-byte member headers: name 16,
mtime 12, uid 6, gid 6, mode 8, size 10, ``\\x60\\n``; data padded to an even
offset; man 5 deb, man 5 ar) holding ``debian-binary``,
``control.tar[.gz|.xz|.zst]`` and ``data.tar[.gz|.xz|.zst|.bz2|.lzma]``, in
that order.  The control tarball is small: its ``control`` names the package,
its ``md5sums`` lists every regular file with its digest, so the index need not
list data.tar and extraction checks each member as it streams past.  data.tar
is read with tarfile's stream mode on a ``decompress`` reader: flat memory, one
pass, and the index stops as soon as the kernel image's ELF notes gave its
build-id.

  read(path) -> read.Package        the index's view (control fields, members, build-ids)
  Archive(path, fh)                 cas-extract's view: ``md5sums``, then ``data_stream()``
  tar_entries(reader, path)         (tarinfo, fileobj) of a tarball stream, errors as FormatError
"""

import os
import re
import tarfile
from dataclasses import dataclass, field

from caslib import magic
from caslib.dumps import elfnote
from caslib.errors import KINDS, FormatError
from caslib.packages.read import Member, Package
from caslib.pathsafety import package_path
from caslib.records import StepError
from caslib.streams import decompress, safetar

AR_HEADER = 60
_SUFFIX_CODEC = {"": None, ".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".bz2": "bzip2",
                 ".lzma": "lzma"}
_CONTROL_LIMIT = 64 << 20
_VMLINUX = re.compile(r"/usr/lib/debug/(?:boot/vmlinux-[^/]+|lib/modules/[^/]+/vmlinux)")


@dataclass
class ArMember:
    """One member of the ar archive: its name and where its data lies in the file."""

    name: str
    size: int
    offset: int   # of the data, in the file


def ar_members(fh, path: str):
    """Yield the members of the ar archive open in ``fh``, each checked against the file size.

    The caller may read part of a member; the next iteration seeks forward to
    the following header.
    """
    if fh.read(8) != magic.AR:
        raise FormatError(f"{path}: not a Debian package (no ar archive magic)")
    total = os.fstat(fh.fileno()).st_size
    pos = 8
    while True:
        fh.seek(pos)
        head = fh.read(AR_HEADER)
        if not head:
            return
        if len(head) < AR_HEADER or head[58:60] != b"`\n":
            raise FormatError(f"{path}: corrupt Debian package: bad ar member header at byte "
                              f"{pos:,}")
        name = head[:16].decode("ascii", "replace").rstrip()
        if name.endswith("/") and name != "/":  # GNU ar style
            name = name[:-1]
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise FormatError(f"{path}: corrupt Debian package: bad ar member size at byte "
                              f"{pos:,}") from None
        start = pos + AR_HEADER
        if start + size > total:
            raise FormatError(f"{path}: truncated Debian package: ar member {name} needs "
                              f"{size:,} bytes at {start:,}, the file has {total:,}", "truncated")
        yield ArMember(name, size, start)
        pos = start + size + (size & 1)


def codec_of(member_name: str, prefix: str, path: str) -> str | None:
    """The decompress codec of ``control.tar.xz`` and the like, by suffix (None: plain tar)."""
    suffix = member_name[len(prefix):]
    if suffix not in _SUFFIX_CODEC:
        raise FormatError(f"{path}: unsupported {member_name} compression {suffix!r}",
                          "unsupported")
    return _SUFFIX_CODEC[suffix]


def open_stream(fh, member: ArMember, prefix: str, path: str, parallel: bool = True):
    """(decompressed reader, progress) for a control.tar* or data.tar* member.

    ``progress.compressed_pos`` is how far into the member decoding has read.
    ``parallel``: an xz data.tar decodes on every core (dpkg-deb writes it with xz -T).
    """
    fh.seek(member.offset)
    raw = decompress.Slice(fh, member.size)
    codec = codec_of(member.name, prefix, path)
    name = f"{path}:{member.name}"
    if codec == "xz" and prefix == "data.tar" and parallel:
        from caslib.streams.xzblocks import ParallelXz
        reader = ParallelXz(fh.fileno(), member.offset, member.offset + member.size, name)
        return reader, reader
    if codec is None:
        return raw, raw
    return decompress.open_reader(raw, codec, name), raw


def tar_entries(reader, path: str, bufsize: int = 1 << 20):
    """Yield ``(tarinfo, fileobj-or-None)`` from a tarball stream, in order.

    ``bufsize``: extraction reads whole files (1 MiB); the index stops early (a record).
    """
    try:
        tf = safetar.open_stream(reader, bufsize)
        for m in tf:
            yield m, (tf.extractfile(m) if m.isreg() else None)
    except safetar.UnsafeTar as exc:
        raise FormatError(f"{path}: unsafe tarball header: {exc.message}", "unsafe") from None
    except tarfile.ReadError as exc:
        text = str(exc)
        kind = "truncated" if "unexpected end" in text else "corrupt"
        raise FormatError(f"{path}: {kind} tarball: {text}", kind) from None
    except (tarfile.TarError, EOFError) as exc:
        raise FormatError(f"{path}: corrupt tarball: {exc}") from None
    except StepError as exc:  # the decompressor's truncated/corrupt
        if isinstance(exc, FormatError):
            raise
        raise FormatError(exc.message, exc.kind if exc.kind in KINDS else "corrupt") from None


@dataclass
class Control:
    """What control.tar says: the control fields, and md5sums as package path -> md5 (None
    for a line whose digest is not one); ``md5sums`` is None when the file is absent."""

    fields: dict = field(default_factory=dict)
    md5sums: dict | None = None
    climbing: list = field(default_factory=list)  # md5sums names that climb out


def read_control(reader, path: str) -> Control:
    """``control`` and ``md5sums`` from a control.tar stream (each read up to 64 MiB)."""
    out = Control()
    for info, fobj in tar_entries(reader, f"{path}: control.tar", tarfile.RECORDSIZE):
        base = package_path(info.name)
        if base not in ("/control", "/md5sums") or fobj is None:
            continue
        text = fobj.read(_CONTROL_LIMIT).decode("utf-8", "surrogateescape")
        if base == "/control":
            out.fields = _fields(text)
        else:
            out.md5sums = _md5sums(text, out.climbing)
    return out


def _fields(text: str) -> dict:
    fields, key = {}, None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip()
            fields[key] = v.strip()
    return fields


def _md5sums(text: str, climbing: list) -> dict:
    out = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        digest, name = parts[0], parts[1].strip()
        clean = package_path(name)
        if clean is None:
            climbing.append(name)
            continue
        out[clean] = digest.lower() if len(digest) == 32 else None
    return out


# --- the index's view --------------------------------------------------------------------

def _split_version(text: str) -> tuple[int | None, str, str]:
    """[epoch:]upstream[-revision] -> (epoch, upstream, revision)."""
    epoch = None
    if ":" in text:
        e, text = text.split(":", 1)
        epoch = int(e) if e.isdigit() else None
    upstream, sep, revision = text.rpartition("-")
    if not sep:
        return epoch, text, ""
    return epoch, upstream, revision


def _parts(fh, path: str) -> tuple[ArMember, ArMember]:
    members = list(ar_members(fh, path))
    if not members or members[0].name != "debian-binary":
        raise FormatError(f"{path}: not a Debian package (first member is not debian-binary)")
    control = next((m for m in members if m.name.startswith("control.tar")), None)
    data = next((m for m in members if m.name.startswith("data.tar")), None)
    if control is None or data is None:
        raise FormatError(f"{path}: corrupt Debian package: no control.tar or data.tar member")
    if control.size > _CONTROL_LIMIT:
        raise FormatError(f"{path}: corrupt Debian package: {control.name} is "
                          f"{control.size} bytes")
    return control, data


def read(path: str, want_build_ids: bool = True) -> Package:
    """A Debian/Ubuntu (debug) package: control fields, member list, kernel build-ids.

    With ``md5sums`` the regular files are known from control.tar alone and
    data.tar is streamed only until every kernel image's ELF notes are read;
    otherwise data.tar is listed in full, streaming (flat memory).
    """
    with open(path, "rb") as fh:
        control, data = _parts(fh, path)
        ctl = read_control(open_stream(fh, control, "control.tar", path)[0], path)
        if not ctl.fields.get("Package"):
            raise FormatError(f"{path}: corrupt Debian package: control has no Package field")
        epoch, version, revision = _split_version(ctl.fields.get("Version", ""))
        pkg = Package(path=path, format="deb", name=ctl.fields["Package"], version=version,
                      release=revision, arch=ctl.fields.get("Architecture", "all"),
                      epoch=epoch, payload=codec_of(data.name, "data.tar", path))
        for name in ctl.climbing:
            pkg.climbs_out(name)
        known = set(ctl.md5sums or ())
        pkg.members = [Member(name, "file") for name in ctl.md5sums or ()]
        images = {m for m in known if _VMLINUX.fullmatch(m)} if ctl.md5sums is not None else None
        _scan_data(fh, path, data, pkg, known, images, want_build_ids)
        pkg.file_count = len(ctl.md5sums) if ctl.md5sums is not None else sum(
            1 for m in pkg.members if m.kind != "dir")
    return pkg


def _scan_data(fh, path: str, data: ArMember, pkg: Package, known: set, images: set | None,
               want_build_ids: bool) -> None:
    """Stream data.tar: symlinks and (without md5sums) every member; ELF notes of kernel images.

    ``images`` is the set of kernel images already known from md5sums: the
    stream stops as soon as all of them have given their build-id.
    """
    entries = tar_entries(open_stream(fh, data, "data.tar", path, parallel=False)[0],
                          f"{path}: {data.name}", tarfile.RECORDSIZE)
    if images is not None and not (images and want_build_ids):
        next(entries, None)  # only check that data.tar opens
        return
    pending = set(images) if images is not None else None
    for info, fobj in entries:
        clean = package_path(info.name)
        if clean is None:
            pkg.climbs_out(info.name)
            continue
        _note(pkg, info, clean, known, listing=images is None)
        if fobj is not None and want_build_ids and _VMLINUX.fullmatch(clean):
            build_id = elfnote.build_id(fobj)
            if build_id:
                pkg.build_ids[clean] = build_id
            if pending is not None:
                pending.discard(clean)
                if not pending:
                    return


def _note(pkg: Package, info, clean: str, known: set, listing: bool) -> None:
    """Add a data.tar entry to the members: links always, directories when listing all."""
    if info.issym():
        pkg.members.append(Member(clean, "link", info.linkname))
    elif info.islnk():
        if clean not in known:
            pkg.members.append(Member(clean, "file"))
        target = package_path(info.linkname)
        if target and target in pkg.build_ids:
            pkg.build_ids[clean] = pkg.build_ids[target]
    elif info.isdir():
        if listing:
            pkg.members.append(Member(clean, "dir"))
    elif info.isfile() and clean not in known:
        pkg.members.append(Member(clean, "file"))


# --- cas-extract's view ------------------------------------------------------------------

class Archive:
    """An open .deb: ``md5sums`` (package path -> md5) on creation, then ``data_stream()``."""

    def __init__(self, path: str, fh):
        self.path, self.fh = path, fh
        self.md5sums: dict = {}
        self.raw = None
        self._data = None
        for m in ar_members(fh, path):
            if m.name.startswith("control.tar"):
                reader, _ = open_stream(fh, m, "control.tar", path)
                self.md5sums = read_control(reader, path).md5sums or {}
            elif m.name.startswith("data.tar"):
                self._data = m
                break
        if self._data is None:
            raise FormatError(f"{path}: Debian package has no data.tar member")

    def data_stream(self):
        reader, self.raw = open_stream(self.fh, self._data, "data.tar", self.path)
        return reader

    @property
    def raw_done(self) -> int:
        if self.raw is None:
            return self._data.offset
        return self._data.offset + self.raw.compressed_pos
