"""Write kdump-compressed files in the layouts makedumpfile writes, for any word size and ABI.

The layouts are written from makedumpfile's ``diskdump_mod.h`` and ``makedumpfile.c``:

- ``struct disk_dump_header``: char signature[8]; int header_version;
  struct new_utsname utsname (6 x 65 chars); struct timeval timestamp (two longs);
  unsigned int status; int block_size, sub_hdr_size; unsigned int bitmap_blocks,
  max_mapnr, total_ram_blocks, device_blocks, written_blocks, current_cpu; int nr_cpus.
- ``struct kdump_sub_header`` (version 6): unsigned long phys_base; int dump_level;
  int split; unsigned long start_pfn, end_pfn; off_t offset_vmcoreinfo;
  unsigned long size_vmcoreinfo; off_t offset_note; unsigned long size_note;
  off_t offset_eraseinfo; unsigned long size_eraseinfo; unsigned long long
  start_pfn_64, end_pfn_64, max_mapnr_64.  off_t and long long align to 8 bytes on
  x86_64 and 32-bit ARM (EABI), to 4 on i386.
- ``write_kdump_header``: the sub-header is block 1, ``bitmap_blocks =
  divideup(2 * divideup(max_mapnr, 8), block_size)`` (two bitmaps: valid pages,
  then dumpable pages), then one ``struct page_desc`` {off_t offset; unsigned
  int size, flags; unsigned long long page_flags} (24 bytes) per dumpable page,
  then the page data (flags 1 = zlib).
"""

import struct
import zlib

ABIS = {  # word size, off_t/long long alignment inside the sub-header
    "x86_64": (8, 8), "i386": (4, 4), "arm": (4, 8),
}


def _sub_header(abi: str, e: str, phys_base: int, dump_level: int, split: int, start: int,
                end: int, vmci: tuple, note: tuple, max_mapnr: int) -> bytes:
    word, align = ABIS[abi]
    out = bytearray()

    def put(fmt, value, al):
        while len(out) % al:
            out.append(0)
        out.extend(struct.pack(e + fmt, value))
    L = "q" if word == 8 else "i"
    UL = "Q" if word == 8 else "I"
    put(L, phys_base, word)
    put("i", dump_level, 4)
    put("i", split, 4)
    put(UL, start, word)
    put(UL, end, word)
    put("q", vmci[0], align)
    put(UL, vmci[1], word)
    put("q", note[0], align)
    put(UL, note[1], word)
    put("q", 0, align)
    put(UL, 0, word)
    for value in (start, end, max_mapnr):
        put("Q", value, align)
    return bytes(out)


def write(path: str, *, abi: str = "x86_64", endian: str = "<", max_mapnr: int = 0x40000,
          utsname: dict, vmcoreinfo: bytes = b"", timestamp: int = 0, status: int = 1,
          nr_cpus: int = 1, current_cpu: int = 0, pages: dict | None = None,
          split: tuple | None = None, declare_sub: bool = True, cut_at: str | None = None,
          block_size: int = 4096) -> dict:
    """Write a version-6 kdump file; ``pages`` maps pfn -> 4096 bytes of page data (zlib).

    ``cut_at="page-data"`` stops the file where page data would start (an incomplete
    dump); ``declare_sub=False`` writes sub_hdr_size 0 though block 1 holds a sub-header.
    Returns the offsets used."""
    e, bs = endian, block_size
    word = ABIS[abi][0]
    pages = dict(sorted((pages or {}).items()))
    uts = b"".join(utsname.get(k, "").encode().ljust(65, b"\0")[:65] for k in
                   ("sysname", "nodename", "release", "version", "machine", "domainname"))
    bitmap_blocks = -(-2 * -(-max_mapnr // 8) // bs)
    vmci_off = 2 * bs - 2048  # inside block 1, after the sub-header
    sub = _sub_header(abi, e, 0, 31, 1 if split else 0, *(split or (0, 0)),
                      (vmci_off, len(vmcoreinfo)) if vmcoreinfo else (0, 0), (0, 0), max_mapnr)
    head = bytearray(bs)
    head[0:8] = b"KDUMP   "
    struct.pack_into(e + "i", head, 8, 6)
    head[12:12 + 390] = uts
    if word == 8:
        struct.pack_into(e + "qq", head, 408, timestamp, 0)
        at = 424
    else:
        struct.pack_into(e + "ii", head, 404, timestamp, 0)
        at = 412
    struct.pack_into(e + "IiiIIIIIIi", head, at, status, bs, 1 if declare_sub else 0,
                     bitmap_blocks, max_mapnr, max_mapnr, 0, 0, current_cpu, nr_cpus)
    block1 = bytearray(bs)
    block1[:len(sub)] = sub
    block1[bs - 2048:bs - 2048 + len(vmcoreinfo)] = vmcoreinfo
    bitmap = bytearray(bitmap_blocks * bs)
    half = len(bitmap) // 2
    bitmap[:max_mapnr // 8] = b"\xff" * (max_mapnr // 8)   # every page valid
    for pfn in pages:
        bitmap[half + pfn // 8] |= 1 << (pfn % 8)  # only these dumpable
    descs_at = 2 * bs + len(bitmap)
    data_at = descs_at + 24 * len(pages)
    descs, data = bytearray(), bytearray()
    for pfn, page in pages.items():
        comp = zlib.compress(page)
        descs += struct.pack(e + "qIIQ", data_at + len(data), len(comp), 1, 0)
        data += comp
    with open(path, "wb") as fh:
        fh.write(head + block1 + bitmap + descs)
        if cut_at != "page-data":
            fh.write(data)
    return {"descs_at": descs_at, "data_at": data_at, "bitmap_blocks": bitmap_blocks}
