"""Peel compression and archive layers off an incoming dump, by magic bytes only.

Why: customers send ``vmcore.12345.tar.bz2``, ``vmcore.zst``, zips, and now
and then a file compressed twice; file names lie, magic bytes do not.  Each
layer is recognised from the first bytes of the stream (doc/formats.md
section 7: gzip, bzip2, xz, lzma-alone, zstd; tar by ``ustar`` at byte
257; zip by ``PK\\3\\4``) and removed while streaming, until a raw file is left.

Archives: the member whose own first bytes are a kernel dump (ELF
``ET_CORE``, ``KDUMP   ``, ``DISKDUMP``, flattened ``makedumpfile``) wins,
else the largest regular file; the choice is logged.  Member names are
never used as paths (the core gets our own name), and an archive with an
absolute name, a ``..`` component, a link that leads out, or a device file
is refused as a whole: someone built it to write outside a directory.

Tar is read as a stream (``tarfile`` mode ``r|``) on top of the
decompressor, in one pass.  Zip needs its central directory at the end, so
a compressed or downloaded zip is first spooled into the job directory
(sparse, removed afterwards); a local plain zip is read in place.

A compression layer whose bytes sit at a known range of a seekable file (the
local input, a member of a plain tar, a stored zip member) may be decoded on
every core (``caslib.streams.parallel``); anything else is decoded on one thread.
"""

import os
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

from caslib.streams import decompress, headfirst, parallel, procdecode, safetar
from caslib.streams.peekable import Peekable, Tracking
from caslib.dumps import kdumpdir, splitdump
from caslib import magic, pathsafety
from caslib.records import StepError

HEAD = 4096 + 8      # enough for every dump magic (sadump sits at 4096) and the tar header
MAX_LAYERS = 8       # a zip quine or a bomb of nested layers stops here
TAR_BUFSIZE = 1 << 20


def dump_kind(head: bytes) -> str | None:
    """The kernel dump format whose magic starts ``head`` (ELF only as ``ET_CORE``), among
    elf, kdump, diskdump, flattened; else None."""
    fmt = magic.dump_format(head)
    if fmt == "elf":
        return "elf" if magic.elf_type(head) == magic.ET_CORE else None
    return fmt if fmt in ("kdump", "diskdump", "flattened") else None


def is_vmlinux(name: str, head: bytes) -> bool:
    """An ELF executable named ``vmlinux*`` (not a core, not ``vmlinuz``)."""
    return (posixpath.basename(name).startswith("vmlinux")
            and magic.elf_type(head) == magic.ET_EXEC)


def is_tar(head: bytes) -> bool:
    """POSIX ustar or GNU tar header (``ustar`` at byte 257)."""
    return magic.archive(head) == "tar"


def is_zip(head: bytes) -> bool:
    """A local file header, or the end record of an empty zip."""
    return magic.archive(head) == "zip"


@dataclass
class Candidate:
    """One file written into the job directory, and how it was reached."""

    path: str
    size: int
    layers: list = field(default_factory=list)
    member: str | None = None
    kind: str | None = None   # dump format by magic, None for "just a file"
    split: bool | None = None  # a part of a makedumpfile --split dump (None: not asked yet)

    def rank(self):
        return (self.kind is not None, self.size)


class Peeler:
    """Turns one input stream into one raw file in the job directory.

    ``out`` writes streams into the job directory: ``out.write(stream,
    size_hint)`` returns ``(path, size)`` of a new partial file,
    ``out.discard(path)`` removes one.
    """

    def __init__(self, out, log, name: str, local_path: str | None = None,
                 fd: int | None = None):
        self.out = out
        self.log = log
        self.name = name
        self.local_path = local_path
        self.fd = fd             # the local input, for reading compressed ranges with pread
        self.depth = 0
        self.opened = []         # parallel readers, closed when peeling ends
        self.vmlinux: Candidate | None = None  # a ``vmlinux`` ELF member, kept (see tar())
        self.parts: list = []     # further parts of a split dump, kept beside the best
        self.side: dict = {}      # kdump directory text files kept: record key -> Candidate

    def where(self, member: str | None) -> str:
        return f"{self.name}: member {member!r}" if member else self.name

    def peel(self, raw, size_hint: int | None = None) -> Candidate:
        """Peel ``raw`` (a binary stream over the whole input) down to one raw file."""
        origin, self.counter = None, raw
        if self.fd is not None and size_hint:
            origin = parallel.Origin(self.fd, 0, size_hint)
        try:
            stream, layers = self.strip(Peekable(raw, origin), [], None)
            cand = self.rest(stream, layers, None, size_hint if not layers else None)
        finally:
            self._close_from(0)
        return cand

    def _open(self, stream: Peekable, codec: str, label: str, layers: list, member, quiet):
        """The decoder for one layer: on every core when its bytes can be read by offset."""
        if not quiet and codec in ("xz", "zstd", "bzip2", "gzip", "lzma"):
            outer = [layer for layer in layers[:-1] if layer not in ("tar", "zip")]
            why = ("inside another compressed layer" if outer else
                   "an archive member that is not at a fixed offset" if member else
                   "the input is a pipe or download, not a seekable file")
            reader = parallel.open_reader(stream.origin, codec, label, self.log, why)
            if reader is not None:
                reader = headfirst.Deferred(reader, stream.origin, codec, label, self.log)
                self.opened.append(reader)
                if len(layers) == 1 and member is None and hasattr(self.counter, "pos"):
                    return Tracking(reader, self.counter)
                return reader
        return decompress.open_reader(stream, codec, label)

    def strip(self, stream: Peekable, layers: list, member, quiet=False):
        """Remove compression layers; returns the inner stream and the layers so far."""
        layers = list(layers)
        while True:
            codec = decompress.sniff(stream.peek(16))
            if codec is None:
                return stream, layers
            if len(layers) >= MAX_LAYERS:
                raise StepError(f"{self.where(member)}: more than {MAX_LAYERS} layers, giving up",
                                "too-deep")
            layers.append(codec)
            if not quiet:
                self.log.info("%s: peeling %s layer %d", self.where(member), codec, len(layers))
            label = f"{self.where(member)} ({'+'.join(layers)})"
            stream = Peekable(self._open(stream, codec, label, layers, member, quiet))

    def rest(self, stream: Peekable, layers: list, member, size_hint=None) -> Candidate | None:
        """After compression: an archive to open, or the raw file to write."""
        head = stream.peek(HEAD)
        if not head:
            if member is not None:
                return None
            if layers:
                raise StepError(f"{self.name}: decompresses to nothing ({'+'.join(layers)})",
                                "empty")
            raise StepError(f"{self.name}: empty file", "empty")
        if is_tar(head) or is_zip(head):
            if len(layers) >= MAX_LAYERS:
                raise StepError(f"{self.where(member)}: more than {MAX_LAYERS} layers, giving up",
                                "too-deep")
            if is_tar(head):
                return self.tar(stream, layers + ["tar"], member)
            plain = not layers and member is None
            return self.zip(stream, layers + ["zip"], member, plain)
        kind = dump_kind(head)
        deferred = headfirst.deferred_in(stream)
        if deferred is not None:   # the layer's pieces go straight into the core, by process
            whole = deferred.origin.start == 0   # offsets in the layer are offsets in the input
            path, size = procdecode.write_core(self.out, deferred, size_hint,
                                               lambda pos: self._progress(pos, whole))
        else:
            path, size = self.out.write(stream, size_hint)
        return Candidate(path, size, layers, member, kind)

    def _progress(self, compressed_pos: int, whole: bool) -> None:
        if whole and hasattr(self.counter, "pos"):
            self.counter.pos = max(self.counter.pos, compressed_pos)
        if getattr(self.out, "tick", None):
            self.out.tick()

    # -- tar ---------------------------------------------------------------

    def tar(self, stream: Peekable, layers: list, outer) -> Candidate:
        where = self.where(outer)
        self.log.info("%s: reading tar archive", where)
        best = None
        try:
            archive = safetar.open_stream(stream, TAR_BUFSIZE)
            for m in archive:
                self._check_tar(m, where)
                if m.isreg() and m.size > 0:
                    best = self._tar_member(archive, m, stream, layers, outer, best)
        except safetar.UnsafeTar as exc:
            self._drop(best)
            raise StepError(f"{where}: unsafe tar header: {exc.message}", "unsafe") from None
        except tarfile.TarError as exc:
            self._drop(best)
            raise StepError(f"{where}: corrupt or truncated tar archive: {exc}", "corrupt") from None
        except BaseException:
            self._drop(best)
            raise
        if best is None:
            raise StepError(f"{where}: tar archive holds no regular file", "no-core")
        self._log_choice(where, best)
        return best

    def _check_tar(self, m, where: str) -> None:
        pathsafety.check_tar_member(m, where)
        limit = getattr(self.out, "max_size", None)
        if m.issparse() and limit and m.size > limit:
            raise StepError(f"{where}: sparse member {m.name!r} declares {m.size:,} "
                            f"bytes, more than maxCoreSize {limit:,}", "unsafe")

    def _tar_member(self, archive, m, stream: Peekable, layers: list, outer,
                    best: Candidate | None) -> Candidate | None:
        """One regular member: a side file, a further split part, the customer's vmlinux,
        or a candidate for the core; returns the best candidate so far."""
        where = self.where(outer)
        member = m.name if outer is None else f"{outer}/{m.name}"
        opened, origin = len(self.opened), None
        if stream.origin is not None and m.sparse is None:
            at = stream.origin.start + m.offset_data
            origin = parallel.Origin(stream.origin.fd, at, at + m.size)
        raw = Peekable(archive.extractfile(m), origin)  # a stream: read once, peeked at
        if self._side_file(raw, m, layers, member):
            self._close_from(opened)
            return best
        inner = None
        if best is not None and best.kind == "kdump" and self._is_split(best):
            inner, ls = self.strip(raw, layers, member, quiet=True)
            if self._split_part(inner, ls, m, layers, member):
                self._close_from(opened)
                return best
        if best is not None and best.kind and (
                self.vmlinux or not posixpath.basename(m.name).startswith("vmlinux")):
            self.log.info("%s: ignoring member %r (%s bytes): already have a dump",
                          where, m.name, f"{m.size:,}")
            self._close_from(opened)
            return best
        if inner is None:
            inner, ls = self.strip(raw, layers, member)
        head = inner.peek(HEAD)
        if self.vmlinux is None and is_vmlinux(m.name, head):
            self._keep_vmlinux(inner, ls, member, m.size, where)
            self._close_from(opened)
            return best
        if (best is not None and len(ls) == len(layers) and not dump_kind(head)
                and not is_tar(head) and not is_zip(head) and m.size <= best.size):
            self.log.info("%s: skipping member %r (%s bytes): not a dump, not the "
                          "largest", where, m.name, f"{m.size:,}")
            return best
        cand = self.rest(inner, ls, member, m.size if len(ls) == len(layers) else None)
        self._close_from(opened)   # this member's decoder threads end here
        return self._keep_better(best, cand)

    # -- zip ---------------------------------------------------------------

    def zip(self, stream: Peekable, layers: list, outer, plain: bool) -> Candidate:
        where = self.where(outer)
        spool = None
        if plain and self.local_path:
            path = self.local_path
            self.log.info("%s: reading zip archive in place", where)
        else:  # zip needs to seek to its central directory: spool it into the job directory
            self.log.info("%s: spooling zip archive into the job directory to read it", where)
            spool, _ = self.out.write(stream, None)
            path = spool
        best = None
        fd = self.fd if path == self.local_path and self.fd is not None else os.open(path, os.O_RDONLY)
        try:
            with zipfile.ZipFile(path) as archive:
                best = self._zip_choose(archive, layers, outer, where, fd)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
                ValueError) as exc:
            self._drop(best)
            raise StepError(f"{where}: corrupt or unreadable zip archive: {exc}",
                            "corrupt") from None
        except BaseException:
            self._drop(best)
            raise
        finally:
            if fd != self.fd:
                os.close(fd)
            if spool:
                self.out.discard(spool)
        self._log_choice(where, best)
        return best

    def _zip_choose(self, archive, layers, outer, where, fd) -> Candidate:
        files = []
        for info in archive.infolist():
            mode = info.external_attr >> 16
            target = None
            if stat.S_ISLNK(mode):
                with archive.open(info) as fh:
                    target = fh.read(4096).decode("utf-8", "replace")
            pathsafety.check_zip_member(info.filename, mode, target, where)
            if not info.is_dir() and target is None and info.file_size > 0:
                files.append(info)
        for info in [i for i in files if posixpath.basename(i.filename).startswith("vmlinux")]:
            with archive.open(info) as fh:
                inner, ls = self.strip(Peekable(fh), layers, info.filename, quiet=True)
                if self.vmlinux is None and is_vmlinux(info.filename, inner.peek(HEAD)):
                    member = info.filename if outer is None else f"{outer}/{info.filename}"
                    self._keep_vmlinux(inner, ls, member, info.file_size, where)
                    files.remove(info)
        if not files:
            raise StepError(f"{where}: zip archive holds no regular file", "no-core")
        chosen, kind = None, None
        for info in files:
            with archive.open(info) as fh:
                inner, _ = self.strip(Peekable(fh), layers, info.filename, quiet=True)
                kind = dump_kind(inner.peek(HEAD))
            if kind:
                chosen = info
                break
        if chosen is None:
            chosen = max(files, key=lambda i: i.file_size)  # max keeps the first of equals
        member = chosen.filename if outer is None else f"{outer}/{chosen.filename}"
        with archive.open(chosen) as fh:
            inner, ls = self.strip(Peekable(fh, stored_origin(fd, chosen)), layers, member)
            cand = self.rest(inner, ls, member, chosen.file_size if ls == layers else None)
        if cand is None:
            raise StepError(f"{where}: member {chosen.filename!r} is empty", "no-core")
        split = cand.kind == "kdump" and self._is_split(cand)
        for info in files:
            if info is chosen or self._zip_extra(archive, info, layers, outer, split):
                continue
            self.log.info("%s: skipping member %r (%s bytes)", where, info.filename,
                          f"{info.file_size:,}")
        return cand

    def _zip_extra(self, archive, info, layers, outer, split: bool) -> bool:
        """Keep a zip member beside the chosen dump: another part of its split set, or a
        kdump directory's ``vmcore-dmesg.txt`` (as ``tar`` does)."""
        member = info.filename if outer is None else f"{outer}/{info.filename}"
        m = SimpleNamespace(name=info.filename, size=info.file_size)
        opened = len(self.opened)
        try:
            with archive.open(info) as fh:
                raw = Peekable(fh)
                if self._side_file(raw, m, layers, member):
                    return True
                if not split:
                    return False
                inner, ls = self.strip(raw, layers, member, quiet=True)
                return self._split_part(inner, ls, m, layers, member)
        finally:
            self._close_from(opened)

    # -- kdump directories: split parts and vmcore-dmesg.txt -----------------

    def _side_file(self, stream, m, layers, member) -> bool:
        """Keep a kdump directory's ``vmcore-dmesg.txt`` (named so, and text) beside the dump."""
        key = kdumpdir.SIDE_FILES.get(posixpath.basename(m.name))
        if key is None or key in self.side or m.size > kdumpdir.MAX_SIDE:
            return False
        if not kdumpdir.is_text(stream.peek(HEAD)):
            return False
        path, size = self.out.write(stream, m.size)
        self.side[key] = Candidate(path, size, list(layers), member, None)
        self.log.info("%s: keeping member %r (%s bytes) as %s", self.name, m.name,
                      f"{size:,}", key)
        return True

    def _is_split(self, best) -> bool:
        if getattr(best, "split", None) is None:
            best.split = splitdump.part_info(best.path) is not None
        return best.split

    def _split_part(self, inner, ls, m, layers, member) -> bool:
        """Keep another part of the split dump the best member is a part of."""
        if not splitdump.is_part_head(inner.peek(splitdump.PEEK)):
            return False
        cand = self.rest(inner, ls, member, m.size if len(ls) == len(layers) else None)
        if cand is not None:
            self.parts.append(cand)
            self.log.info("%s: keeping member %r (%s bytes): another part of the split dump",
                          self.name, m.name, f"{cand.size:,}")
        return True

    # -- helpers -------------------------------------------------------------

    def _close_from(self, n: int) -> None:
        while len(self.opened) > n:
            self.opened.pop().close()

    def _keep_vmlinux(self, stream, layers, member, size_hint, where) -> None:
        """The customer sent the kernel too: kept aside (``self.vmlinux``); cas-findkernel
        uses it when its build-id is the dump's."""
        path, size = self.out.write(stream, size_hint)
        self.vmlinux = Candidate(path, size, layers, member, None)
        self.log.info("%s: keeping member %r (%s bytes): a vmlinux", where, member, f"{size:,}")

    def _keep_better(self, best, cand):
        if cand is None:
            return best
        if best is None or cand.rank() > best.rank():
            if best is not None:
                self.log.info("%s: not used: member %r (%s bytes)", self.name, best.member,
                              f"{best.size:,}")
            self._drop(best)
            return cand
        self.out.discard(cand.path)
        return best

    def _drop(self, cand):
        if cand is not None:
            self.out.discard(cand.path)

    def _log_choice(self, where, best: Candidate):
        why = f"{best.kind} dump by magic" if best.kind else "largest regular file, no dump magic"
        self.log.info("%s: chose member %r (%s bytes): %s", where, best.member,
                      f"{best.size:,}", why)


def stored_origin(fd: int, info: zipfile.ZipInfo) -> parallel.Origin | None:
    """Where a stored (uncompressed, unencrypted) zip member's bytes are, from its local header."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
        return None
    head = os.pread(fd, 30, info.header_offset)
    if len(head) < 30 or head[:4] != magic.ZIP_LOCAL:
        return None
    name_len, extra_len = struct.unpack_from("<HH", head, 26)
    start = info.header_offset + 30 + name_len + extra_len
    return parallel.Origin(fd, start, start + info.compress_size)
