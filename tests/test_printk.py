"""printk.py: the three log layouts, bounded on corrupt rings (fuzzed on the real dump's ring).

The older layouts (variable-length printk_log records, 3.5-5.9, and the plain
log_end buffer) have no real dump in the test bed: their buffers are laid out
here by the kernel's documented structures (kernel/printk/printk.c), with the
VMCOREINFO keys those kernels export.
"""

import os
import random
import signal
import struct

import pytest

from caslib.dumps import printk, vmcoreinfo
from caslib.dumps.vmem import VmemError
from caslib.errors import FormatError

BUF = 0xFFFF888000100000       # a direct-map address for the buffers
SYMS = 0xFFFFFFFF82000000      # kernel-image variables


class Memory:
    """Kernel memory made of a few mapped ranges; anything else is not in the dump."""

    endian, bits = "<", 64

    def __init__(self):
        self.ranges = {}
        self.reads = 0

    def map(self, addr, data):
        self.ranges[addr] = bytearray(data)

    def read(self, vaddr, size):
        self.reads += 1
        for start, data in self.ranges.items():
            if start <= vaddr and vaddr + size <= start + len(data):
                return bytes(data[vaddr - start:vaddr - start + size])
        raise VmemError(f"virtual address {vaddr:#x} is not mapped")


def info(text):
    return vmcoreinfo.parse(text.encode())


# --- variable-length records (struct printk_log, 16 bytes, 8-aligned) --------------

VARIABLE_INFO = f"""OSRELEASE=4.18.0-test
SYMBOL(log_buf)={SYMS:x}
SYMBOL(log_buf_len)={SYMS + 8:x}
SYMBOL(log_first_idx)={SYMS + 16:x}
SYMBOL(log_next_idx)={SYMS + 24:x}
SIZE(printk_log)=16
OFFSET(printk_log.ts_nsec)=0
OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10
OFFSET(printk_log.dict_len)=12
"""


def printk_log(ts, text, dict_=b""):
    length = (16 + len(text) + len(dict_) + 7) & ~7
    head = struct.pack("<QHHHBB", ts, length, len(text), len(dict_), 0, 6 << 5)
    return (head + text + dict_).ljust(length, b"\0")


def variable_memory(records, size=256, first=0, wrap_at=None, next_idx=None):
    """A log_buf of ``size`` bytes; records from ``first``, wrapping to 0 at ``wrap_at``."""
    buf = bytearray(size)
    idx = first
    for ts, text in records:
        rec = printk_log(ts, text)
        if wrap_at is not None and idx == wrap_at:
            buf[idx + 8:idx + 10] = b"\0\0"  # the wrap marker: len 0
            idx = 0
        buf[idx:idx + len(rec)] = rec
        idx += len(rec)
    mem = Memory()
    mem.map(BUF, buf)
    mem.map(SYMS, struct.pack("<QIxxxxIxxxxI", BUF, size, first,
                              idx if next_idx is None else next_idx))
    return mem


def test_variable_records_read_and_wrap():
    recs = [(1_000_000, b"first"), (2_500_000_000, b"second\nline"), (3_000_001_000, b"x")]
    mem = variable_memory(recs + [(4_000_000_000, b"after the wrap")], size=144, first=40,
                          wrap_at=40 + 24 + 32 + 24)
    log = printk.read_log(mem, info(VARIABLE_INFO))
    assert log.layout == "variable" and log.warnings == []
    assert log.lines() == ["[    0.001000] first", "[    2.500000] second",
                           "               line", "[    3.000001] x",
                           "[    4.000000] after the wrap"]


def test_variable_records_that_loop_or_overrun_stop_with_a_warning():
    # next_idx never reached: after one wrap the walk comes round again and stops
    mem = variable_memory([(1, b"a"), (2, b"b")], size=64, first=0, next_idx=8)
    mem.ranges[BUF][32 + 8:32 + 10] = b"\0\0"
    log = printk.read_log(mem, info(VARIABLE_INFO))
    assert any("loop" in w or "wrapped twice" in w for w in log.warnings), log.warnings
    assert len(log.records) <= 4
    # a length running past the buffer
    mem = variable_memory([(1, b"a"), (2, b"b")], size=64)
    mem.ranges[BUF][8:10] = struct.pack("<H", 4000)
    log = printk.read_log(mem, info(VARIABLE_INFO))
    assert log.records == [] and "corrupt" in log.warnings[0]


def test_variable_log_with_an_absurd_length_is_refused():
    mem = variable_memory([(1, b"a")], size=64)
    mem.ranges[SYMS][8:12] = struct.pack("<I", 1 << 31)
    with pytest.raises(FormatError):
        printk.read_log(mem, info(VARIABLE_INFO))


# --- the plain character buffer -----------------------------------------------------

PLAIN_INFO = f"""SYMBOL(log_buf)={SYMS:x}
SYMBOL(log_buf_len)={SYMS + 8:x}
SYMBOL(log_end)={SYMS + 16:x}
"""


def test_plain_buffer():
    text = (b"<6>hello\n<4>world\n" * 4)[:64]
    mem = Memory()
    mem.map(BUF, text)
    mem.map(SYMS, struct.pack("<QIxxxxI", BUF, 64, 11))  # not wrapped: the first log_end bytes
    log = printk.read_log(mem, info(PLAIN_INFO))
    assert log.layout == "plain" and log.lines() == ["<6>hello", "<4"]
    mem.map(SYMS, struct.pack("<QIxxxxI", BUF, 64, 64 * 3 + 9))  # wrapped: oldest at end % len
    assert printk.read_log(mem, info(PLAIN_INFO)).raw == text[9:] + text[:9]


def test_no_printk_symbols_is_an_error():
    with pytest.raises(FormatError, match="names no printk buffer"):
        printk.read_log(Memory(), info("OSRELEASE=6.1.0\n"))


# --- the lockless ring ------------------------------------------------------------------

LOCKLESS_INFO = f"""SYMBOL(prb)={SYMS:x}
SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(atomic_long_t.counter)=0
"""
DESCS, INFOS, TEXT = BUF, BUF + 0x10000, BUF + 0x20000


def lockless_memory(records, count_bits=3, size_bits=7, first_id=0, first_lpos=0):
    """A ring where record ``first_id + i`` holds ``records[i]`` = (ts, text, state)."""
    count, size = 1 << count_bits, 1 << size_bits
    descs, infos, text = bytearray(24 * count), bytearray(88 * count), bytearray(size)
    lpos = first_lpos
    for i, (ts, body, state) in enumerate(records):
        rid = first_id + i
        slot = rid % count
        if body is None:  # data-less
            begin = end = 1
        else:
            # kernel data_alloc/get_next_lpos: a block that would reach the end of the
            # ring is stored at its start; begin keeps the old position
            need = (8 + len(body) + 7) & ~7
            begin, end = lpos, lpos + need
            off = begin % size
            if begin // size != end // size:
                off, end = 0, (end // size) * size + need
            text[off:off + 8] = struct.pack("<Q", rid)
            text[off + 8:off + 8 + len(body)] = body
            lpos = end
        descs[slot * 24:slot * 24 + 24] = struct.pack("<QQQ", (state << 62) | rid, begin, end)
        infos[slot * 88:slot * 88 + 18] = struct.pack("<QQH", rid, ts, len(body or b""))
    head = first_id + len(records) - 1
    prb = struct.pack("<IxxxxQQQQQ", count_bits, DESCS, INFOS, head, first_id, 0)
    prb += struct.pack("<IxxxxQQQ", size_bits, TEXT, 0, 0) + bytes(8)
    mem = Memory()
    mem.map(SYMS, struct.pack("<Q", SYMS + 64) + bytes(56) + prb)
    mem.map(DESCS, descs)
    mem.map(INFOS, infos)
    mem.map(TEXT, text)
    return mem


def test_lockless_ring_with_a_wrapped_block_and_data_less_and_unfinished_records():
    recs = [(1000, b"one", 2), (2000, None, 2), (3000, b"reserved, skipped", 0),
            (4_000_000_000, b"four: a longer text that wraps", 2), (5000, b"\x01\xc3", 1)]
    mem = lockless_memory(recs, first_id=3, first_lpos=128 * 5 + 48)
    log = printk.read_log(mem, info(LOCKLESS_INFO))
    assert log.layout == "lockless" and log.warnings == []
    assert log.lines() == ["[    0.000001] one", "[    4.000000] four: a longer text that wraps",
                           "[    0.000005] \\x01\\xffffffc3"]


def test_lockless_tail_far_behind_head_is_clamped_to_the_ring():
    mem = lockless_memory([(i * 1000, b"r%d" % i, 2) for i in range(8)], size_bits=8,
                          first_id=100)
    mem.ranges[SYMS][64 + 32:64 + 40] = struct.pack("<Q", 5)  # tail id 5, head 107
    log = printk.read_log(mem, info(LOCKLESS_INFO))
    assert "behind head" in log.warnings[0]
    assert [t for _, t in log.records] == [b"r%d" % i for i in range(8)]


def test_lockless_ring_sizes_that_are_absurd_are_refused():
    mem = lockless_memory([(1, b"a", 2)])
    mem.ranges[SYMS][64:68] = struct.pack("<I", 40)
    with pytest.raises(FormatError, match="corrupt"):
        printk.read_log(mem, info(LOCKLESS_INFO))


@pytest.fixture
def deadline():
    """Every fuzz run must end: SIGALRM after 120 s turns a hang into a failure."""
    def expired(*_):
        raise TimeoutError("printk.read_log did not finish: a corrupt ring made it hang")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(max(120, int(os.environ.get("CAS_FUZZ_CASES", "0")) // 10))
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


class Corrupted:
    """The real dump's memory with bytes overwritten (patches: {vaddr: byte})."""

    def __init__(self, mem, patches):
        self.mem, self.patches = mem, patches
        self.endian, self.bits = mem.endian, mem.bits
        self.reads = 0

    def read(self, vaddr, size):
        self.reads += 1
        data = bytearray(self.mem.read(vaddr, size))
        for addr, value in self.patches.items():
            if vaddr <= addr < vaddr + size:
                data[addr - vaddr] = value
        return bytes(data)


@pytest.mark.realdump
def test_fuzzed_real_ring_gives_a_partial_log_or_an_error_never_a_hang(realdump, deadline):
    from caslib.dumps import flattened, vmem
    path = next(d["path"] for d in realdump["dumps"] if d["variant"] == "makedumpfile-zlib")
    with flattened.open_source(path) as src:
        mem, vmci, _ = vmem.open_memory(src)
        whole = printk.read_log(mem, vmci)
        prb = mem.u64(vmci.symbol("prb"))
        raw = mem.read(prb, 88)
        descs, infos = struct.unpack_from("<QQ", raw, 8)
        count = 1 << struct.unpack_from("<I", raw, 0)[0]
        data = struct.unpack_from("<Q", raw, 56)[0]
        targets = [(prb, 88), (descs, 24 * count), (infos, 88 * count), (data, 4096)]
        rnd = random.Random(15)
        outcomes = {"partial": 0, "whole": 0, "error": 0}
        for _ in range(int(os.environ.get("CAS_FUZZ_CASES", "150"))):
            patches = {}
            for _ in range(rnd.randint(1, 12)):
                start, size = rnd.choice(targets)
                patches[start + rnd.randrange(size)] = rnd.randrange(256)
            bad = Corrupted(mem, patches)
            try:
                log = printk.read_log(bad, vmci)
            except FormatError:
                outcomes["error"] += 1
                continue
            assert len(log.records) <= max(count, len(whole.records))
            assert sum(len(t) for _, t in log.records) <= printk.MAX_TEXT
            assert bad.reads <= 3 * count + 16 + 4 * printk.MAX_MISSES
            outcomes["whole" if log.records == whole.records else "partial"] += 1
        assert outcomes["partial"] and outcomes["error"], outcomes
