"""kdump-compressed (``KDUMP   ``) and ``DISKDUMP`` headers, and single page reads.

Why: makedumpfile's compressed dumps carry the crashed kernel's utsname and
crash time in the first block and its VMCOREINFO and ELF notes in the
sub-header, so a few KiB name the kernel; one page read through the bitmap
and page descriptors gives ``init_uts_ns`` when the header's utsname is
empty (QEMU fills only ``machine``).
Layouts: makedumpfile ``diskdump_mod.h`` (``disk_dump_header``,
``kdump_sub_header`` v1..v6, ``page_desc``) and ``makedumpfile.c``
(``write_kdump_header``); crash ``diskdump.c``.  Integers are in the dumping
host's byte order and word size: both are probed, and the probe must find a
plausible block size.

Header (64-bit / 32-bit offsets): signature@0, header_version@8, utsname@12
(6 x 65 bytes), timestamp@408/404, status@424/412, block_size@428/416,
sub_hdr_size@432/420, bitmap_blocks@436/424, max_mapnr@440/428,
current_cpu@456/444, nr_cpus@460/448.
"""

import struct
import zlib

from caslib.errors import FormatError
from caslib import magic
from caslib.dumps import kdumplayout

SIGNATURES = {magic.KDUMP: "kdump", magic.DISKDUMP: "diskdump"}
HEADER_READ = 464
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
COMPRESSION = {0x1: "zlib", 0x2: "lzo", 0x4: "snappy", 0x20: "zstd"}
STATUS_INCOMPLETE, STATUS_EXCLUDED_VMEMMAP = 0x8, 0x10
MAX_BITMAP_READ = 1 << 20     # pfn popcount work: covers 32 GiB of 4 KiB pages

# kdump_sub_header (diskdump_mod.h): unsigned long phys_base; int dump_level; int split;
# unsigned long start_pfn, end_pfn; off_t offset_vmcoreinfo; unsigned long size_vmcoreinfo;
# off_t offset_note; unsigned long size_note; off_t offset_eraseinfo; unsigned long
# size_eraseinfo; unsigned long long start_pfn_64, end_pfn_64, max_mapnr_64.  On i386
# 64-bit fields align to 4 bytes, on 32-bit ARM (EABI) to 8.
SUB_LAYOUTS = {
    "64": dict(phys_base=(0, "q"), dump_level=(8, "i"), split=(12, "i"), start_pfn=(16, "Q"),
               end_pfn=(24, "Q"), off_vmci=(32, "q"), size_vmci=(40, "Q"),
               off_note=(48, "q"), size_note=(56, "Q"), start_pfn_64=(80, "Q"),
               end_pfn_64=(88, "Q"), max_mapnr_64=(96, "Q")),
    "i386": dict(phys_base=(0, "i"), dump_level=(4, "i"), split=(8, "i"), start_pfn=(12, "I"),
                 end_pfn=(16, "I"), off_vmci=(20, "q"), size_vmci=(28, "I"),
                 off_note=(32, "q"), size_note=(40, "I"), start_pfn_64=(56, "Q"),
                 end_pfn_64=(64, "Q"), max_mapnr_64=(72, "Q")),
    "arm32": dict(phys_base=(0, "i"), dump_level=(4, "i"), split=(8, "i"), start_pfn=(12, "I"),
                  end_pfn=(16, "I"), off_vmci=(24, "q"), size_vmci=(32, "I"),
                  off_note=(40, "q"), size_note=(48, "I"), start_pfn_64=(72, "Q"),
                  end_pfn_64=(80, "Q"), max_mapnr_64=(88, "Q")),
}


def parse_utsname(raw: bytes) -> dict:
    """Six NUL-padded 65-byte fields; empty ones become None."""
    out = {}
    for i, name in enumerate(UTS_FIELDS):
        value = raw[i * 65:(i + 1) * 65].split(b"\0", 1)[0]
        text = value.decode("utf-8", "replace").strip()
        out[name] = text if text and text.isprintable() else None
    return out


class KdumpHeader:
    """The common header's fields, plus the sub-header (``sub``), VMCOREINFO and notes."""

    def __init__(self, format: str, endian: str, bits: int, header_version: int, utsname: dict,
                 timestamp: int, status: int, block_size: int, sub_hdr_size: int,
                 bitmap_blocks: int, max_mapnr: int, current_cpu: int, nr_cpus: int):
        self.format, self.endian, self.bits = format, endian, bits  # "kdump"/"diskdump"
        self.header_version, self.utsname, self.timestamp = header_version, utsname, timestamp
        self.status, self.block_size, self.sub_hdr_size = status, block_size, sub_hdr_size
        self.bitmap_blocks, self.max_mapnr = bitmap_blocks, max_mapnr
        self.current_cpu, self.nr_cpus = current_cpu, nr_cpus
        self.sub: dict = {}
        self.vmcoreinfo = b""
        self.notes = b""
        self.sub_layout: str | None = None
        self.warnings: list = []       # what a reader should be told about this header
        self.score, self.misfits = kdumplayout.CHECKS, []

    def split(self) -> dict | None:
        """``{start_pfn, end_pfn}`` of a ``makedumpfile --split`` part, else None."""
        if self.header_version < 2 or not self.sub.get("split"):
            return None
        wide = self.header_version >= 6 and self.sub.get("end_pfn_64")
        start = self.sub.get("start_pfn_64" if wide else "start_pfn")
        end = self.sub.get("end_pfn_64" if wide else "end_pfn")
        if start is None or end is None or start > end:
            return None
        return {"start_pfn": start, "end_pfn": end}

    @property
    def compression(self) -> list:
        return [name for bit, name in COMPRESSION.items() if self.status & bit]


def _sub_fields(sub: bytes, e: str, layout: str) -> dict:
    out = {}
    for name, (off, fmt) in SUB_LAYOUTS[layout].items():
        size = struct.calcsize(fmt)
        out[name] = struct.unpack_from(e + fmt, sub, off)[0] if off + size <= len(sub) else None
    return out


def read_header(src, head: bytes | None = None) -> KdumpHeader:
    """Parse the header and sub-header (VMCOREINFO and notes included) of ``src``.

    Every byte order and word size whose block size is plausible is scored on
    all its fields (caslib.dumps.kdumplayout); among the best, the one whose
    sub-header holds VMCOREINFO wins.  When two layouts fit entirely, the
    header says so in ``warnings``.
    """
    head = head if head is not None and len(head) >= HEADER_READ else src.read(0, HEADER_READ)
    fmt = SIGNATURES.get(head[:8])
    if fmt is None:
        raise FormatError("not a kdump-compressed or diskdump file", "not-a-dump")
    if len(head) < HEADER_READ:
        raise FormatError(f"{fmt} header is truncated ({len(head)} of {HEADER_READ} bytes)",
                        "truncated")
    cands = kdumplayout.candidates(head, src.size)
    if not cands:
        raise FormatError(f"{fmt} header has no plausible block size in any byte order")
    best_points = cands[0][0]
    parsed, errors = [], []
    for points, e, bits, f, failed in cands:
        if parsed and points < best_points:
            break  # a layout that fits is found: the worse ones need not be read
        hdr = KdumpHeader(fmt, e, bits, f["version"], parse_utsname(head[12:12 + 390]),
                          f["timestamp"], f["status"], f["block_size"], f["sub_hdr_size"],
                          f["bitmap_blocks"], f["max_mapnr"], f["current_cpu"], f["nr_cpus"])
        hdr.score, hdr.misfits = points, failed
        if fmt == "diskdump":
            return hdr  # its sub-header holds registers only
        try:
            _read_sub_header(src, hdr)
        except FormatError as exc:
            errors.append(exc)
            continue
        # a layout that fits worse is only taken on the word of its VMCOREINFO
        if points == best_points or hdr.vmcoreinfo:
            parsed.append(hdr)
    if not parsed:
        raise errors[0]
    parsed.sort(key=lambda h: (-h.score, not h.vmcoreinfo))
    hdr = parsed[0]
    full = [h for h in parsed if h.score == kdumplayout.CHECKS]
    if len(full) > 1:
        hdr.warnings.append("header fits the " + " and the ".join(
            f"{h.bits}-bit {'little' if h.endian == '<' else 'big'}-endian layout"
            for h in full) + f"; using the {hdr.bits}-bit one"
            + (", whose sub-header holds VMCOREINFO" if hdr.vmcoreinfo else ""))
    return hdr


def _read_sub_header(src, hdr: KdumpHeader) -> None:
    """Fill ``hdr.sub``, ``hdr.vmcoreinfo`` and ``hdr.notes``; raise if they do not hold up."""
    bs, e = hdr.block_size, hdr.endian
    if hdr.header_version < 1:
        return
    declared = hdr.sub_hdr_size > 0
    sub = src.read(bs, min(max(hdr.sub_hdr_size, 1) * bs, bs))
    if len(sub) < 8:
        if not declared:
            return
        raise FormatError(f"kdump sub-header at offset {bs} is truncated", "truncated")
    layouts = ["64"] if hdr.bits == 64 else ["arm32", "i386"]
    for layout in layouts:
        fields = _sub_fields(sub, e, layout)
        if _read_blobs(src, hdr, fields) and (declared or hdr.vmcoreinfo):
            if layout != "64" and not hdr.vmcoreinfo and len(layouts) > 1 and not hdr.notes:
                continue  # nothing told the 32-bit ABIs apart: try the other
            hdr.sub, hdr.sub_layout = fields, layout
            if not declared:
                hdr.warnings.append(f"sub_hdr_size is 0 but block 1 (offset {bs}) holds a "
                                    f"sub-header with VMCOREINFO; read it anyway")
            return
        hdr.vmcoreinfo = hdr.notes = b""
    if not declared:
        return
    if hdr.bits == 32:  # neither ABI's offsets lead to VMCOREINFO: keep i386, the older
        fields = _sub_fields(sub, e, "i386")
        if _read_blobs(src, hdr, fields):
            hdr.sub, hdr.sub_layout = fields, "i386"
            return
    hdr.sub = _sub_fields(sub, e, layouts[0])
    if hdr.header_version >= 3:
        off, size = hdr.sub.get("off_vmci"), hdr.sub.get("size_vmci")
        if off and size and bs <= off <= src.size < off + size <= src.size + (1 << 20):
            raise FormatError(f"kdump file is truncated: it ends at byte {src.size}, inside"
                            f" the VMCOREINFO at {off}..{off + size}", "truncated")
        raise FormatError("kdump sub-header points VMCOREINFO outside the dump"
                        f" (offset {off}, size {size})")


def _read_blobs(src, hdr: KdumpHeader, fields: dict) -> bool:
    """Read VMCOREINFO and notes if the sub-header's offsets hold up; False if they do not."""
    vmcoreinfo = notes = b""
    if hdr.header_version >= 3:
        off, size = fields["off_vmci"], fields["size_vmci"]
        if size is None or not 0 <= size <= 1 << 20:
            return False
        if size:  # 0: the dumped kernel registered none (QEMU without vmcoreinfo)
            if off is None or off < hdr.block_size:
                return False
            vmcoreinfo = src.read(off, size)
            if len(vmcoreinfo) < size or b"=" not in vmcoreinfo:
                return False
    if hdr.header_version >= 4:
        off, size = fields["off_note"], fields["size_note"]
        if off and size and off >= hdr.block_size and 0 < size <= 16 << 20:
            notes = src.read(off, size)
            if len(notes) < size:
                raise FormatError(f"kdump ELF notes at offset {off} are truncated", "truncated")
    hdr.vmcoreinfo, hdr.notes = vmcoreinfo, notes
    return True


PAGE_DESC = 24  # {i64 offset; u32 size; u32 flags; u64 page_flags}


def check_extent(src, hdr: KdumpHeader, size: int) -> str | None:
    """Raise if the file ends before its bitmap and page descriptors do; say why a dump
    whose headers are whole is incomplete (None when it is not).

    The first descriptor's data offset is where the descriptor table ends
    (makedumpfile writes page data right after it), so one 24-byte read
    tells whether every header structure is there.  A file that stops
    exactly there, or whose header says INCOMPLETE (makedumpfile ran out of
    space), still names its kernel: the headers are all that needs.
    """
    if hdr.format != "kdump":
        return None
    flagged = hdr.status & STATUS_INCOMPLETE
    descs = (1 + hdr.sub_hdr_size + hdr.bitmap_blocks) * hdr.block_size
    if descs > size:
        if flagged and size >= hdr.block_size * (1 + hdr.sub_hdr_size):
            return f"the header says INCOMPLETE and the file ends inside the bitmap at {size}"
        raise FormatError(f"kdump file is truncated: its bitmap ends at byte {descs}, the file at"
                        f" {size}", "truncated")
    raw = src.read(descs, PAGE_DESC)
    if len(raw) < PAGE_DESC:
        if flagged:
            return "the header says INCOMPLETE and the file holds no page descriptors"
        if descs == size:
            return None  # no dumpable page at all: an empty dump, complete as such
        raise FormatError(f"kdump file is truncated inside its page descriptors at byte {descs}",
                        "truncated")
    offset, psize, _flags, _ = struct.unpack(hdr.endian + "qIIQ", raw)
    if offset == size and offset > descs:
        return f"the file ends where page data starts (byte {size}): no page was written"
    if offset > size or offset + psize > size:
        if flagged:
            return f"the header says INCOMPLETE and the file ends at {size}, before page data"
        raise FormatError(f"kdump file is truncated: page data starts at byte {offset}, the file"
                        f" ends at {size}", "truncated")
    if flagged:
        return "the header says INCOMPLETE (makedumpfile could not write every page)"
    return _check_last_page(src, hdr, descs, size)


def _check_last_page(src, hdr: KdumpHeader, descs: int, size: int) -> str | None:
    """Whether the last page's data is in the file: a dump cut while makedumpfile wrote
    (a file size limit, a full disk it did not notice) holds its headers but not every
    page.  The dumpable bitmap's population count says how many descriptors there are;
    only bitmaps up to MAX_BITMAP_READ are counted."""
    half = hdr.bitmap_blocks * hdr.block_size // 2
    if not 0 < half <= MAX_BITMAP_READ:
        return None
    bits = src.read((1 + hdr.sub_hdr_size) * hdr.block_size + half, half)
    dumpable = int.from_bytes(bits, "little")
    part = hdr.split()
    if part:  # a split part describes only the pages of its own pfn range
        dumpable = (dumpable >> part["start_pfn"]) & ((1 << max(
            part["end_pfn"] - part["start_pfn"], 0)) - 1)
    count = dumpable.bit_count()
    if count < 2:
        return None
    end = descs + count * PAGE_DESC
    raw = src.read(end - PAGE_DESC, PAGE_DESC)
    if len(raw) < PAGE_DESC:
        return f"the file ends at byte {size}, inside the descriptors of its {count} pages"
    offset, psize, _flags, _ = struct.unpack(hdr.endian + "qIIQ", raw)
    if offset <= 0 or psize == 0:  # makedumpfile fills the table as it writes the pages
        return (f"the descriptor of its last page (of {count}) was never written; the file"
                f" ends at byte {size}")
    if offset + psize > size:
        return f"the file ends at byte {size}, before the data of its last page ({offset + psize})"
    return None


def read_page(src, hdr: KdumpHeader, pfn: int) -> bytes | None:
    """The uncompressed page ``pfn``, or None when it is not in the dump or cannot be decoded."""
    return Pages(src, hdr).read(pfn)


class Pages:
    """Pages of a kdump-compressed dump by pfn, through its bitmap and page descriptors.

    The dumpable bitmap (second half of the bitmap blocks, bits LSB-first) says
    whether a page is there; its index among the page descriptors is the
    number of dumpable pages below it (crash ``diskdump.c:pfn_to_pos``).
    Popcounts of whole bitmap chunks are kept, so many reads (cas-dmesg) scan
    the bitmap once; a single read (cas-ident) reads no more than it must.
    ``max_bitmap`` bounds the bitmap bytes one read may scan (None: the file bounds it).
    """

    CHUNK = 64 << 10

    def __init__(self, src, hdr: KdumpHeader, max_bitmap: int | None = MAX_BITMAP_READ):
        self.src, self.hdr, self.max_bitmap = src, hdr, max_bitmap
        bs = hdr.block_size
        max_mapnr = hdr.sub.get("max_mapnr_64") if hdr.header_version >= 6 else None
        self.max_mapnr = max_mapnr or hdr.max_mapnr
        self.half = hdr.bitmap_blocks * bs // 2
        self.bitmap2 = (1 + hdr.sub_hdr_size) * bs + self.half
        self.descs = (1 + hdr.sub_hdr_size + hdr.bitmap_blocks) * bs
        self.below_chunk = [0]   # dumpable pages before chunk i of the bitmap

    def _bits(self, offset: int, size: int) -> bytes:
        bits = self.src.read(self.bitmap2 + offset, size)
        if len(bits) < size:
            raise FormatError(f"kdump bitmap at offset {self.bitmap2} is truncated", "truncated")
        return bits

    def position(self, pfn: int) -> int | None:
        """The page descriptor index of ``pfn``, or None when the page was not dumped."""
        byte = pfn // 8
        if self.hdr.format != "kdump" or pfn < 0 or pfn >= self.max_mapnr or byte >= self.half:
            return None
        if self.max_bitmap is not None and byte + 1 > self.max_bitmap:
            return None
        chunk = byte // self.CHUNK
        while len(self.below_chunk) <= chunk:
            i = len(self.below_chunk) - 1
            whole = self._bits(i * self.CHUNK, self.CHUNK)
            count = int.from_bytes(whole, "little").bit_count()
            self.below_chunk.append(self.below_chunk[i] + count)
        start = chunk * self.CHUNK
        bits = self._bits(start, byte - start + 1)
        if not bits[-1] >> (pfn % 8) & 1:
            return None
        below = self.below_chunk[chunk] + int.from_bytes(bits[:-1], "little").bit_count()
        return below + (bits[-1] & ((1 << (pfn % 8)) - 1)).bit_count()

    def read(self, pfn: int) -> bytes | None:
        """The uncompressed page ``pfn``; None when not dumped or undecodable."""
        pos = self.position(pfn)
        if pos is None:
            return None
        bs = self.hdr.block_size
        raw = self.src.read(self.descs + pos * PAGE_DESC, PAGE_DESC)
        if len(raw) < PAGE_DESC:
            raise FormatError(f"kdump page descriptor {pos} is truncated", "truncated")
        offset, size, flags, _ = struct.unpack(self.hdr.endian + "qIIQ", raw)
        if offset <= 0 or size == 0 or size > bs:
            return None
        data = self.src.read(offset, size)
        if len(data) < size:
            raise FormatError(f"kdump page data at offset {offset} is truncated", "truncated")
        page = decode_page(flags, data, bs)
        return page if page is not None and len(page) == bs else None


def decode_page(flags: int, data: bytes, block_size: int) -> bytes | None:
    """One page's bytes from its stored form (page_desc ``flags``: 0x1 zlib, 0x2 LZO,
    0x4 snappy, 0x20 zstd, none: stored); None when it cannot be decoded."""
    try:
        if flags & 0x1:
            dec = zlib.decompressobj()
            page = dec.decompress(data, block_size)
        elif flags & 0x20:
            import zstandard
            page = zstandard.ZstdDecompressor().decompress(data, max_output_size=block_size)
        elif flags & 0x2:
            from caslib.dumps import lzo
            page = lzo.decompress(data, block_size)
        elif flags & 0x4:
            from caslib.dumps import snappy
            page = snappy.decompress(data, block_size)
        else:
            page = data
    except Exception:  # a corrupt compressed page: the page is unreadable, not the dump
        return None
    return page
