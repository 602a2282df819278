"""The banner scan: mapped windows and the read fallback find the same hits, at the same
offsets; pipes and empty files take the fallback."""

import os
import random
import threading

from caslib.dumps import bannerscan

C, O = bannerscan.CHUNK, bannerscan.OVERLAP


def _dump_like(path, hits):
    """Random text-free bytes with OSRELEASE lines and banners at the given offsets."""
    rng = random.Random(5)
    data = bytearray(rng.randbytes(2 * C + 3 * O))
    for i in range(0, len(data), 4096 * 3):
        data[i:i + 4096] = bytes(4096)  # zero pages, as in a dump
    for off, text in hits:
        data[off:off + len(text)] = text
    path.write_bytes(bytes(data))
    return len(data)


def _same(a, b):
    return (a.osrelease, a.banners, a.hits, a.scanned) == (b.osrelease, b.banners, b.hits,
                                                           b.scanned)


def test_mapped_and_read_scans_agree(tmp_path):
    banner = b"Linux version 6.1.0-9-amd64 (debian-kernel@lists.debian.org) #1 SMP 6.1.27-1\n"
    hits = [(0, b"OSRELEASE=6.1.0-9-amd64\n"), (C - 20, banner), (C - O + 3, banner),
            (C + 5, b"OSRELEASE=6.1.0-9-amd64\n"), (2 * C - 7, b"OSRELEASE=6.1.0-9-amd64\0"),
            (2 * C + O, b"Linux version %s\0")]
    size = _dump_like(tmp_path / "raw", hits)
    fd = os.open(tmp_path / "raw", os.O_RDONLY)
    try:
        for start, limit in ((0, 1 << 40), (3, 1 << 40), (0, C + 11), (C - 30, C), (5, 100)):
            mapped = bannerscan._scan_mapped(fd, size, limit, start, None, window=C)
            read = bannerscan._scan_read(fd, limit, start, None)
            assert _same(mapped, read), (start, limit, mapped.osrelease, read.osrelease)
        whole = bannerscan.scan(str(tmp_path / "raw"), 1 << 40)
        assert whole.osrelease == {"6.1.0-9-amd64": 0}
        assert list(whole.banners.values()) == [C - O + 3]  # the first of two copies
        assert whole.verdict()["version"] == "#1 SMP 6.1.27-1"
    finally:
        os.close(fd)


def test_pipe_and_empty_file_use_the_read_fallback(tmp_path):
    line = b"OSRELEASE=5.14.0-1.el9.x86_64\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as out:
            out.write(bytes(C + 100) + line + bytes(10))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    r = bannerscan.scan(str(fifo), 1 << 30)
    writer.join(30)
    assert r.osrelease == {"5.14.0-1.el9.x86_64": C + 100}
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    r = bannerscan.scan(str(empty), 1 << 30)
    assert r.scanned == 0 and r.verdict() == {}
