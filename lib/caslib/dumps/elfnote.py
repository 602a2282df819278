"""ELF notes: the one parser of a PT_NOTE segment, and the GNU build-id of an ELF stream.

``parse_notes`` serves the dump readers (elfcore: VMCOREINFO, PRSTATUS) and
``build_id`` below.  Why ``build_id`` reads forwards: a Debian debug package's vmlinux sits inside a compressed data.tar that
can only be read forwards; its build-id note lies in the first tens of
megabytes, so the index reads up to the PT_NOTE segments and stops there
instead of decompressing the whole image.  Same layout as ``readelf -n``.
"""

import struct
from collections import namedtuple

from caslib import magic

NT_GNU_BUILD_ID = 3
PT_NOTE = 4
_MAX_PHDRS = 4096
_MAX_NOTE = 1 << 20

Note = namedtuple("Note", "name type desc")


class _Forward:
    """Read an ELF stream by absolute offsets that only go forwards."""

    def __init__(self, stream):
        self.stream, self.pos = stream, 0

    def read_at(self, offset: int, n: int) -> bytes:
        if offset < self.pos:
            return b""
        while self.pos < offset:
            chunk = self.stream.read(min(offset - self.pos, 1 << 20))
            if not chunk:
                return b""
            self.pos += len(chunk)
        data = self.stream.read(n)
        self.pos += len(data)
        return data


def build_id(stream) -> str | None:
    """Hex build-id from the notes of the ELF file ``stream`` (read forwards); None if absent."""
    f = _Forward(stream)
    ident = f.read_at(0, 64)
    if len(ident) < 52 or ident[:4] != magic.ELF:
        return None
    bits, endian = ident[4], {1: "<", 2: ">"}.get(ident[5])
    if endian is None or bits not in (1, 2):
        return None
    if bits == 2:
        phoff, = struct.unpack_from(endian + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", ident, 54)
        layout, need = endian + "IIQQQQQQ", 56
    else:
        phoff, = struct.unpack_from(endian + "I", ident, 28)
        phentsize, phnum = struct.unpack_from(endian + "HH", ident, 42)
        layout, need = endian + "IIIIIIII", 32
    if not phnum or phnum > _MAX_PHDRS or phentsize < need:
        return None
    table = ident[phoff:phoff + phnum * phentsize] if phoff + phnum * phentsize <= 64 else \
        f.read_at(phoff, phnum * phentsize)
    notes = []
    for i in range(len(table) // phentsize):
        fields = struct.unpack_from(layout, table, i * phentsize)
        if fields[0] != PT_NOTE:
            continue
        offset, size = (fields[2], fields[5]) if bits == 2 else (fields[1], fields[4])
        notes.append((offset, min(size, _MAX_NOTE)))
    for offset, size in sorted(notes):
        found = _gnu_build_id(f.read_at(offset, size), endian)
        if found:
            return found
    return None


def parse_notes(data: bytes, endian: str) -> list:
    """Notes of one PT_NOTE segment; stops at padding or a malformed entry, never raises."""
    notes = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break
        name_end = pos + 12 + namesz
        desc_pos = pos + 12 + ((namesz + 3) & ~3)
        desc_end = desc_pos + descsz
        if namesz > 256 or desc_end > len(data):
            break
        name = data[pos + 12:name_end].split(b"\0", 1)[0].decode("latin-1")
        notes.append(Note(name, ntype, data[desc_pos:desc_end]))
        pos = desc_pos + ((descsz + 3) & ~3)
    return notes


def _gnu_build_id(data: bytes, endian: str) -> str | None:
    for note in parse_notes(data, endian):
        if note.type == NT_GNU_BUILD_ID and note.name == "GNU":
            return note.desc.hex() or None
    return None
