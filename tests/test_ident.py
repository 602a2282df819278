"""cas-ident on real dumps (QEMU and makedumpfile, from tests/realdump) and on bad input.

Every dump here was written by a real tool: QEMU dump-guest-memory (ELF and
its kdump-zlib flattened stream), makedumpfile (-c, -l, -F, -R); bad inputs
are real files cut or altered at the header boundaries the parsers use,
files made by real tools (gcore, convert, gzip) and random bytes.
"""

import gzip
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from conftest import run
from caslib.dumps import bannerscan, elfcore, flattened, kdumphdr, utsname, vmcoreinfo
from caslib import ident

MiB = 1 << 20


def dumps(realdump) -> dict:
    return {d["variant"]: d for d in realdump["dumps"]}


def dump_path(realdump, variant: str) -> str:
    d = dumps(realdump).get(variant)
    if d is None:
        pytest.skip(f"real dump variant {variant} not built here")
    return d["path"]


def assert_clean_error(res, kind: str, path: str | None = None, partial: bool = False):
    """One error record of ``kind``, exit 1, one stderr line, no traceback."""
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res
    rec = res.record
    assert rec["error"]["step"] == "cas-ident", rec
    kinds = kind if isinstance(kind, (tuple, set)) else (kind,)
    assert rec["error"]["kind"] in kinds, rec
    assert "\n" not in rec["error"]["message"]
    if path:
        assert path in rec["error"]["message"]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "kernel" not in rec
    assert ("format" in rec) == partial
    return rec


# ---------------------------------------------------------------- real dumps

def test_every_real_dump_names_the_kernel(realdump):
    """One run over every variant: release, machine, hostname and build-id as crash saw them."""
    want = realdump["kernel"]
    paths = [d["path"] for d in realdump["dumps"]]
    res = run("cas-ident", *paths)
    assert res.returncode == 0, res
    assert len(res.records) == len(paths)
    for d, rec in zip(realdump["dumps"], res.records):
        assert rec["core"] == d["path"]
        k = rec["kernel"]
        assert k["release"] == want["release"], (d["variant"], rec)
        assert k["machine"] == want["machine"], (d["variant"], rec)
        assert k["build_id"] == want["build_id"], (d["variant"], rec)
        # every variant here has a readable utsname: makedumpfile copies it into its header,
        # QEMU's ELF and kdump dumps give it through init_uts_ns
        assert k["hostname"] == want["hostname"], (d["variant"], rec)
        assert k["version"] == want["version"], (d["variant"], rec)
        assert rec["format"] == d["format"], (d["variant"], rec)
        assert rec["ident_method"] == "vmcoreinfo"
        # the guest panicked through sysrq without a kdump kernel: no CRASHTIME, and
        # makedumpfile's header timestamp comes from it, so the time is unknown
        assert k["crash_time"] is None
        assert k["banner"] is None
        assert rec["ident"]["bytes_read"] <= MiB, (d["variant"], rec["ident"])


def test_qemu_elf_reads_init_uts_ns_through_physical_addresses(realdump):
    facts = ident.identify(dump_path(realdump, "qemu-elf"))
    # QEMU paging=false: PT_LOADs have p_vaddr 0, so the symbol is translated with phys_base
    assert "p_paddr" in facts["ident"]["utsname_at"]
    assert "NUMBER(phys_base)" in facts["ident"]["utsname_at"]
    assert facts["ident"]["qemu_notes"] is True
    assert facts["ident"]["sources"]["hostname"] == "init_uts_ns"
    assert facts["ident"]["cpus"] >= 1
    assert "cpu_pids" not in facts["ident"]  # QEMU writes vCPU numbers, not pids
    assert facts["ident"]["bytes_read"] < 64 * 1024


def test_qemu_kdump_reads_hostname_through_page_descriptors(realdump):
    for variant in ("qemu-kdump-flattened", "qemu-kdump-reassembled"):
        facts = ident.identify(dump_path(realdump, variant))
        # QEMU fills only utsname.machine in the header
        assert facts["ident"]["sources"]["hostname"] == "init_uts_ns", facts
        assert "page descriptor" in facts["ident"]["utsname_at"]
        assert facts["ident"]["compression"] == ["zlib"]
        assert facts["kernel"]["hostname"] == realdump["kernel"]["hostname"]


def test_qemu_kdump_header_holds_only_machine(realdump):
    with flattened.FileSource(dump_path(realdump, "qemu-kdump-reassembled")) as src:
        hdr = kdumphdr.read_header(src)
    assert hdr.header_version == 6
    assert hdr.utsname["machine"] == "x86_64"
    assert hdr.utsname["release"] is None and hdr.utsname["nodename"] is None
    info = vmcoreinfo.parse(hdr.vmcoreinfo)
    assert info.osrelease == realdump["kernel"]["release"]
    # QEMU records a wrong phys_base in the sub-header; the guest's VMCOREINFO has the real one,
    # and only that one finds init_uts_ns (see test_qemu_kdump_reads_hostname_...)
    assert hdr.sub["phys_base"] != info.number("phys_base")
    facts = ident.identify(dump_path(realdump, "qemu-kdump-reassembled"))
    assert "NUMBER(phys_base)" in facts["ident"]["utsname_at"]
    assert facts["ident"]["phys_base"] == info.number("phys_base")


def test_makedumpfile_header_utsname_and_subheader(realdump):
    for variant in ("makedumpfile-zlib", "makedumpfile-lzo", "makedumpfile-zstd"):
        if variant not in dumps(realdump):
            continue
        with flattened.FileSource(dump_path(realdump, variant)) as src:
            hdr = kdumphdr.read_header(src)
            assert hdr.utsname["nodename"] == realdump["kernel"]["hostname"]
            assert hdr.utsname["release"] == realdump["kernel"]["release"]
            assert hdr.compression == [variant.split("-")[1]]
            assert hdr.sub["dump_level"] == 31
            assert hdr.sub_layout == "64"


def test_flattened_reads_ranges_without_reassembling(realdump):
    """The flattened source returns the same bytes as makedumpfile -R's reassembled file."""
    flat = dump_path(realdump, "qemu-kdump-flattened")
    whole = dump_path(realdump, "qemu-kdump-reassembled")
    with flattened.open_source(flat) as src, open(whole, "rb") as fh:
        assert isinstance(src, flattened.FlattenedSource)
        for offset, size in ((0, 464), (4096, 4096), (5000, 70000), (1 << 20, 12345)):
            fh.seek(offset)
            assert src.read(offset, size) == fh.read(size), (offset, size)
        src.walk_all()
        assert src.size == os.path.getsize(whole)
        fh.seek(src.size - 4096)
        assert src.read(src.size - 4096, 4096) == fh.read(4096)


def test_flattened_elf_from_makedumpfile(realdump, tmp_path):
    """makedumpfile -E -F rewrites the program headers at the end of the stream: the later
    record wins, as in makedumpfile -R, which vouches for the bytes we read."""
    if not shutil.which("makedumpfile"):
        pytest.skip("makedumpfile not installed")
    src = dump_path(realdump, "qemu-elf-fixed")
    flat, whole = tmp_path / "vmcore.elf.F", tmp_path / "vmcore.elf.R"
    with open(flat, "wb") as out:
        subprocess.run(["makedumpfile", "-E", "-F", "-d", "31", src], stdout=out,
                       stderr=subprocess.DEVNULL, check=True)
    with open(flat, "rb") as fin:
        subprocess.run(["makedumpfile", "-R", str(whole)], stdin=fin, capture_output=True,
                       check=True)
    with flattened.open_source(str(flat)) as fsrc, open(whole, "rb") as fh:
        head = fh.read(1 << 16)
        assert fsrc.read(0, len(head)) == head
        offsets = {r[0] for r in fsrc.records}
        assert len(fsrc.records) > len(offsets)  # some ranges are written twice
    res = run("cas-ident", flat)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["format"] == "flattened" and rec["ident"]["inner_format"] == "elf"
    assert rec["ident_method"] == "vmcoreinfo"
    for key in ("release", "machine", "hostname", "build_id"):
        assert rec["kernel"][key] == realdump["kernel"][key], key
    assert rec["kernel"] == run("cas-ident", whole).record["kernel"]


def test_vmcoreinfo_from_real_note_matches_readelf(realdump):
    path = dump_path(realdump, "qemu-elf")
    with flattened.FileSource(path) as src:
        core = elfcore.read_elf(src)
    note = core.note("VMCOREINFO")
    info = vmcoreinfo.parse(note.desc)
    assert info.osrelease == realdump["kernel"]["release"]
    assert info.build_id == realdump["kernel"]["build_id"]
    assert info.symbol("init_uts_ns") is not None
    assert info.number("phys_base") is not None
    # readelf vouches for the notes we parse
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
    assert out.count("VMCOREINFO") >= 1
    assert out.count("NT_PRSTATUS") == sum(
        1 for n in core.notes if n.name == "CORE" and n.type == elfcore.NT_PRSTATUS)


def test_banner_scan_finds_the_release_in_real_memory(realdump, tmp_path):
    """A raw memory image (the real dump's RAM, no headers) is named by the fallback scan."""
    path = dump_path(realdump, "qemu-elf")
    with flattened.FileSource(path) as src:
        core = elfcore.read_elf(src)
    first = min(s.offset for s in core.loads)
    raw = tmp_path / "memory.raw"
    with open(path, "rb") as fin, open(raw, "wb") as fout:
        fin.seek(first)
        shutil.copyfileobj(fin, fout, 1 << 20)
    res = run("cas-ident", "--buffersize", "64M", raw)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["format"] == "raw"
    assert rec["ident_method"] == "banner"
    assert rec["kernel"]["release"] == realdump["kernel"]["release"]
    assert rec["kernel"]["hostname"] is None and rec["kernel"]["build_id"] is None
    assert rec["ident"]["scanned"] == 64 * MiB
    # a tiny buffer finds nothing and says so
    res = run("cas-ident", "--buffersize", "4K", raw)
    rec = assert_clean_error(res, "not-a-dump", str(raw))
    assert "--buffersize" in rec["error"]["message"]


def test_banner_scan_reports_disagreeing_banners(realdump, tmp_path):
    """Real guest RAM holding only banner fragments, plus this host's own banner."""
    path = dump_path(realdump, "qemu-elf")
    with open("/proc/version", "rb") as fh:
        host = fh.read()
    if realdump["kernel"]["release"].encode() in host:
        pytest.skip("the host runs the guest's kernel")
    # the first banner copy in RAM sits inside the compressed kernel image, cut after '@'
    with open(path, "rb") as fh:
        data = fh.read(64 * MiB)
    at = data.find(b"Linux version " + realdump["kernel"]["release"].encode())
    if at < 0 or b"OSRELEASE=" in data[max(0, at - MiB):at + MiB]:
        pytest.skip("no banner-only region in the first 64 MiB")
    raw = tmp_path / "mixed.raw"
    raw.write_bytes(data[max(0, at - MiB):at + MiB] + host)
    res = run("cas-ident", raw)
    rec = assert_clean_error(res, "ambiguous", str(raw), partial=True)
    assert realdump["kernel"]["release"] in rec["error"]["message"]
    assert rec["ident"]["candidates"][0] == realdump["kernel"]["release"]


def test_sparse_64gib_elf(realdump, tmp_path):
    """Real headers with the last PT_LOAD stretched to 64 GiB: still a few KiB read."""
    path = dump_path(realdump, "qemu-elf")
    big = tmp_path / "vmcore.64g"
    stretch_elf(path, str(big), 64 << 30, copy_data=False)
    res = run("cas-ident", big)
    assert res.returncode == 0, res
    rec = res.record
    assert os.path.getsize(big) >= 64 << 30
    assert rec["kernel"]["release"] == realdump["kernel"]["release"]
    assert rec["kernel"]["build_id"] == realdump["kernel"]["build_id"]
    assert rec["ident"]["bytes_read"] < 64 * 1024


def stretch_elf(src: str, dst: str, size: int, copy_data: bool = True) -> None:
    """Copy a real ELF dump (all of it, or only its headers and notes) and stretch the
    last PT_LOAD so the file is ``size`` bytes; the copy is sparse."""
    with flattened.FileSource(src) as s:
        core = elfcore.read_elf(s)
        phoff = struct.unpack_from("<Q", s.read(32, 8))[0]
        headers_end = max(x.offset + x.filesz for x in core.segments if x.type != elfcore.PT_LOAD)
    last = max(range(len(core.segments)), key=lambda i: core.segments[i].offset)
    seg = core.segments[last]
    grow = size - (seg.offset + seg.filesz)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if copy_data:
            shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            fout.write(fin.read(headers_end))
        entry = phoff + last * 56
        fout.seek(entry + 32)
        fout.write(struct.pack("<QQ", seg.filesz + grow, seg.memsz + grow))
        fout.truncate(size)


# ---------------------------------------------------------------- the record contract

def test_records_pass_through_in_order(realdump, tmp_path, casenv, config_file):
    # a record's core must lie in its job directory under workDirectory
    job = tmp_path / "work" / "a1" / "2026.01.02.03.04.05"
    job.mkdir(parents=True)
    path = str(job / "vmcore")
    os.link(dump_path(realdump, "makedumpfile-zlib"), path)
    records = [{"id": "a1", "job": "a1", "workdir": str(job), "core": path, "zz": [1, 2]},
               {"id": "a2", "core": path, "error": {"step": "cas-unpack", "message": "x",
                                                     "kind": "corrupt"}}]
    res = run("cas-ident", "--config", config_file(), input=records, env=casenv)
    assert res.returncode == 1, res  # the second record carries an error
    first, second = res.records
    assert list(first)[:5] == ["id", "job", "workdir", "core", "zz"]
    assert first["zz"] == [1, 2] and first["kernel"]["hostname"] == realdump["kernel"]["hostname"]
    assert second == records[1]


def test_process_is_the_python_interface(realdump):
    path = dump_path(realdump, "makedumpfile-zlib")
    out = ident.process({"core": path, "keep": 1}, None)
    assert out["keep"] == 1 and out["kernel"]["release"] == realdump["kernel"]["release"]
    assert ident.identify(path)["kernel"] == out["kernel"]


def test_buffersize_from_config(config_file, casenv, tmp_path):
    raw = tmp_path / "text"
    raw.write_bytes(b"x" * 100000)
    cfg = config_file(extra="[advanced]\nbuffersize = 8K\n")
    res = run("cas-ident", "--config", cfg, raw, env=casenv)
    rec = assert_clean_error(res, "not-a-dump", str(raw))
    assert "first 8192 bytes" in rec["error"]["message"]


def test_usage_errors():
    res = run("cas-ident", "--buffersize", "lots", "x")
    assert res.returncode == 2 and "--buffersize" in res.stderr and not res.stdout
    res = run("cas-ident", "--no-such-flag")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_man_page_mentions_every_option():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(here, "man", "cas-ident.1")).read()
    assert text.startswith(".TH CAS-IDENT 1")
    for opt in ("buffersize", "config", "help"):
        assert f"\\-\\-{opt}" in text, opt


# ---------------------------------------------------------------- bad input

def test_missing_file_and_record_without_core(tmp_path):
    res = run("cas-ident", tmp_path / "nope")
    assert_clean_error(res, "not-found", str(tmp_path / "nope"))
    res = run("cas-ident", input={"id": "x"})
    assert_clean_error(res, "bad-record")


def test_empty_file(tmp_path):
    p = tmp_path / "vmcore"
    p.write_bytes(b"")
    rec = assert_clean_error(run("cas-ident", p), "empty", str(p))
    assert "empty file" in rec["error"]["message"]


def test_random_bytes(tmp_path):
    p = tmp_path / "random"
    p.write_bytes(os.urandom(256 * 1024))
    assert_clean_error(run("cas-ident", p), "not-a-dump", str(p))


def test_jpeg(tmp_path):
    """A JPEG written by libjpeg-turbo's cjpeg."""
    if not shutil.which("cjpeg"):
        pytest.skip("cjpeg (libjpeg-turbo-progs) not installed")
    ppm = tmp_path / "photo.ppm"
    ppm.write_bytes(b"P6 64 64 255\n" + bytes(range(256)) * 48)
    p = tmp_path / "photo.jpg"
    with open(p, "wb") as out:
        subprocess.run(["cjpeg", str(ppm)], stdout=out, check=True)
    rec = assert_clean_error(run("cas-ident", p), "not-a-dump", str(p))
    assert "ff d8 ff" in rec["error"]["message"]


def test_elf_executable(tmp_path):
    p = tmp_path / "python"
    shutil.copy(sys.executable if os.path.getsize(sys.executable) > 1000 else "/bin/ls", p)
    rec = assert_clean_error(run("cas-ident", p), "not-a-dump", str(p))
    assert "not a core file" in rec["error"]["message"]


def test_gzip_says_unpack_first(tmp_path):
    p = tmp_path / "vmcore.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"KDUMP   " + b"\0" * 1000)
    rec = assert_clean_error(run("cas-ident", p), "compressed", str(p))
    assert "cas-unpack" in rec["error"]["message"]


def test_user_space_core_names_the_process(tmp_path):
    """A real process core written by gdb's gcore: refused, naming the process."""
    if not shutil.which("gcore"):
        pytest.skip("gdb's gcore not installed")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.2)
        prefix = str(tmp_path / "core")
        done = subprocess.run(["gcore", "-o", prefix, str(proc.pid)], capture_output=True,
                              text=True, timeout=120)
    finally:
        proc.kill()
        proc.wait()
    core = f"{prefix}.{proc.pid}"
    if done.returncode != 0 or not os.path.exists(core):
        pytest.skip(f"gcore cannot attach here: {done.stderr.strip()[-200:]}")
    out = subprocess.run(["readelf", "-n", core], capture_output=True, text=True).stdout
    assert "NT_PRPSINFO" in out  # readelf vouches: a process core
    rec = assert_clean_error(run("cas-ident", core), "not-a-kernel-dump", core)
    assert "'sleep'" in rec["error"]["message"]


def prefix_copy(src: str, dst, size: int, sparse_to: int | None = None):
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(size))
        if sparse_to:
            fout.truncate(sparse_to)
    return str(dst)


def test_elf_truncated_at_every_header_boundary(realdump, tmp_path):
    path = dump_path(realdump, "qemu-elf")
    with flattened.FileSource(path) as src:
        head = src.read(0, 64)
        core = elfcore.read_elf(src)
    phoff = struct.unpack_from("<Q", head, 32)[0]
    phend = phoff + 56 * len(core.segments)
    note = next(s for s in core.segments if s.type == elfcore.PT_NOTE)
    last = max(s.offset + s.filesz for s in core.loads)
    cuts = [1, 4, 20, 63, 64, phoff + 30, phend - 1, phend, note.offset + 100,
            note.offset + note.filesz - 1, note.offset + note.filesz, last - 1]
    for cut in sorted(set(cuts)):
        p = prefix_copy(path, tmp_path / f"cut{cut}", min(cut, 1 << 20), sparse_to=cut)
        res = run("cas-ident", "--buffersize", "1M", p)
        rec = assert_clean_error(res, "truncated" if cut >= 4 else "not-a-dump", p)
        assert "Traceback" not in res.stderr, (cut, rec)
        os.unlink(p)


def test_kdump_truncated_and_corrupt_subheader(realdump, tmp_path):
    path = dump_path(realdump, "makedumpfile-zlib")
    with flattened.FileSource(path) as src:
        hdr = kdumphdr.read_header(src)
    bs = hdr.block_size
    vmci_off = hdr.sub["off_vmci"]
    descs = (1 + hdr.sub_hdr_size + hdr.bitmap_blocks) * bs
    for cut in (8, 100, 463, bs + 4, vmci_off + 10, descs - 1, descs + 10):
        p = prefix_copy(path, tmp_path / f"cut{cut}", cut)
        rec = assert_clean_error(run("cas-ident", "--buffersize", "1M", p), "truncated", p)
        if cut == 8:
            assert "kdump" in rec["error"]["message"]
        os.unlink(p)
    # the sub-header's VMCOREINFO offset pointing past the end of the file
    p = str(tmp_path / "badsub")
    shutil.copy(path, p)
    with open(p, "r+b") as fh:
        fh.seek(bs + 32)
        fh.write(struct.pack("<q", os.path.getsize(path) + (1 << 40)))
    rec = assert_clean_error(run("cas-ident", p), "corrupt", p)
    assert "VMCOREINFO" in rec["error"]["message"]
    # a block size no layout accepts
    with open(p, "r+b") as fh:
        fh.seek(428)
        fh.write(struct.pack("<i", 12345))
    assert_clean_error(run("cas-ident", p), "corrupt", p)


def test_flattened_cut_mid_record(realdump, tmp_path):
    path = dump_path(realdump, "makedumpfile-flattened")
    size = os.path.getsize(path)
    for cut in (20, 4096 + 8, 4096 + 16 + 100, size // 2, size - 8):
        p = prefix_copy(path, tmp_path / f"cut{cut}", cut)
        rec = assert_clean_error(run("cas-ident", p), "truncated", p)
        assert "cut short" in rec["error"]["message"] or "truncated" in rec["error"]["message"]
        os.unlink(p)


def test_absurd_counts_never_allocate(tmp_path, realdump):
    """phnum, note sizes and flattened record sizes far beyond the file: refused cheaply."""
    path = dump_path(realdump, "qemu-elf")
    p = prefix_copy(path, tmp_path / "elf", 1 << 16, sparse_to=os.path.getsize(path))
    with open(p, "r+b") as fh:
        fh.seek(56)
        fh.write(struct.pack("<H", 0xFFFE))   # e_phnum: the table runs into the dump's RAM
    assert_clean_error(run("cas-ident", p), ("truncated", "too-large", "corrupt"), p)
    with open(p, "r+b") as fh:
        fh.seek(56)
        fh.write(struct.pack("<H", 5))
        core_phoff = struct.unpack("<Q", open(path, "rb").read(40)[32:40])[0]
        fh.seek(core_phoff + 32)               # PT_NOTE p_filesz
        fh.write(struct.pack("<Q", 1 << 60))
    assert_clean_error(run("cas-ident", p), "too-large", p)
    flat = dump_path(realdump, "makedumpfile-flattened")
    q = prefix_copy(flat, tmp_path / "flat", 1 << 16)
    with open(q, "r+b") as fh:
        fh.seek(4096 + 8)
        fh.write(struct.pack(">q", 1 << 62))
    assert_clean_error(run("cas-ident", q), "corrupt", q)


# ---------------------------------------------------------------- parser units

def test_vmcoreinfo_parse_first_value_wins_and_types():
    text = (b"OSRELEASE=6.1.0-18-amd64\nBUILD-ID=ABCDEF0123\nPAGESIZE=4096\n"
            b"SYMBOL(init_uts_ns)=ffffffff82a1e2e0\nOFFSET(uts_namespace.name)=0\n"
            b"NUMBER(phys_base)=-1040187392\nKERNELOFFSET=1e00000\nCRASHTIME=1700000000\n"
            b"OSRELEASE=other\nnot a line\n\0\0garbage=after-nul\n")
    info = vmcoreinfo.parse(text)
    assert info.osrelease == "6.1.0-18-amd64"
    assert info.build_id == "abcdef0123"
    assert info.symbol("init_uts_ns") == 0xFFFFFFFF82A1E2E0
    assert info.number("phys_base") == -1040187392
    assert info.kerneloffset == 0x1E00000
    assert info.crashtime == 1700000000 and info.pagesize == 4096
    assert "garbage" not in info
    assert vmcoreinfo.parse(b"\xff\xfe=\x00").osrelease is None


def test_notes_parser_stops_on_garbage():
    good = struct.pack("<III", 5, 4, 1) + b"CORE\0\0\0\0" + b"abcd"
    bad = struct.pack("<III", 5, 1 << 30, 1) + b"CORE\0\0\0\0"
    notes = elfcore.parse_notes(good + bad, "<")
    assert [(n.name, n.type, n.desc) for n in notes] == [("CORE", 1, b"abcd")]


def test_utsname_validation():
    uts = b"".join(x.ljust(65, b"\0") for x in (b"Linux", b"host", b"6.1.0-1-amd64", b"#1 SMP",
                                                   b"x86_64", b"(none)"))
    assert utsname.validate(uts, "6.1.0-1-amd64")["nodename"] == "host"
    assert utsname.validate(uts, "6.1.0-2-amd64") is None
    assert utsname.validate(b"Linuy" + uts[5:], None) is None


def test_size_option_parser():
    from caslib.config import parse_size  # --buffersize and the config's sizes: one parser

    assert parse_size("64M") == 64 << 20 and parse_size("4096") == 4096
    assert parse_size("1g") == 1 << 30 and parse_size("8KiB") == 8192
    for bad in ("", "0", "-1", "1x", "M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_scanner_chunk_boundaries(tmp_path):
    """A hit straddling the 8 MiB chunk edge is seen exactly once."""
    p = tmp_path / "raw"
    line = b"OSRELEASE=5.14.0-1.el9.x86_64\n"
    with open(p, "wb") as fh:
        fh.write(b"\0" * (bannerscan.CHUNK - 5) + line + b"\0" * 100)
    r = bannerscan.scan(str(p), 1 << 30)
    assert r.osrelease == {"5.14.0-1.el9.x86_64": bannerscan.CHUNK - 5}
    assert r.verdict()["release"] == "5.14.0-1.el9.x86_64"
    assert r.scanned == os.path.getsize(p)


def test_scanner_finds_every_hit_at_its_offset(tmp_path):
    """Hits around both chunk edges and the carried overlap, each once, at its file offset."""
    C, O = bannerscan.CHUNK, bannerscan.OVERLAP
    where = [0, 100, C - O - 32, C - O, C - 64, C - 10, C + 20, 2 * C - O, 2 * C - 15,
             2 * C + O + 7]  # 32+ bytes apart: each line stays whole
    data = bytearray(2 * C + 2 * O + 64)
    want = {}
    for i, off in enumerate(where):
        rel = f"{i + 1}.{i}.0-test"
        line = f"OSRELEASE={rel}\n".encode()
        data[off:off + len(line)] = line
        want[rel] = off
    p = tmp_path / "raw"
    p.write_bytes(bytes(data))
    for start in (0, 7):
        r = bannerscan.scan(str(p), 1 << 40, start=start)
        assert r.osrelease == {k: v for k, v in want.items() if v >= start}, start
        assert r.scanned == len(data) - start
        assert r.verdict()["candidates"][0] == min((k for k, v in want.items() if v >= start),
                                                   key=want.get)
    r = bannerscan.scan(str(p), C + 3)  # the limit cuts the line at C + 3
    assert set(r.osrelease) == {k for k, v in want.items() if v + 30 < C + 3}


def test_x86_64_translation_candidates():
    """virt - __START_KERNEL_map + phys_base, phys_base from VMCOREINFO first (may be negative),
    then the kdump sub-header's, then -KERNELOFFSET (physically unrandomised), then 0."""
    virt = 0xFFFFFFFF9A7F9B60
    info = vmcoreinfo.parse(b"NUMBER(phys_base)=-260046848\nKERNELOFFSET=18400000\n")
    got = utsname.phys_candidates("x86_64", info, virt, sub_phys_base=656812406)
    assert [pa for _, pa in got[:4]] == [virt - 0xFFFFFFFF80000000 - 260046848,
                                         virt - 0xFFFFFFFF80000000 + 656812406,
                                         virt - 0xFFFFFFFF80000000 - 0x18400000,
                                         virt - 0xFFFFFFFF80000000]
    assert "NUMBER(phys_base)" in got[0][0]
    bare = utsname.phys_candidates("x86_64", vmcoreinfo.parse(b"KERNELOFFSET=18400000\n"), virt)
    assert bare[0][1] == virt - 0xFFFFFFFF80000000 - 0x18400000
