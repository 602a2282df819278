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

from .flattened import DumpError

SIGNATURES = {b"KDUMP   ": "kdump", b"DISKDUMP": "diskdump"}
HEADER_READ = 464
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
COMPRESSION = {0x1: "zlib", 0x2: "lzo", 0x4: "snappy", 0x20: "zstd"}
STATUS_INCOMPLETE, STATUS_EXCLUDED_VMEMMAP = 0x8, 0x10
MAX_BITMAP_READ = 1 << 20     # pfn popcount work: covers 32 GiB of 4 KiB pages

# kdump_sub_header field offsets: (phys_base, dump_level, offset_vmcoreinfo,
# size_vmcoreinfo, offset_note, size_note, max_mapnr_64, word size, off_t size)
SUB_LAYOUTS = {
    "64": dict(phys_base=(0, "q"), dump_level=(8, "i"), off_vmci=(32, "q"), size_vmci=(40, "Q"),
               off_note=(48, "q"), size_note=(56, "Q"), max_mapnr_64=(96, "Q")),
    "i386": dict(phys_base=(0, "i"), dump_level=(4, "i"), off_vmci=(20, "q"), size_vmci=(28, "I"),
                 off_note=(32, "q"), size_note=(40, "I"), max_mapnr_64=(72, "Q")),
    "arm32": dict(phys_base=(0, "i"), dump_level=(4, "i"), off_vmci=(24, "q"),
                  size_vmci=(32, "I"), off_note=(40, "q"), size_note=(48, "I"),
                  max_mapnr_64=(88, "Q")),
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

    @property
    def compression(self) -> list:
        return [name for bit, name in COMPRESSION.items() if self.status & bit]


def _plausible_block(bs: int) -> bool:
    return 512 <= bs <= 1 << 20 and bs & (bs - 1) == 0


def _probe(head: bytes) -> list:
    """(endian, bits, fields) of every layout whose numbers make sense, likeliest first.

    A 32-bit header read with 64-bit offsets can look plausible (its max_mapnr
    lands on the 64-bit block_size), so the caller keeps the first candidate whose
    sub-header also holds up.
    """
    found = []
    for bits in (64, 32):
        for e in ("<", ">"):
            version = struct.unpack_from(e + "i", head, 8)[0]
            if bits == 64:
                sec, usec = struct.unpack_from(e + "qq", head, 408)
                rest = struct.unpack_from(e + "IiiIIIIIIi", head, 424)
            else:
                sec, usec = struct.unpack_from(e + "ii", head, 404)
                rest = struct.unpack_from(e + "IiiIIIIIIi", head, 412)
            status, bs, sub_size, bitmap_blocks, max_mapnr, _, _, _, cpu, ncpus = rest
            if not (0 <= version < 1000 and _plausible_block(bs)):
                continue
            if not (0 <= sub_size < 1 << 16 and 0 <= ncpus < 1 << 20):
                continue
            found.append((e, bits, dict(version=version, timestamp=sec, status=status,
                                        block_size=bs, sub_hdr_size=sub_size,
                                        bitmap_blocks=bitmap_blocks, max_mapnr=max_mapnr,
                                        current_cpu=cpu, nr_cpus=ncpus)))
    return found


def _sub_fields(sub: bytes, e: str, layout: str) -> dict:
    out = {}
    for name, (off, fmt) in SUB_LAYOUTS[layout].items():
        size = struct.calcsize(fmt)
        out[name] = struct.unpack_from(e + fmt, sub, off)[0] if off + size <= len(sub) else None
    return out


def read_header(src, head: bytes | None = None) -> KdumpHeader:
    """Parse the header and sub-header (VMCOREINFO and notes included) of ``src``."""
    head = head if head is not None and len(head) >= HEADER_READ else src.read(0, HEADER_READ)
    fmt = SIGNATURES.get(head[:8])
    if fmt is None:
        raise DumpError("not a kdump-compressed or diskdump file", "not-a-dump")
    if len(head) < HEADER_READ:
        raise DumpError(f"{fmt} header is truncated ({len(head)} of {HEADER_READ} bytes)",
                        "truncated")
    candidates = _probe(head)
    if not candidates:
        raise DumpError(f"{fmt} header has no plausible block size in any byte order")
    first_error = None
    for e, bits, f in candidates:
        hdr = KdumpHeader(fmt, e, bits, f["version"], parse_utsname(head[12:12 + 390]),
                          f["timestamp"], f["status"], f["block_size"], f["sub_hdr_size"],
                          f["bitmap_blocks"], f["max_mapnr"], f["current_cpu"], f["nr_cpus"])
        if fmt == "diskdump":
            return hdr  # its sub-header holds registers only
        try:
            _read_sub_header(src, hdr)
            return hdr
        except DumpError as exc:
            first_error = first_error or exc
    raise first_error


def _read_sub_header(src, hdr: KdumpHeader) -> None:
    """Fill ``hdr.sub``, ``hdr.vmcoreinfo`` and ``hdr.notes``; raise if they do not hold up."""
    bs, e = hdr.block_size, hdr.endian
    if hdr.header_version < 1 or hdr.sub_hdr_size <= 0:
        return
    sub = src.read(bs, min(hdr.sub_hdr_size * bs, bs))
    if len(sub) < 8:
        raise DumpError(f"kdump sub-header at offset {bs} is truncated", "truncated")
    layouts = ["64"] if hdr.bits == 64 else ["i386", "arm32"]
    for layout in layouts:
        fields = _sub_fields(sub, e, layout)
        if _read_blobs(src, hdr, fields):
            hdr.sub, hdr.sub_layout = fields, layout
            return
    hdr.sub = _sub_fields(sub, e, layouts[0])
    if hdr.header_version >= 3:
        off, size = hdr.sub.get("off_vmci"), hdr.sub.get("size_vmci")
        if off and size and bs <= off <= src.size < off + size <= src.size + (1 << 20):
            raise DumpError(f"kdump file is truncated: it ends at byte {src.size}, inside"
                            f" the VMCOREINFO at {off}..{off + size}", "truncated")
        raise DumpError("kdump sub-header points VMCOREINFO outside the dump"
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
                raise DumpError(f"kdump ELF notes at offset {off} are truncated", "truncated")
    hdr.vmcoreinfo, hdr.notes = vmcoreinfo, notes
    return True


PAGE_DESC = 24  # {i64 offset; u32 size; u32 flags; u64 page_flags}


def check_extent(src, hdr: KdumpHeader, size: int) -> None:
    """Raise if the file ends before its bitmap and page descriptors do.

    The first descriptor's data offset is where the descriptor table ends
    (makedumpfile writes page data right after it), so one 24-byte read
    tells whether every header structure is there.
    """
    if hdr.format != "kdump":
        return
    descs = (1 + hdr.sub_hdr_size + hdr.bitmap_blocks) * hdr.block_size
    if descs > size:
        raise DumpError(f"kdump file is truncated: its bitmap ends at byte {descs}, the file at"
                        f" {size}", "truncated")
    raw = src.read(descs, PAGE_DESC)
    if len(raw) < PAGE_DESC:
        if hdr.status & STATUS_INCOMPLETE or descs == size:
            return  # an empty or incomplete dump: makedumpfile said so itself
        raise DumpError(f"kdump file is truncated inside its page descriptors at byte {descs}",
                        "truncated")
    offset, psize, _flags, _ = struct.unpack(hdr.endian + "qIIQ", raw)
    if offset > size or offset + psize > size:
        raise DumpError(f"kdump file is truncated: page data starts at byte {offset}, the file"
                        f" ends at {size}", "truncated")


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
            raise DumpError(f"kdump bitmap at offset {self.bitmap2} is truncated", "truncated")
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
            raise DumpError(f"kdump page descriptor {pos} is truncated", "truncated")
        offset, size, flags, _ = struct.unpack(self.hdr.endian + "qIIQ", raw)
        if offset <= 0 or size == 0 or size > bs:
            return None
        data = self.src.read(offset, size)
        if len(data) < size:
            raise DumpError(f"kdump page data at offset {offset} is truncated", "truncated")
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
            from . import lzo
            page = lzo.decompress(data, block_size)
        elif flags & 0x4:
            from . import snappy
            page = snappy.decompress(data, block_size)
        else:
            page = data
    except Exception:  # a corrupt compressed page: the page is unreadable, not the dump
        return None
    return page
