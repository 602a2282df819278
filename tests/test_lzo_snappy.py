"""The pure-Python LZO1X and snappy decoders against the real compressors (lzop,
python-snappy), and the kdump page reader on a real makedumpfile -l dump."""

import os
import random
import struct
import subprocess

import pytest

from caslib.dumps import flattened, kdumphdr, lzo, snappy
from caslib.errors import FormatError

F_ADLER32_D, F_ADLER32_C, F_H_EXTRA_FIELD = 0x1, 0x2, 0x40
F_CRC32_D, F_CRC32_C, F_H_FILTER = 0x100, 0x200, 0x800


def lzop_blocks(data: bytes):
    """(compressed, uncompressed size) of each block of an lzop file (lzop's own container)."""
    assert data[:9] == b"\x89LZO\x00\r\n\x1a\n"
    pos = 9
    version, = struct.unpack_from(">H", data, pos)
    pos += 4  # version, lib_version
    if version >= 0x0940:
        pos += 2  # version_needed_to_extract
    pos += 1  # method
    if version >= 0x0940:
        pos += 1  # level
    flags, = struct.unpack_from(">I", data, pos)
    pos += 4
    if flags & F_H_FILTER:
        pos += 4
    pos += 8  # mode, mtime_low
    if version >= 0x0940:
        pos += 4  # mtime_high
    pos += 1 + data[pos] + 4  # name, header checksum
    if flags & F_H_EXTRA_FIELD:
        extra, = struct.unpack_from(">I", data, pos)
        pos += 4 + extra + 4
    while True:
        dst_len, = struct.unpack_from(">I", data, pos)
        pos += 4
        if dst_len == 0:
            return
        src_len, = struct.unpack_from(">I", data, pos)
        pos += 4
        pos += 4 * bool(flags & F_ADLER32_D) + 4 * bool(flags & F_CRC32_D)
        if src_len < dst_len:
            pos += 4 * bool(flags & F_ADLER32_C) + 4 * bool(flags & F_CRC32_C)
        yield data[pos:pos + src_len], dst_len, src_len < dst_len
        pos += src_len


def samples():
    rnd = random.Random(15)
    words = [b"kernel", b"panic", b"\0" * 64, b"sysrq", b"0123456789abcdef", b"\xff" * 7]
    out = [b"", b"a", b"ab" * 3, bytes(4096), bytes(range(256)) * 40, os.urandom(5000)]
    for n in (100, 4096, 70000, 300000):
        out.append(b"".join(rnd.choice(words) for _ in range(n // 8))[:n])
    # long-distance repeats (M4 matches beyond 16 KiB)
    block = os.urandom(3000)
    out.append(block + os.urandom(20000) + block + os.urandom(40000) + block)
    with open(__file__, "rb") as fh:
        out.append(fh.read())
    return out


@pytest.mark.parametrize("level", ["-1", "-3", "-9"])
def test_lzo_equals_lzop(tmp_path, level):
    for i, data in enumerate(samples()):
        src = tmp_path / f"s{i}"
        src.write_bytes(data)
        subprocess.run(["lzop", level, "-f", "-o", str(src) + ".lzo", str(src)], check=True)
        got = b""
        for block, size, compressed in lzop_blocks((tmp_path / f"s{i}.lzo").read_bytes()):
            got += lzo.decompress(block, size) if compressed else block
        assert got == data, (level, i)


def test_lzo_refuses_corrupt_input_without_overrunning():
    data = b"".join(random.Random(1).choice([b"abc", b"\0" * 9, b"xyz!"]) for _ in range(3000))
    src = subprocess.run(["lzop", "-c", "-"], input=data, capture_output=True, check=True).stdout
    block, size, _ = next(lzop_blocks(src))
    with pytest.raises(FormatError):
        lzo.decompress(block, size - 1)  # more output than allowed
    with pytest.raises(FormatError):
        lzo.decompress(block[:len(block) // 2], size)  # cut short
    rnd = random.Random(7)
    for _ in range(3000):
        junk = bytearray(block)
        for _ in range(rnd.randint(1, 8)):
            junk[rnd.randrange(len(junk))] = rnd.randrange(256)
        try:
            out = lzo.decompress(bytes(junk), size)
        except FormatError:
            continue
        assert len(out) <= size
    for _ in range(500):
        try:
            assert len(lzo.decompress(os.urandom(rnd.randint(0, 300)), 4096)) <= 4096
        except FormatError:
            pass


def test_snappy_equals_python_snappy():
    ref = pytest.importorskip("snappy", reason="python-snappy (pip) is the reference")
    for data in samples():
        assert snappy.decompress(ref.compress(data), len(data)) == data


def test_snappy_refuses_corrupt_input():
    ref = pytest.importorskip("snappy")
    data = b"kernel panic " * 500
    packed = ref.compress(data)
    with pytest.raises(FormatError):
        snappy.decompress(packed, len(data) - 1)
    with pytest.raises(FormatError):
        snappy.decompress(packed[:-3], len(data))
    rnd = random.Random(3)
    for _ in range(3000):
        junk = bytearray(packed)
        junk[rnd.randrange(len(junk))] = rnd.randrange(256)
        try:
            assert len(snappy.decompress(bytes(junk), len(data))) <= len(data)
        except FormatError:
            pass


@pytest.mark.realdump
def test_every_page_of_the_lzo_dump_equals_the_zlib_dump(realdump):
    """makedumpfile -l and -c of the same ELF dump: the pages decode to the same bytes."""
    by = {d["variant"]: d["path"] for d in realdump["dumps"]}
    with flattened.open_source(by["makedumpfile-lzo"]) as lsrc, \
            flattened.open_source(by["makedumpfile-zlib"]) as zsrc:
        lhdr, zhdr = kdumphdr.read_header(lsrc), kdumphdr.read_header(zsrc)
        assert lhdr.compression == ["lzo"]
        lpages, zpages = kdumphdr.Pages(lsrc, lhdr, None), kdumphdr.Pages(zsrc, zhdr, None)
        count = 0
        for pfn in range(lpages.max_mapnr):
            page = lpages.read(pfn)
            assert page == zpages.read(pfn), pfn
            if page is not None:
                count += 1
            else:
                assert lpages.position(pfn) is None, f"pfn {pfn} is dumped but did not decode"
        assert count > 1000
