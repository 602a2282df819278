"""Debian ``.deb``/``.ddeb`` packages read in one forward pass, standard library only.

A .deb is an ar archive (``!<arch>\\n``, then 60-byte member headers: name
16, mtime 12, uid 6, gid 6, mode 8, size 10, ``\\x60\\n``; data padded to an
even offset; man 5 deb, man 5 ar) holding ``debian-binary``,
``control.tar[.gz|.xz|.zst]`` and ``data.tar[.gz|.xz|.zst|.bz2|.lzma]``, in
that order.  The control tarball comes first and is small; its ``md5sums``
gives the digest of each regular file, so data.tar members can be checked
as they stream past.  data.tar is read with tarfile's stream mode (``r|``)
on a ``decompress`` reader: flat memory, one pass.
"""

import os
import tarfile
from dataclasses import dataclass

from caslib.streams import decompress, safetar
from caslib.records import StepError

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
_SUFFIX_CODEC = {"": None, ".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".bz2": "bzip2",
                 ".lzma": "lzma"}


@dataclass
class ArMember:
    name: str
    size: int
    offset: int   # of the data, in the file


def ar_members(fh, path: str):
    """Yield the members of the ar archive open in ``fh``, positioned at each one's data.

    The caller may read part of a member; the next iteration seeks forward to
    the following header.
    """
    if fh.read(8) != AR_MAGIC:
        raise StepError(f"{path}: not a Debian package (no ar archive magic)", "corrupt")
    total = os.fstat(fh.fileno()).st_size
    pos = 8
    while True:
        fh.seek(pos)
        head = fh.read(AR_HEADER)
        if not head:
            return
        if len(head) < AR_HEADER or head[58:60] != b"`\n":
            raise StepError(f"{path}: corrupt Debian package: bad ar member header at byte "
                            f"{pos:,}", "corrupt")
        name = head[:16].decode("ascii", "replace").rstrip()
        if name.endswith("/") and name != "/":  # GNU ar style
            name = name[:-1]
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise StepError(f"{path}: corrupt Debian package: bad ar member size at byte "
                            f"{pos:,}", "corrupt") from None
        start = pos + AR_HEADER
        if start + size > total:
            raise StepError(f"{path}: truncated Debian package: ar member {name} needs {size:,} bytes at "
                            f"{start:,}, the file has {total:,}", "truncated")
        yield ArMember(name, size, start)
        pos = start + size + (size & 1)


def codec_of(member_name: str, prefix: str, path: str) -> str | None:
    suffix = member_name[len(prefix):]
    if suffix not in _SUFFIX_CODEC:
        raise StepError(f"{path}: unsupported {member_name} compression {suffix!r}", "unsupported")
    return _SUFFIX_CODEC[suffix]


def open_stream(fh, member: ArMember, prefix: str, path: str):
    """(decompressed reader, progress) for a control.tar* or data.tar* member.

    ``progress.compressed_pos`` is how far into the member decoding has read.
    """
    raw = decompress.Slice(fh, member.size)
    codec = codec_of(member.name, prefix, path)
    name = f"{path}:{member.name}"
    if codec == "xz" and prefix == "data.tar":  # dpkg-deb uses xz -T: decode likewise
        from caslib.streams.xzblocks import ParallelXz
        reader = ParallelXz(fh.fileno(), member.offset, member.offset + member.size, name)
        return reader, reader
    if codec is None:
        return raw, raw
    return decompress.open_reader(raw, codec, name), raw


def read_md5sums(reader, path: str) -> dict:
    """``{"/usr/...": md5hex}`` from a control tarball stream (empty without md5sums)."""
    out = {}
    try:
        with safetar.open_stream(reader) as tf:
            for m in tf:
                if m.isfile() and m.name.lstrip("./") == "md5sums":
                    fh = tf.extractfile(m)
                    for line in fh.read().decode("utf-8", "surrogateescape").splitlines():
                        digest, _, name = line.partition("  ")
                        if len(digest) == 32 and name:
                            out["/" + name.lstrip("./").lstrip("/")] = digest.lower()
    except tarfile.TarError as exc:
        raise StepError(f"{path}: corrupt control tarball: {exc}", "corrupt") from None
    return out


class Package:
    """An open .deb: ``md5sums`` after ``open()``, then ``data_members()`` once."""

    def __init__(self, path: str, fh):
        self.path, self.fh = path, fh
        self.md5sums: dict = {}
        self.raw = None
        self._members = ar_members(fh, path)
        self._data = None
        for m in self._members:
            if m.name.startswith("control.tar"):
                reader, _ = open_stream(fh, m, "control.tar", path)
                self.md5sums = read_md5sums(reader, path)
            elif m.name.startswith("data.tar"):
                self._data = m
                break
        if self._data is None:
            raise StepError(f"{path}: Debian package has no data.tar member", "corrupt")

    def data_stream(self):
        self.fh.seek(self._data.offset)
        reader, self.raw = open_stream(self.fh, self._data, "data.tar", self.path)
        return reader

    @property
    def raw_total(self) -> int:
        return self._data.offset + self._data.size

    @property
    def raw_done(self) -> int:
        if self.raw is None:
            return self._data.offset
        return self._data.offset + self.raw.compressed_pos


def tar_entries(reader, path: str):
    """Yield ``(tarinfo, fileobj-or-None)`` from a data tarball stream, in order."""
    try:
        tf = safetar.open_stream(reader, 1 << 20)
        for m in tf:
            yield m, (tf.extractfile(m) if m.isreg() else None)
    except safetar.UnsafeTar as exc:
        raise StepError(f"{path}: unsafe data tarball header: {exc.message}", "unsafe") from None
    except tarfile.ReadError as exc:
        text = str(exc)
        kind = "truncated" if "unexpected end" in text else "corrupt"
        raise StepError(f"{path}: {'truncated' if kind == 'truncated' else 'corrupt'} data "
                        f"tarball: {text}", kind) from None
    except tarfile.TarError as exc:
        raise StepError(f"{path}: corrupt data tarball: {exc}", "corrupt") from None
