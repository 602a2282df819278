"""caslib.magic, the one table of magic bytes, and the readers' thin wrappers over it
(ident._sniff, layers.dump_kind/is_tar/is_zip/is_vmlinux, decompress.sniff,
flattened.is_flattened), on bytes made by the real compressors and archivers."""

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile

import pytest
import zstandard

from caslib import ident, magic
from caslib.dumps import flattened
from caslib.streams import decompress, layers


def _elf(e_type: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", e_type, 62) + bytes(44)


@pytest.mark.parametrize("data, name", [
    (gzip.compress(b"x" * 100), "gzip"),
    (bz2.compress(b"x" * 100), "bzip2"),
    (lzma.compress(b"x" * 100), "xz"),
    (lzma.compress(b"x" * 100, format=lzma.FORMAT_ALONE), "lzma"),
    (zstandard.ZstdCompressor().compress(b"x" * 100), "zstd"),
    (b"\x50\x2a\x4d\x18" + bytes(12), "zstd"),     # a skippable frame first (pzstd)
])
def test_compressors(data, name):
    assert magic.compression(data[:16]) == decompress.sniff(data[:16]) == name
    assert magic.dump_format(data) is None


def test_packed_names_what_is_no_dump_without_guessing_lzma():
    assert magic.packed(gzip.compress(b"x")) == "gzip"
    assert magic.packed(b"\xed\xab\xee\xdb" + bytes(92)) == "an RPM"
    assert magic.packed(lzma.compress(b"x", format=lzma.FORMAT_ALONE)) is None
    assert magic.packed(bytes(16)) is None


@pytest.mark.parametrize("head, fmt, kind", [
    (_elf(magic.ET_CORE), "elf", "elf"),
    (_elf(magic.ET_EXEC), "elf", None),          # a vmlinux is ELF, but no dump
    (b"KDUMP   " + bytes(8), "kdump", "kdump"),
    (b"DISKDUMP" + bytes(8), "diskdump", "diskdump"),
    (b"makedumpfile\0\0\0\0" + bytes(16), "flattened", "flattened"),
    (struct.pack("<Q", 0xA8190173618F23ED) + bytes(8), "lkcd", None),
    (struct.pack(">Q", 0xA8190173618F23FD) + bytes(8), "s390", None),
    (bytes(4096) + b"sadump\0\0", "sadump", None),
    (b"LinuxGuestRecord", "xen", None),
    (b"\x7fELX" + bytes(60), None, None),
])
def test_dump_formats(head, fmt, kind):
    assert magic.dump_format(head) == ident._sniff(head) == fmt
    assert layers.dump_kind(head) == kind
    assert flattened.is_flattened(head) == (fmt == "flattened")


def test_vmlinux_by_name_and_type():
    assert layers.is_vmlinux("boot/vmlinux-6.1", _elf(magic.ET_EXEC))
    assert not layers.is_vmlinux("boot/vmlinuz-6.1", _elf(magic.ET_EXEC))
    assert not layers.is_vmlinux("vmlinux", _elf(magic.ET_CORE))
    assert magic.elf_type(b"\x7fELF\x01\x02\x01" + bytes(9) + struct.pack(">H", 4)) == 4


def test_archives():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    assert layers.is_tar(buf.getvalue()) and magic.archive(buf.getvalue()) == "tar"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a", b"x")
    assert layers.is_zip(buf.getvalue()) and not layers.is_tar(buf.getvalue())
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    assert layers.is_zip(empty.getvalue())
