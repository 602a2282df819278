"""The kernel's printk buffer read from dump memory, with VMCOREINFO only (no vmlinux).

Why: when no debuginfo matches a dump, its kernel log still names the panic.
The kernel exports in VMCOREINFO the symbols, sizes and offsets of its log
(kernel/printk/printk.c ``log_buf_vmcoreinfo_setup``), as ``makedumpfile
--dump-dmesg`` and crash's ``log`` use them.  Three layouts:

- the lockless ring buffer (5.10+): ``SYMBOL(prb)`` points to a
  ``printk_ringbuffer``: a descriptor ring (``count_bits``, ``descs``,
  ``infos``, ``head_id``, ``tail_id``) and a text data ring (``size_bits``,
  ``data``).  A descriptor's ``state_var`` holds its id and, in the top two
  bits, its state (committed 1 and finalized 2 are readable); its text block
  ``[begin, next)`` (positions modulo the ring size) starts with the owner id
  (one long); a block that wraps starts at 0.  ``printk_info`` gives
  ``ts_nsec`` and ``text_len`` (kernel/printk/printk_ringbuffer.h);
- variable-length records (3.5 to 5.9): ``SYMBOL(log_buf)`` (a pointer),
  ``log_buf_len``, ``log_first_idx``, ``log_next_idx``; each record is a
  ``printk_log`` (``log`` before 3.11) header with ``ts_nsec``, ``len`` and
  ``text_len``, its text right after the header; ``len == 0`` wraps to 0;
- the plain character buffer (before 3.5): ``log_buf``, ``log_buf_len`` and
  ``log_end`` (characters ever written).

Everything read is untrusted: ring sizes, record counts, lengths and
positions are bounded, a corrupt ring yields the records read so far plus a
warning, never a hang or an allocation a header asked for.
"""

from dataclasses import dataclass, field

from caslib.errors import FormatError
from caslib.dumps.vmem import VmemError

MAX_RECORDS = 1 << 21      # records read at most (a 2^21-descriptor ring is 64 MiB of text)
MAX_TEXT = 64 << 20        # bytes of log text kept at most
MAX_BITS = 30              # count_bits/size_bits beyond this are corrupt
MAX_MISSES = 1 << 16       # descriptors in a row whose id is not theirs: the ids are corrupt
DESC_COMMITTED, DESC_FINALIZED = 1, 2



@dataclass
class Log:
    """Records ``(ts_nsec or None, text bytes)``; ``raw`` for the plain buffer."""

    layout: str
    records: list = field(default_factory=list)
    raw: bytes | None = None
    warnings: list = field(default_factory=list)

    def lines(self) -> list:
        """The log as makedumpfile --dump-dmesg writes it, one str per output line (the
        bytes are ``line.encode("latin-1")``: escapes make records ASCII, the plain buffer
        is passed through byte for byte)."""
        if self.raw is not None:
            return self.raw.decode("latin-1").splitlines()
        out = []
        for ts, text in self.records:
            out.extend(format_record(ts, text).split("\n"))
        return out


def _escape(text: bytes, indent: int) -> str:
    """makedumpfile's byte rules: a newline continues under the stamp, printable and space
    characters stay, others become ``\\xNN`` (``\\xffffffNN`` above 0x7f: a signed char)."""
    out = []
    pad = "\n" + " " * indent
    for b in text:
        if b == 10:
            out.append(pad)
        elif 0x20 <= b <= 0x7E or 9 <= b <= 13:
            out.append(chr(b))
        elif b >= 0x80:
            out.append(f"\\x{0xFFFFFF00 | b:08x}")
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def format_record(ts_nsec: int, text: bytes) -> str:
    """``[seconds.micro] text`` as makedumpfile and crash print a record (without newline)."""
    sec, nsec = divmod(ts_nsec, 1_000_000_000)
    stamp = f"[{sec:5d}.{nsec // 1000:06d}] "
    return stamp + _escape(text, len(stamp))


class _Reader:
    def __init__(self, mem, vmci):
        self.mem, self.vmci = mem, vmci
        self.e = mem.endian
        self.long = 8 if getattr(mem, "bits", 64) == 64 else 4

    def need(self, kind: str, name: str) -> int:
        value = {"SYMBOL": self.vmci.symbol, "OFFSET": self.vmci.offset,
                 "SIZE": lambda n: self.vmci.decimal(f"SIZE({n})")}[kind](name)
        if value is None:
            raise FormatError(f"VMCOREINFO lacks {kind}({name})", "no-log")
        return value

    def uint(self, buf: bytes, off: int, size: int) -> int:
        if off < 0 or off + size > len(buf):
            raise FormatError(f"a VMCOREINFO offset ({off}) lies outside its structure", "no-log")
        return int.from_bytes(buf[off:off + size], "little" if self.e == "<" else "big")

    def ulong_at(self, vaddr: int) -> int:
        return self.uint(self.mem.read(vaddr, self.long), 0, self.long)


def read_log(mem, vmci) -> Log:
    """The log of the dump behind ``mem`` (a vmem.KernelMemory); FormatError if none."""
    r = _Reader(mem, vmci)
    try:
        if vmci.symbol("prb") is not None:
            return _lockless(r)
        if vmci.symbol("log_first_idx") is not None:
            return _variable(r)
        if vmci.symbol("log_end") is not None:
            return _plain(r)
    except VmemError as exc:
        raise FormatError(f"the log's ring structure is not readable: {exc}", "no-log") from None
    raise FormatError("VMCOREINFO names no printk buffer (no SYMBOL(prb), log_first_idx or"
                      " log_end)", "no-log")


def _lockless(r: _Reader) -> Log:
    """The log of a 5.10+ kernel: a ring of descriptors pointing into a ring of text."""
    log = Log("lockless")
    ring = _Ring(r)
    tail, span = ring.bounded_span(log)
    kept, misses = 0, 0
    for i in range(span + 1):
        if misses > MAX_MISSES:
            log.warnings.append(f"{misses} descriptors in a row belong to no record (ids from"
                                f" {tail:#x}): stopped")
            break
        rid = (tail + i) & ring.id_mask
        try:
            found = ring.record(rid)
            misses = misses + 1 if found is None else 0
            if not found:   # no record (None), or a data-less one (())
                continue
            ts, text_len, addr = found
            if kept + text_len > MAX_TEXT:
                log.warnings.append(f"log text exceeds {MAX_TEXT} bytes: stopped at record {rid}")
                break
            text = r.mem.read(addr, text_len) if text_len else b""
        except VmemError as exc:
            log.warnings.append(f"record {rid}: {exc}")
            if len(log.warnings) > 100:
                log.warnings.append("too many unreadable records: stopped")
                break
            continue
        kept += text_len
        log.records.append((ts, text))
    return log


class _Ring:
    """Where the lockless ring's parts are, from VMCOREINFO and the ``prb`` structure."""

    def __init__(self, r: _Reader):
        self.r = r
        size = r.need("SIZE", "printk_ringbuffer")
        if not 0 < size <= 4096:
            raise FormatError(f"SIZE(printk_ringbuffer)={size} is implausible", "no-log")
        prb = r.mem.read(r.ulong_at(r.need("SYMBOL", "prb")), size)
        desc_ring = r.need("OFFSET", "printk_ringbuffer.desc_ring")
        text_ring = r.need("OFFSET", "printk_ringbuffer.text_data_ring")
        counter = r.vmci.offset("atomic_long_t.counter") or 0
        self.count_bits = r.uint(prb, desc_ring + r.need("OFFSET", "prb_desc_ring.count_bits"), 4)
        self.size_bits = r.uint(prb, text_ring + r.need("OFFSET", "prb_data_ring.size_bits"), 4)
        if self.count_bits > MAX_BITS or self.size_bits > MAX_BITS:
            raise FormatError(f"ring sizes are corrupt (count_bits {self.count_bits}, size_bits"
                              f" {self.size_bits})", "no-log")
        self.count, self.data_size = 1 << self.count_bits, 1 << self.size_bits
        self.descs = r.uint(prb, desc_ring + r.need("OFFSET", "prb_desc_ring.descs"), r.long)
        self.infos = r.uint(prb, desc_ring + r.need("OFFSET", "prb_desc_ring.infos"), r.long)
        self.data = r.uint(prb, text_ring + r.need("OFFSET", "prb_data_ring.data"), r.long)
        self.head = r.uint(prb, desc_ring + r.need("OFFSET", "prb_desc_ring.head_id") + counter,
                           r.long)
        self.tail = r.uint(prb, desc_ring + r.need("OFFSET", "prb_desc_ring.tail_id") + counter,
                           r.long)
        self.desc_size, self.info_size = r.need("SIZE", "prb_desc"), r.need("SIZE", "printk_info")
        self.sv_off = r.need("OFFSET", "prb_desc.state_var") + counter
        lpos = r.need("OFFSET", "prb_desc.text_blk_lpos")
        self.begin_off = lpos + r.need("OFFSET", "prb_data_blk_lpos.begin")
        self.next_off = lpos + r.need("OFFSET", "prb_data_blk_lpos.next")
        self.ts_off = r.need("OFFSET", "printk_info.ts_nsec")
        self.len_off = r.need("OFFSET", "printk_info.text_len")
        self.bits = 8 * r.long
        self.id_mask = (1 << (self.bits - 2)) - 1

    def bounded_span(self, log: Log) -> tuple[int, int]:
        """(first id, records after it) to read: at most the ring and MAX_RECORDS."""
        head, tail, count = self.head, self.tail, self.count
        span = (head - tail) & self.id_mask
        if span >= count:
            log.warnings.append(f"tail id {tail:#x} is {span} records behind head id {head:#x} in"
                                f" a ring of {count}: reading the last {count}")
            tail, span = (head - count + 1) & self.id_mask, count - 1
        if span >= MAX_RECORDS:
            log.warnings.append(f"ring holds {span + 1} records: reading the last {MAX_RECORDS}")
            tail, span = (head - MAX_RECORDS + 1) & self.id_mask, MAX_RECORDS - 1
        if self.count_bits > self.size_bits:
            raise FormatError(f"ring sizes are corrupt: {count} descriptors for {self.data_size}"
                              " bytes of text", "no-log")
        return tail, span

    def record(self, rid: int):
        """(ts_nsec, text length, text address) of record ``rid``; () for a data-less one;
        None when its descriptor holds another record or none.  VmemError: unreadable."""
        r, slot = self.r, rid % self.count
        desc = r.mem.read(self.descs + slot * self.desc_size, self.desc_size)
        state_var = r.uint(desc, self.sv_off, r.long)
        if state_var & self.id_mask != rid or (state_var >> (self.bits - 2)) not in (
                DESC_COMMITTED, DESC_FINALIZED):
            return None
        begin = r.uint(desc, self.begin_off, r.long) % self.data_size
        end = r.uint(desc, self.next_off, r.long) % self.data_size
        if begin == end:
            return ()
        info = r.mem.read(self.infos + slot * self.info_size, self.info_size)
        text_len = r.uint(info, self.len_off, 2)
        if begin > end:
            begin = 0  # the block wrapped: its text starts the ring
        begin += r.long
        text_len = max(0, min(text_len, end - begin))
        return r.uint(info, self.ts_off, 8), text_len, self.data + begin


def _variable(r: _Reader) -> Log:
    log = Log("variable")
    struct_name = "printk_log" if r.vmci.decimal("SIZE(printk_log)") is not None else "log"
    hsize = r.need("SIZE", struct_name)
    ts_off = r.need("OFFSET", f"{struct_name}.ts_nsec")
    len_off = r.need("OFFSET", f"{struct_name}.len")
    tlen_off = r.need("OFFSET", f"{struct_name}.text_len")
    buf = r.ulong_at(r.need("SYMBOL", "log_buf"))
    buf_len = r.uint(r.mem.read(r.need("SYMBOL", "log_buf_len"), 4), 0, 4)
    idx = r.uint(r.mem.read(r.need("SYMBOL", "log_first_idx"), 4), 0, 4)
    end = r.uint(r.mem.read(r.need("SYMBOL", "log_next_idx"), 4), 0, 4)
    if not 0 < buf_len <= MAX_TEXT or idx >= buf_len or end >= buf_len:
        raise FormatError(f"log_buf_len {buf_len}, first index {idx} or next index {end} is"
                          " corrupt", "no-log")
    wraps, kept = 0, 0
    while idx != end:
        if len(log.records) >= MAX_RECORDS:
            log.warnings.append(f"more than {MAX_RECORDS} records: stopped")
            break
        if idx + hsize > buf_len:
            log.warnings.append(f"record at {idx} runs past the {buf_len}-byte buffer: stopped")
            break
        try:
            head = r.mem.read(buf + idx, hsize)
            length = r.uint(head, len_off, 2)
            if length == 0:  # the wrap marker
                wraps += 1
                if wraps > 1:
                    log.warnings.append("the records loop (wrapped twice): stopped")
                    break
                idx = 0
                continue
            text_len = r.uint(head, tlen_off, 2)
            if length < hsize or idx + length > buf_len or hsize + text_len > length:
                log.warnings.append(f"record at {idx} has length {length} (text {text_len}):"
                                    " corrupt, stopped")
                break
            text = r.mem.read(buf + idx + hsize, text_len)
        except VmemError as exc:
            log.warnings.append(f"record at {idx}: {exc}: stopped")
            break
        kept += len(text)
        log.records.append((r.uint(head, ts_off, 8), text))
        idx += length
        if idx == buf_len:
            idx = 0
    return log


def _plain(r: _Reader) -> Log:
    log = Log("plain")
    buf = r.ulong_at(r.need("SYMBOL", "log_buf"))
    buf_len = r.uint(r.mem.read(r.need("SYMBOL", "log_buf_len"), 4), 0, 4)
    end = r.uint(r.mem.read(r.need("SYMBOL", "log_end"), 4), 0, 4)
    if not 0 < buf_len <= MAX_TEXT or buf_len & (buf_len - 1):
        raise FormatError(f"log_buf_len {buf_len} is corrupt", "no-log")
    try:
        if end < buf_len:
            log.raw = r.mem.read(buf, end)
        else:
            start = end & (buf_len - 1)
            log.raw = r.mem.read(buf + start, buf_len - start) + r.mem.read(buf, start)
    except VmemError as exc:
        raise FormatError(f"log_buf is not readable: {exc}", "no-log") from None
    return log
