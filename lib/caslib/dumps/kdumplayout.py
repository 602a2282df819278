"""Which word size and byte order a ``KDUMP``/``DISKDUMP`` header was written in.

Why: the header is a C struct in the dumping host's ABI, with no field that
says which.  Read with the wrong word size, a 32-bit header can look fine:
its ``max_mapnr`` (a power of two for 2 MiB..4 GiB of RAM) lands where the
64-bit layout keeps ``block_size``.  So every layout is scored on all its
fields together and the best-scoring ones are tried in order.

``disk_dump_header`` (makedumpfile ``diskdump_mod.h``; crash ``diskdump.h``):
signature[8], int header_version @8, struct new_utsname @12 (6 x 65 bytes),
struct timeval timestamp (64-bit: @408, 2 x 8 bytes; 32-bit, i386 and ARM
alike: @404, 2 x 4 bytes), then unsigned status, int block_size,
int sub_hdr_size, unsigned bitmap_blocks, max_mapnr, total_ram_blocks,
device_blocks, written_blocks, current_cpu, int nr_cpus (64-bit @424,
32-bit @412).  makedumpfile ``write_kdump_header`` sets
``bitmap_blocks = divideup(2 * divideup(max_mapnr, 8), block_size)``.
"""

import struct

FIELDS = ("status", "block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr",
          "total_ram_blocks", "device_blocks", "written_blocks", "current_cpu", "nr_cpus")
# (timeval offset, timeval format, offset of status) per word size
LAYOUT = {64: (408, "qq", 424), 32: (404, "ii", 412)}
CHECKS = 7  # the score of a layout in which everything fits


def read_fields(head: bytes, endian: str, bits: int) -> dict:
    """The header's numbers as this layout places them."""
    tv_off, tv_fmt, rest_off = LAYOUT[bits]
    sec, usec = struct.unpack_from(endian + tv_fmt, head, tv_off)
    rest = struct.unpack_from(endian + "IiiIIIIIIi", head, rest_off)
    out = dict(zip(FIELDS, rest))
    out.update(version=struct.unpack_from(endian + "i", head, 8)[0], timestamp=sec, usec=usec)
    return out


def plausible_block(bs: int) -> bool:
    return 512 <= bs <= 1 << 20 and bs & (bs - 1) == 0


def score(f: dict, file_size: int | None) -> tuple[int, list]:
    """(how many independent checks hold, which failed); block size must hold at all."""
    bs, mapnr, blocks = f["block_size"], f["max_mapnr"], f["bitmap_blocks"]
    failed = []
    if not 0 <= f["version"] < 100:
        failed.append("header_version")
    if not 0 <= f["usec"] < 1_000_000:
        failed.append("timestamp microseconds")
    if not 0 <= f["sub_hdr_size"] < 1 << 16:
        failed.append("sub_hdr_size")
    if not 0 <= f["nr_cpus"] < 1 << 16 or (f["nr_cpus"] and f["current_cpu"] >= f["nr_cpus"]
                                           and f["current_cpu"] != 0xFFFFFFFF):
        failed.append("nr_cpus/current_cpu")
    # two bitmaps of max_mapnr bits, rounded up to whole blocks (version 6 dumps over
    # 2^32 pages cap max_mapnr, so the bitmap may only be larger)
    need = -(-2 * -(-mapnr // 8) // bs) if bs else 0
    if not (blocks == need or (mapnr == 0xFFFFFFFF and blocks >= need)):
        failed.append("bitmap_blocks against max_mapnr")
    if not bs >= 4096:
        failed.append("block size below a page")
    if file_size is not None and blocks < 1 << 24 and bs and \
            bs * (1 + max(f["sub_hdr_size"], 0)) > file_size:
        failed.append("headers beyond the end of the file")
    return CHECKS - len(failed), failed


def candidates(head: bytes, file_size: int | None = None) -> list:
    """``(score, endian, bits, fields, failed)`` for every layout with a plausible block
    size, best first (64-bit little-endian first among equals)."""
    found = []
    for bits in (64, 32):
        for e in ("<", ">"):
            f = read_fields(head, e, bits)
            if not plausible_block(f["block_size"]):
                continue
            points, failed = score(f, file_size)
            found.append((points, e, bits, f, failed))
    found.sort(key=lambda c: -c[0])  # stable: keeps the 64-bit LE first among equals
    return found
