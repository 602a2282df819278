"""Every magic number CAS recognises, in one table: file names lie, magic bytes do not.

Incoming dumps are peeled layer by layer (compressors, archives), cores are named by
their dump format, debuginfo packages by their container.  Each reader used to carry
its own copy of these bytes; this is the one place (doc/formats.md, section 1).

``HEAD`` bytes from the start of a file are enough for every check here (sadump's
signature sits at byte 4096, tar's at 257).
"""

import struct

HEAD = 4096 + 16

# fixed bytes at offset 0 -> (family, name)
FIXED = (
    (b"\x7fELF", ("elf", "elf")),
    (b"KDUMP   ", ("dump", "kdump")),
    (b"DISKDUMP", ("dump", "diskdump")),
    (b"makedumpfile\0\0\0\0", ("dump", "flattened")),
    (b"sadump\0\0", ("dump", "sadump")),
    (b"LinuxGuestRecord", ("dump", "xen")),
    (b"\xed\xeb\x0f\xf0", ("dump", "xen")),
    (b"\xee\xeb\x0f\xf0", ("dump", "xen")),
    (b"\x1f\x8b", ("compression", "gzip")),
    (b"\xfd7zXZ\x00", ("compression", "xz")),
    (b"\x28\xb5\x2f\xfd", ("compression", "zstd")),
    (b"PK\x03\x04", ("archive", "zip")),
    (b"PK\x05\x06", ("archive", "zip")),
    (b"\xed\xab\xee\xdb", ("package", "rpm")),
    (b"!<arch>\n", ("package", "deb")),
)
ELF = b"\x7fELF"
KDUMP = b"KDUMP   "
DISKDUMP = b"DISKDUMP"
XZ = b"\xfd7zXZ\x00"
ZIP_LOCAL = b"PK\x03\x04"
ZSTD_FRAME = 0xFD2FB528                   # little-endian word opening a zstd frame
ZSTD_SKIPPABLE = (0x184D2A50, 0x184D2A5F)  # first and last skippable-frame word
RPM_LEAD = b"\xed\xab\xee\xdb"
RPM_HEADER = b"\x8e\xad\xe8\x01"
AR = b"!<arch>\n"
FLATTENED = b"makedumpfile\0\0\0\0"
SADUMP = b"sadump\0\0"
SADUMP_AT = 4096            # sadump's signature may follow a 4 KiB disk header
LKCD = (0xA8190173618F23ED, 0xA8190173618F23CD)
S390 = 0xA8190173618F23FD
ET_EXEC, ET_CORE = 2, 4


def _fixed(head: bytes, family: str) -> str | None:
    for magic, (fam, name) in FIXED:
        if fam == family and head.startswith(magic):
            return name
    return None


def elf_type(head: bytes) -> int | None:
    """``e_type`` of an ELF header (ET_EXEC, ET_CORE, ...), None when not ELF."""
    if head[:4] != b"\x7fELF" or len(head) < 18:
        return None
    return struct.unpack_from("<H" if head[5:6] == b"\x01" else ">H", head, 16)[0]


def dump_format(head: bytes) -> str | None:
    """The kernel dump format of ``head``: elf, kdump, diskdump, flattened, lkcd, s390,
    sadump, xen; None when no dump magic is there."""
    if head[:4] == b"\x7fELF":
        return "elf"
    name = _fixed(head, "dump")
    if name:
        return name
    if len(head) >= 8:
        le, be = int.from_bytes(head[:8], "little"), int.from_bytes(head[:8], "big")
        if le in LKCD or be in LKCD:
            return "lkcd"
        if be == S390:
            return "s390"
    if head[SADUMP_AT:SADUMP_AT + 8] == SADUMP:
        return "sadump"
    return None


def compression(head: bytes) -> str | None:
    """The compressor of ``head``: gzip, bzip2, xz, lzma, zstd; None otherwise."""
    name = _fixed(head, "compression")
    if name:
        return name
    if head[:3] == b"BZh" and len(head) > 3 and head[3:4] in b"123456789":
        return "bzip2"
    if len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and 0x50 <= head[0] <= 0x5F:
        return "zstd"       # a zstd skippable frame (pzstd writes one first)
    if _lzma_alone(head):
        return "lzma"
    return None


def _lzma_alone(head: bytes) -> bool:
    """lzma-alone has no magic: check the properties byte, dictionary size and size field.

    xz-utils writes dictionary sizes of 2^n or 2^n + 2^(n-1) (xz's ``lzma_alone``
    encoder), and the size is either known or all ones.
    """
    if len(head) < 13 or head[0] >= 9 * 5 * 5:
        return False
    dict_size = struct.unpack_from("<I", head, 1)[0]
    size = struct.unpack_from("<Q", head, 5)[0]
    if not (1 << 12) <= dict_size <= (1 << 30):
        return False
    low = dict_size & -dict_size
    if dict_size not in (low, low * 3):
        return False
    return size == 0xFFFFFFFFFFFFFFFF or size < (1 << 48)


def archive(head: bytes) -> str | None:
    """tar (POSIX ustar or GNU, at byte 257) or zip; None otherwise."""
    if len(head) >= 512 and head[257:262] == b"ustar":
        return "tar"
    return _fixed(head, "archive")


def packed(head: bytes) -> str | None:
    """What a file that is not a dump holds, by fixed magic only (no lzma-alone guess):
    gzip, bzip2, xz, zstd or "an RPM", for the message that says to unpack it first."""
    if head[:3] == b"BZh":
        return "bzip2"
    name = _fixed(head, "compression")
    if name:
        return name
    return "an RPM" if head.startswith(RPM_LEAD) else None


def package(head: bytes) -> str | None:
    """rpm (the lead) or deb (an ar archive); None otherwise."""
    return _fixed(head, "package")
