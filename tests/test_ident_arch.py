"""Architectures and layouts that cannot be booted here, as small synthetic ELF cores.

Each core is built below (ELF header, program headers, a VMCOREINFO note, one
NT_PRSTATUS note and a PT_LOAD holding a utsname) and is accepted only
because independent tools read it the same way: binutils ``readelf -h``
vouches for class, byte order, type and machine, ``readelf -n`` for the note
owners, types and the VMCOREINFO bytes (printed as hex), ``readelf -l`` for the
program header count (including the ``e_phnum == 0xffff`` extension) and
addresses, and ``file`` for "core file" and the architecture.  Only then is
cas-ident run on it.

The kdump header versions 1 to 5 are real makedumpfile output with the
version field lowered; ``crash --osrelease`` vouches for versions 3 to 5.
"""

import os
import re
import shutil
import struct
import subprocess

import pytest

from conftest import run
from caslib.dumps import kdumphdr, flattened

EM = {"x86_64": 62, "i386": 3, "aarch64": 183, "ppc64": 21, "s390x": 22, "ia64": 50,
      "riscv64": 243}
READELF_MACHINE = {62: "Advanced Micro Devices X86-64", 3: "Intel 80386", 183: "AArch64",
                   21: "PowerPC64", 22: "IBM S/390", 50: "Intel IA-64", 243: "RISC-V"}
FILE_MACHINE = {62: "x86-64", 3: "Intel 80386", 183: "ARM aarch64", 21: "64-bit PowerPC",
                22: "IBM S/390", 50: "IA-64", 243: "RISC-V"}

# (name, elf class, endian, e_machine, uname -m in utsname, symbol, p_vaddr, extra vmcoreinfo,
#  expected machine, expected translation)
CASES = [
    ("x86_64-kdump", 64, "<", 62, "x86_64", 0xFFFFFFFF82A1E2E0, "virt", "", "x86_64",
     "p_vaddr"),
    ("x86_64-xnum", 64, "<", 62, "x86_64", 0xFFFFFFFF82A1E2E0, "virt", "", "x86_64",
     "p_vaddr"),
    ("i386-elf32", 32, "<", 3, "i686", 0xC1A2B3C0, "virt", "", "i686", "p_vaddr"),
    ("i386-qemu-elf64", 64, "<", 3, "i686", 0xC1A2B3C0, "phys", "", "i686",
     "PAGE_OFFSET"),
    ("aarch64-qemu", 64, "<", 183, "aarch64", 0xFFFF800009A2B3C0, "phys",
     "NUMBER(kimage_voffset)=0xffff7fff80000000\n", "aarch64", "kimage_voffset"),
    ("ppc64-be", 64, ">", 21, "ppc64", 0xC000000002A2B3C0, "virt", "", "ppc64", "p_vaddr"),
    ("ppc64le", 64, "<", 21, "ppc64le", 0xC000000002A2B3C0, "phys", "", "ppc64le",
     "0xc000000000000000"),
    ("s390x", 64, ">", 22, "s390x", 0x1A2B3C0, "phys", "", "s390x", "identity"),
    ("ia64", 64, "<", 50, "ia64", 0xA000000101A2B3C0, "virt", "", "ia64", "p_vaddr"),
    ("riscv64", 64, "<", 243, "riscv64", 0xFFFFFFFF81A2B3C0, "phys",
     "NUMBER(va_kernel_pa_offset)=0xffffffff00000000\n", "riscv64", "va_kernel_pa_offset"),
]


def uts(machine: str, release: str) -> bytes:
    fields = [b"Linux", b"archhost", release.encode(), b"#1 SMP Tue Jan 9 2024", machine.encode(),
              b"(none)"]
    return b"".join(f.ljust(65, b"\0") for f in fields)


def note(e: str, name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack(e + "III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def phys_of(case, sym: int) -> int:
    name = case[0]
    if name.startswith("i386"):
        return sym - 0xC0000000
    if name.startswith("aarch64"):
        return sym - 0xFFFF7FFF80000000
    if name.startswith("ppc64le"):
        return sym - 0xC000000000000000
    if name.startswith("riscv64"):
        return sym - 0xFFFFFFFF00000000
    return sym


def build_core(path: str, case, symbol_delta: int = 0) -> dict:
    name, cls, e, em, machine, sym, where, extra, _, _ = case
    release = f"6.1.0-{name}"
    vmcoreinfo = (f"OSRELEASE={release}\nBUILD-ID={'ab' * 20}\nPAGESIZE=4096\n"
                  f"SYMBOL(init_uts_ns)={sym + symbol_delta:x}\n"
                  f"OFFSET(uts_namespace.name)=0\n{extra}"
                  "CRASHTIME=1704800000\n").encode()
    longsize = 8 if cls == 64 and em != 3 else 4
    prsz = 336 if longsize == 8 else 144
    prstatus = bytearray(prsz)
    struct.pack_into(e + "i", prstatus, 16 + 2 * longsize, 4242)
    notes = note(e, b"CORE", 1, bytes(prstatus)) + note(e, b"VMCOREINFO", 0, vmcoreinfo)
    page = sym & ~0xFFF
    data = bytearray(8192)
    data[sym - page:sym - page + 390] = uts(machine, release)
    xnum = name.endswith("xnum")
    phnum = 2
    ehsize, phent, shent = (64, 56, 64) if cls == 64 else (52, 32, 40)
    phoff = ehsize
    shoff = phoff + phnum * phent if xnum else 0
    notes_off = phoff + phnum * phent + (shent if xnum else 0)
    load_off = (notes_off + len(notes) + 4095) & ~4095
    vaddr = page if where == "virt" else 0
    paddr = phys_of(case, page) if where == "phys" else 0
    ident = b"\x7fELF" + bytes([1 if cls == 32 else 2, 1 if e == "<" else 2, 1]) + b"\0" * 9
    if cls == 64:
        hdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 4, em, 1, 0, phoff, shoff, 0, ehsize,
                                  phent, 0xFFFF if xnum else phnum, shent if xnum else 0,
                                  1 if xnum else 0, 0)
        ph = struct.pack(e + "IIQQQQQQ", 4, 0, notes_off, 0, 0, len(notes), len(notes), 0)
        ph += struct.pack(e + "IIQQQQQQ", 1, 7, load_off, vaddr, paddr, len(data), len(data), 0)
        sh = struct.pack(e + "IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0) if xnum else b""
    else:
        hdr = ident + struct.pack(e + "HHIIIIIHHHHHH", 4, em, 1, 0, phoff, shoff, 0, ehsize,
                                  phent, phnum, 0, 0, 0)
        ph = struct.pack(e + "IIIIIIII", 4, notes_off, 0, 0, len(notes), len(notes), 0, 0)
        ph += struct.pack(e + "IIIIIIII", 1, load_off, vaddr, paddr, len(data), len(data), 7, 0)
        sh = b""
    with open(path, "wb") as fh:
        fh.write(hdr + ph + sh + notes)
        fh.seek(load_off)
        fh.write(data)
    return {"release": release, "vmcoreinfo": vmcoreinfo}


def readelf(*args) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_synthetic_core_vouched_by_readelf_and_file(case, tmp_path):
    if not shutil.which("readelf"):
        pytest.skip("binutils readelf not installed")
    name, cls, e, em = case[:4]
    path = str(tmp_path / f"vmcore.{name}")
    built = build_core(path, case)
    # --- the independent tools read the file as we built it
    head = readelf("-h", path)
    assert re.search(rf"Class:\s+ELF{cls}", head), head
    assert ("little endian" if e == "<" else "big endian") in head
    assert re.search(r"Type:\s+CORE", head), head
    assert re.search(rf"Machine:\s+{re.escape(READELF_MACHINE[em])}\s*$", head, re.M), head
    notes = readelf("-n", path)
    assert re.search(r"CORE\s+0x[0-9a-f]+\s+NT_PRSTATUS", notes), notes
    m = re.search(r"VMCOREINFO\s+0x[0-9a-f]+\s+.*?description data: ([0-9a-f ]+)", notes, re.S)
    assert m, notes
    assert bytes.fromhex(m.group(1)) == built["vmcoreinfo"]
    loads = readelf("-l", path)
    assert "There are 2 program headers" in loads, loads
    if shutil.which("file"):
        desc = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
        assert "core file" in desc and FILE_MACHINE[em] in desc, desc
    # --- and cas-ident reads the same
    res = run("cas-ident", path)
    assert res.returncode == 0, res
    rec = res.record
    k = rec["kernel"]
    assert rec["format"] == "elf" and rec["ident_method"] == "vmcoreinfo"
    assert k["release"] == built["release"]
    assert k["machine"] == case[8]
    assert k["hostname"] == "archhost"
    assert k["version"] == "#1 SMP Tue Jan 9 2024"
    assert k["build_id"] == "ab" * 20
    assert k["crash_time"] == "2024-01-09T11:33:20Z"
    assert rec["ident"]["elf_class"] == cls
    assert case[9] in rec["ident"]["utsname_at"], rec["ident"]
    assert rec["ident"]["cpu_pids"] == [4242]
    assert rec["ident"]["panic_pid"] == 4242 and rec["ident"]["panic_cpu"] == 0


def test_machine_from_e_machine_alone(tmp_path):
    """Without a readable utsname the machine comes from e_machine and EI_DATA."""
    for case, want in ((CASES[6], "ppc64le"), (CASES[5], "ppc64"), (CASES[2], "i386")):
        path = str(tmp_path / case[0])
        build_core(path, case, symbol_delta=0x100000)  # the symbol misses every PT_LOAD
        assert re.search(rf"Machine:\s+{re.escape(READELF_MACHINE[case[3]])}",
                         readelf("-h", path))
        rec = run("cas-ident", path).record
        assert rec["kernel"]["machine"] == want, rec
        assert rec["kernel"]["hostname"] is None and rec["kernel"]["version"] is None


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_kdump_header_versions(version, realdump, tmp_path):
    """Real makedumpfile output relabelled as an older header version."""
    src = next((d["path"] for d in realdump["dumps"] if d["variant"] == "makedumpfile-zlib"),
               None)
    if src is None:
        pytest.skip("makedumpfile-zlib dump not built")
    path = str(tmp_path / f"vmcore.v{version}")
    shutil.copy(src, path)
    with open(path, "r+b") as fh:
        fh.seek(8)
        fh.write(struct.pack("<i", version))
    release = realdump["kernel"]["release"]
    if version >= 3 and shutil.which("crash"):
        # crash reads VMCOREINFO from version 3 on; it prints "unknown" for 1 and 2
        out = subprocess.run(["crash", "--osrelease", path], capture_output=True, text=True)
        assert out.stdout.strip() == release, out
    rec = run("cas-ident", path).record
    assert rec["kernel"]["release"] == release
    assert rec["kernel"]["hostname"] == realdump["kernel"]["hostname"]
    assert rec["ident"]["header_version"] == version
    if version < 3:
        # no VMCOREINFO before version 3: the release and host come from the header's utsname
        assert rec["ident_method"] == "utsname"
        assert rec["kernel"]["build_id"] is None
    else:
        assert rec["ident_method"] == "vmcoreinfo"
        assert rec["kernel"]["build_id"] == realdump["kernel"]["build_id"]
    with flattened.FileSource(path) as s:
        assert kdumphdr.read_header(s).header_version == version
