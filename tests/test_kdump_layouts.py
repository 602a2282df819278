"""kdump headers in every word size and ABI, incomplete dumps and split parts (cas-ident).

The files are written by tests/kdumpgen.py from makedumpfile's structs (cited there);
where crash on this host can read the layout (64-bit little-endian), ``crash
--osrelease`` vouches for the file.  32-bit i386 and ARM layouts are ours alone: no
tool here reads them.
"""

import os
import shutil
import subprocess

import pytest

import kdumpgen
from conftest import run

RELEASE = "6.1.0-99-armmp"
UTS = {"sysname": "Linux", "nodename": "board", "release": RELEASE,
       "version": "#1 SMP Debian 6.1.0-99", "machine": "armv7l", "domainname": "(none)"}
VMCI = f"OSRELEASE={RELEASE}\nPAGESIZE=4096\nCRASHTIME=1700000000\n".encode()
STAMP = 1700000000


def ident(path):
    res = run("cas-ident", path)
    assert "Traceback" not in res.stderr
    return res


@pytest.mark.parametrize("abi", ["i386", "arm"])
@pytest.mark.parametrize("max_mapnr", [0x200, 0x8000, 0x40000, 0x100000])
def test_32bit_headers_with_power_of_two_max_mapnr(abi, max_mapnr, tmp_path):
    """max_mapnr lands on the 64-bit block_size: the layout is decided by all fields."""
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, abi=abi, max_mapnr=max_mapnr, utsname=UTS, vmcoreinfo=VMCI,
                   timestamp=STAMP, nr_cpus=2, current_cpu=1, pages={1: b"\x11" * 4096})
    res = ident(path)
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert rec["kernel"]["release"] == RELEASE and rec["kernel"]["machine"] == "armv7l"
    assert rec["kernel"]["crash_time"] == "2023-11-14T22:13:20Z"
    assert rec["ident"]["word_size"] == 32 and rec["ident"]["block_size"] == 4096
    assert rec["ident"]["sub_header_abi"] == {"arm": "arm32", "i386": "i386"}[abi]
    assert rec["ident_method"] == "vmcoreinfo"


def test_32bit_big_endian(tmp_path):
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, abi="i386", endian=">", max_mapnr=0x10000, utsname=UTS,
                   vmcoreinfo=VMCI, timestamp=STAMP)
    rec = ident(path).record
    assert rec["kernel"]["release"] == RELEASE
    assert rec["ident"]["endian"] == "big" and rec["ident"]["word_size"] == 32


@pytest.mark.parametrize("max_mapnr", [0x1000, 0x40000])
def test_64bit_header_vouched_by_crash(max_mapnr, tmp_path):
    path = str(tmp_path / "vmcore")
    uts = dict(UTS, machine="x86_64", release="6.1.0-99-amd64")
    vmci = b"OSRELEASE=6.1.0-99-amd64\nPAGESIZE=4096\n"
    kdumpgen.write(path, abi="x86_64", max_mapnr=max_mapnr, utsname=uts, vmcoreinfo=vmci,
                   timestamp=STAMP, pages={0: b"\0" * 4096})
    if shutil.which("crash"):
        out = subprocess.run(["crash", "--osrelease", path], capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.strip() == "6.1.0-99-amd64", out
    rec = ident(path).record
    assert rec["kernel"]["release"] == "6.1.0-99-amd64" and rec["ident"]["word_size"] == 64


def test_dump_cut_where_page_data_starts_is_named_incomplete(tmp_path):
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, abi="arm", max_mapnr=0x40000, utsname=UTS, vmcoreinfo=VMCI,
                   pages={5: b"\x22" * 4096, 9: b"\x33" * 4096}, cut_at="page-data")
    res = ident(path)
    assert res.returncode == 0, res.stderr
    assert res.record["kernel"]["release"] == RELEASE
    assert res.record["ident"]["incomplete"] is True
    assert any("incomplete" in w for w in res.record["ident"]["warnings"])
    assert "incomplete dump" in res.stderr


def test_incomplete_status_with_missing_pages(tmp_path):
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, max_mapnr=0x8000, utsname=dict(UTS, machine="x86_64"),
                   vmcoreinfo=VMCI, status=0x1 | 0x8, pages={3: b"\x01" * 4096})
    with open(path, "r+b") as fh:  # makedumpfile ran out of space inside the page data
        fh.truncate(os.path.getsize(path) - 10)
    rec = ident(path).record
    assert rec["kernel"]["release"] == RELEASE and rec["ident"]["incomplete"] is True


def test_truncated_bitmap_without_incomplete_status_is_still_an_error(tmp_path):
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, max_mapnr=0x40000, utsname=UTS, vmcoreinfo=VMCI)
    with open(path, "r+b") as fh:
        fh.truncate(3 * 4096)
    res = ident(path)
    assert res.returncode == 1 and res.record["error"]["kind"] == "truncated"


def test_sub_header_present_though_sub_hdr_size_is_zero(tmp_path):
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, abi="x86_64", max_mapnr=0x8000, utsname=dict(UTS, release=""),
                   vmcoreinfo=VMCI, declare_sub=False)
    res = ident(path)
    assert res.returncode == 0, res.stderr
    assert res.record["kernel"]["release"] == RELEASE
    assert any("sub_hdr_size is 0" in w for w in res.record["ident"]["warnings"])


def test_split_parts_are_grouped_and_a_missing_part_is_said(tmp_path, config_file):
    parts = []
    for i, (start, end) in enumerate([(0, 0x4000), (0x4000, 0x8000)]):
        p = str(tmp_path / f"dump{i}")
        kdumpgen.write(p, max_mapnr=0x8000, utsname=dict(UTS, machine="x86_64"),
                       vmcoreinfo=VMCI, timestamp=STAMP, split=(start, end),
                       pages={start + 1: b"\x05" * 4096})
        parts.append(p)
    res = run("cas-ident", parts[1], parts[0])
    assert res.returncode == 0 and len(res.records) == 1, res.stderr
    rec = res.record
    assert rec["cores"] == parts and rec["core"] == parts[0]
    assert rec["split"]["count"] == 2 and rec["split"]["complete"] is True
    assert [p["index"] for p in rec["split"]["parts"]] == [0, 1]
    alone = run("cas-ident", parts[1]).record
    assert alone["split"] == {"index": None, "count": None, "start_pfn": 0x4000,
                              "end_pfn": 0x8000}
    other = str(tmp_path / "other")  # another dump's part: a different crash time
    kdumpgen.write(other, max_mapnr=0x8000, utsname=dict(UTS, machine="x86_64"),
                   vmcoreinfo=VMCI, timestamp=STAMP + 1, split=(0x4000, 0x8000))
    # a piped record's files must lie in its job directory (records are input)
    conf = config_file()
    workdir = tmp_path / "work" / "j" / "2026.01.02.03.04.05"
    workdir.mkdir(parents=True)
    inside = []
    for p in (parts[0], other):
        os.link(p, workdir / os.path.basename(p))
        inside.append(str(workdir / os.path.basename(p)))
    res = run("cas-ident", "--config", conf, input=[{"id": "j", "job": "j", "workdir": str(workdir),
                                                     "core": inside[0], "cores": inside}])
    assert res.returncode == 1 and res.record["error"]["kind"] == "split-mismatch", res


@pytest.mark.parametrize("version,at,time_fmt,endian", [
    (9, 324, "QQ", "<"), (8, 324, "QQ", ">"), (7, 328, "qq", "<"), (7, 316, "ii", ">")])
def test_lkcd_header_names_the_kernel(version, at, time_fmt, endian, tmp_path):
    """LKCD dump_header (lkcd dump.h): magic, version, header_size, dump_level, page_size,
    memory_size/start/end, num_dump_pages, panic_string[256] @52, the time (packed u64
    pair in v8+, else a native timeval: 64-bit aligned or 32-bit), utsname."""
    import struct
    head = bytearray(0x10000)
    struct.pack_into(endian + "QIIII", head, 0, 0xA8190173618F23ED, version, 0x10000, 31, 4096)
    head[52:52 + 20] = b"Oops: kernel NULL pointer"[:20]
    time_at = {324: 308, 328: 312, 316: 308}[at]
    struct.pack_into(endian + time_fmt, head, time_at, STAMP, 0)
    for i, k in enumerate(("sysname", "nodename", "release", "version", "machine", "domainname")):
        value = dict(UTS, machine="s390x").get(k, "").encode()
        head[at + 65 * i:at + 65 * i + len(value)] = value
    path = tmp_path / "lkcd.dump"
    path.write_bytes(bytes(head))
    res = ident(str(path))
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert rec["format"] == "lkcd" and rec["ident_method"] == "utsname"
    assert rec["kernel"]["release"] == RELEASE and rec["kernel"]["machine"] == "s390x"
    assert rec["kernel"]["hostname"] == "board" and rec["kernel"]["crash_time"] == \
        "2023-11-14T22:13:20Z"
    assert rec["ident"]["panic_string"].startswith("Oops")


def test_header_that_fits_both_word_sizes_says_so(tmp_path):
    """A 64-bit header with time 0 and tv_usec 4096 also reads as a plausible 32-bit one
    (its usec lands on the 32-bit block_size); the sub-header with VMCOREINFO decides."""
    import struct
    path = str(tmp_path / "vmcore")
    kdumpgen.write(path, max_mapnr=0x1000, utsname=dict(UTS, machine="x86_64"),
                   vmcoreinfo=VMCI, timestamp=0)
    with open(path, "r+b") as fh:
        fh.seek(416)
        fh.write(struct.pack("<q", 4096))  # tv_usec of the 64-bit timeval
    rec = ident(path).record
    assert rec["ident"]["word_size"] == 64 and rec["kernel"]["release"] == RELEASE
    assert any("fits the 64-bit" in w and "32-bit" in w for w in rec["ident"]["warnings"]), rec
