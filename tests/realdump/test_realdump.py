"""Tests of the real-dump builder: its pure helpers (fast), and the manifest it made (realdump)."""

import os
import shutil
import struct
import subprocess

import pytest

from realdump import build

REQUIRED_VARIANTS = {"qemu-elf", "qemu-kdump-flattened", "qemu-kdump-reassembled",
                     "makedumpfile-zlib", "makedumpfile-lzo", "makedumpfile-flattened"}
MAGIC = {"elf": b"\x7fELF", "kdump": b"KDUMP   ", "flattened": b"makedumpfile\0"}


# --- helpers ----------------------------------------------------------------------------------

def parse_newc(data: bytes) -> dict:
    entries, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off: off + filesize]
        off += filesize
        off += -off % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = {"mode": f[1], "data": body, "rdev": (f[9], f[10])}


def test_newc_archive_has_what_the_kernel_needs():
    a = build.Newc()
    a.dir("bin")
    a.chardev("dev/console", 5, 1)
    a.file("bin/busybox", b"\x7fELF...", 0o755)
    a.symlink("bin/sh", "busybox")
    a.file("init", b"#!/bin/sh\n", 0o755)
    entries = parse_newc(a.finish())
    assert entries["bin"]["mode"] == 0o040755
    assert entries["dev/console"]["mode"] == 0o020600 and entries["dev/console"]["rdev"] == (5, 1)
    assert entries["bin/sh"]["mode"] == 0o120777 and entries["bin/sh"]["data"] == b"busybox"
    assert entries["init"]["mode"] == 0o100755 and entries["init"]["data"] == b"#!/bin/sh\n"


def qemu72_layout_elf() -> tuple:
    """An ELF core laid out as QEMU 7.2 writes it: shdrs at 64, phdrs after them, e_ehsize 8."""
    shnum, phnum = 2, 2
    phoff = 64 + 64 * shnum
    note_name = b"VMCOREINFO\0\0"
    desc = b"OSRELEASE=6.1.0-test\nBUILD-ID=" + b"ab" * 20 + b"\n"
    desc += b"\0" * (-len(desc) % 4)
    note = struct.pack("<III", 11, len(desc), 0) + note_name + desc
    note_off = phoff + 56 * phnum
    load = bytes(range(256)) * 16
    load_off = note_off + len(note)
    strtab_off = load_off + len(load)
    strtab = b"\0.shstrtab\0"
    ehdr = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 64, 0, 8, 56, phnum, 64,
                          shnum, 1))
    shdrs = (struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
             + struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0))
    phdrs = (struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(note), len(note), 0)
             + struct.pack("<IIQQQQQQ", 1, 7, load_off, 0x1000, 0x1000, len(load), len(load), 0))
    return ehdr + shdrs + phdrs + note + load + strtab, load_off, load


def test_fix_qemu_elf_moves_program_headers_to_64(tmp_path):
    data, load_off, load = qemu72_layout_elf()
    src, dst = tmp_path / "qemu.elf", tmp_path / "fixed.elf"
    src.write_bytes(data)
    fix = build.fix_qemu_elf(str(src), str(dst))
    out = dst.read_bytes()
    assert fix["before"] == {"e_phoff": 192, "e_shoff": 64, "e_ehsize": 8, "e_phnum": 2,
                             "e_shnum": 2}
    phoff, shoff = struct.unpack_from("<QQ", out, 32)
    assert (phoff, shoff, struct.unpack_from("<H", out, 52)[0]) == (64, 64 + 2 * 56, 64)
    assert out[64:64 + 112] == data[192:192 + 112]          # the program headers, moved
    assert out[176:176 + 128] == data[64:64 + 128]          # the section headers, after them
    assert out[load_off:] == data[load_off:]                 # contents untouched
    assert out[load_off:load_off + len(load)] == load
    if shutil.which("readelf"):
        notes = subprocess.run(["readelf", "-n", str(dst)], capture_output=True, text=True)
        assert "VMCOREINFO" in notes.stdout
        segs = subprocess.run(["readelf", "-lW", str(dst)], capture_output=True, text=True)
        assert "Start of program headers" not in segs.stderr and "LOAD" in segs.stdout


def test_fix_qemu_elf_refuses_unknown_layouts(tmp_path):
    data, _, _ = qemu72_layout_elf()
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 32, 1000)  # phdrs not right after the shdrs
    (tmp_path / "bad.elf").write_bytes(bytes(bad))
    with pytest.raises(build.BuildError):
        build.fix_qemu_elf(str(tmp_path / "bad.elf"), str(tmp_path / "out.elf"))


@pytest.mark.skipif(not shutil.which("readelf"), reason="needs readelf (binutils)")
def test_tiny_elf_is_a_real_elf_with_a_build_id(tmp_path):
    bid = bytes(range(20))
    path = tmp_path / "vmlinux"
    path.write_bytes(build.tiny_elf(bid, "Linux version 6.1.0-55-cloud-amd64 (x) #1"))
    assert build.readelf_build_id(str(path)) == bid.hex()
    assert b"Linux version 6.1.0-55-cloud-amd64" in path.read_bytes()


def test_rpm_names_and_decoys():
    assert build.rpm_version_release("6.1.0-56-cloud-amd64") == ("6.1.0", "56_cloud_amd64")
    assert build.rpm_version_release("6.1.0-56-amd64") == ("6.1.0", "56_amd64")
    assert build.decoy_releases("6.1.0-56-cloud-amd64") == [
        "6.1.0-55-cloud-amd64", "6.1.0-56-amd64", "6.1.0-57-cloud-amd64"]
    assert build.decoy_releases("6.1.0-56-amd64")[1] == "6.1.0-56-cloud-amd64"


@pytest.mark.parametrize("release", ["6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64",
                                     "6.1.0-57-cloud-amd64", "6.1.0-99-amd64"])
def test_decoy_rule_follows_the_kernel(release):
    """Whatever the mirror serves: the decoys are ABI - 1, the other flavour and ABI + 1 of
    that kernel, never the kernel itself, and an ABI + 2 release is none of them."""
    base, abi, flavour = release.split("-", 2)
    d = build.decoys(release)
    assert d["older"] == f"{base}-{int(abi) - 1}-{flavour}"
    assert d["newer"] == f"{base}-{int(abi) + 1}-{flavour}"
    assert d["other_flavour"].startswith(f"{base}-{abi}-")
    assert d["other_flavour"] != release
    assert build.decoy_releases(release) == [d["older"], d["other_flavour"], d["newer"]]
    assert release not in d.values() and build.abi_shift(release, 2) not in d.values()


def test_parse_crash_sys():
    text = ("      KERNEL: /x/vmlinux\n    DUMPFILE: d  [PARTIAL DUMP]\nLOAD AVERAGE: 0.00\n"
            "    NODENAME: casdemo\n     RELEASE: 6.1.0-56-cloud-amd64\n"
            "     VERSION: #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)\n"
            "     MACHINE: x86_64  (2596 Mhz)\n"
            '       PANIC: "Kernel panic - not syncing: sysrq triggered crash"\n')
    f = build.parse_crash_sys(text)
    assert f["RELEASE"] == "6.1.0-56-cloud-amd64" and f["NODENAME"] == "casdemo"
    assert f["DUMPFILE"] == "d  [PARTIAL DUMP]"
    assert f["PANIC"].endswith('sysrq triggered crash"')


def test_manifest_ok_rejects_partial_caches(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"1234")
    m = tmp_path / "manifest.json"
    m.write_text('{"schema": %d, "builder": %d, "panics": {}, "files": [{"path": "%s", '
                 '"size": 4}]}' % (build.SCHEMA, build.BUILDER, f))
    assert build.manifest_ok(str(m))
    f.write_bytes(b"12")
    assert not build.manifest_ok(str(m))
    m.write_text('{"schema": 1')
    assert not build.manifest_ok(str(m))


# --- the real test bed ------------------------------------------------------------------------

@pytest.mark.realdump
def test_manifest_lists_every_file_with_its_size(realdump):
    assert realdump["schema"] == 1
    for key in ("kernel_package_version", "kernel", "vmlinux", "modules", "dumps", "rpms",
                "facts", "build_seconds"):
        assert key in realdump
    for f in realdump["files"]:
        assert os.path.getsize(f["path"]) == f["size"], f
    assert os.path.isfile(realdump["vmlinux"])
    assert realdump["modules"] and all(os.path.isfile(m) for m in realdump["modules"])


@pytest.mark.realdump
def test_kernel_facts_agree_across_independent_sources(realdump):
    k, facts = realdump["kernel"], realdump["facts"]
    assert k["hostname"] == build.HOSTNAME and k["machine"] == "x86_64"
    assert k["panic"] == build.PANIC_TEXT
    assert k["release"] == facts["readelf_vmcoreinfo"]["OSRELEASE"]
    assert k["build_id"] == facts["readelf_vmcoreinfo"]["BUILD-ID"]
    assert k["build_id"] == facts["readelf_vmlinux_build_id"]
    assert len(k["build_id"]) == 40
    assert k["version"].startswith("#1 SMP") and realdump["kernel_package_version"] in k["version"]
    for variant, sysf in facts["crash_per_dump"].items():
        assert (sysf["RELEASE"], sysf["NODENAME"]) == (k["release"], k["hostname"]), variant


@pytest.mark.realdump
def test_every_dump_has_its_format_magic(realdump):
    variants = {d["variant"] for d in realdump["dumps"]}
    assert REQUIRED_VARIANTS <= variants
    for d in realdump["dumps"]:
        with open(d["path"], "rb") as fh:
            assert fh.read(16).startswith(MAGIC[d["format"]]), d["name"]
        assert d["crash_opens"], d["name"]


@pytest.mark.realdump
def test_rpms_are_fedora_style_kernel_debuginfo(realdump):
    k = realdump["kernel"]
    real = [r for r in realdump["rpms"] if not r["decoy"]]
    decoys = [r for r in realdump["rpms"] if r["decoy"]]
    assert sorted(r["payload"] for r in real) == ["gzip", "xz", "zstd"]
    assert len(decoys) >= 2
    for r in real:
        assert (r["name"], r["arch"], r["uname_r"]) == ("kernel-debuginfo", "x86_64", k["release"])
        assert os.path.basename(r["path"]) == \
            f"kernel-debuginfo-{r['version']}-{r['release']}.x86_64.rpm"
        assert r["vmlinux_member"] == f"/usr/lib/debug/lib/modules/{k['release']}/vmlinux"
        assert r["vmlinux_build_id"] == k["build_id"]
        assert f"/usr/lib/debug/.build-id/{k['build_id'][:2]}/{k['build_id'][2:]}.debug" \
            in r["build_id_links"]
    names = [os.path.basename(r["path"]) for r in decoys]
    assert len(set(names)) == len(names) and not set(names) & {
        os.path.basename(r["path"]) for r in real}
    assert all(r["uname_r"] != k["release"] for r in decoys)


MODULE_KINDS = ("null", "paging", "gpf", "stack", "bug", "warn", "softlockup", "hung")


@pytest.mark.realdump
def test_panics_of_every_kind_with_what_crash_says(realdump):
    p = realdump["panics"]
    made = set(p["kinds"])
    assert {"oom", "init"} <= made
    if p["module"]["module"] is None:  # the module could not be built: the reason is given
        assert p["module"]["reason"] and all(p["skipped"].get(k) for k in MODULE_KINDS)
    else:
        assert set(MODULE_KINDS) <= made
        assert os.path.isfile(p["module"]["path"])
    assert "hard-lockup" in p["skipped"]
    for kind in p["second_boot"]:
        assert [d["boot"] for d in p["kinds"][kind]] == [1, 2]
    expect = {"oom": "Out of memory", "init": "Attempted to kill init!", "null": "Oops:",
              "paging": "Oops:", "gpf": "Fatal exception",
              "stack": "stack-protector: Kernel stack is corrupted in: casfault_smash",
              "bug": "kernel BUG at casfault/casfault.c:", "warn": "panic_on_warn set",
              "softlockup": "softlockup: hung tasks", "hung": "hung_task: blocked tasks"}
    for kind, dumps in p["kinds"].items():
        for d in dumps:
            assert os.path.getsize(d["path"]) == d["size"]
            with open(d["path"], "rb") as fh:
                assert fh.read(8) == b"KDUMP   "
            c = d["crash"]
            assert expect[kind] in c["panic"], (kind, c["panic"])
            assert c["frames"] and c["frames"][0] == "panic"
            if kind in ("oom", "init"):
                assert c["mod_taints"] == {} and c["log_tainted"] is None
            else:
                assert c["mod_taints"] == {"casfault": "OE"} and "OE" in c["log_tainted"]
    assert p["kinds"]["init"][0]["crash"]["pid"] == 1
    assert any(f == "casfault_spin [casfault]" for f in p["kinds"]["softlockup"][0]["crash"]["frames"])
