"""QEMU dumps the real-dump bed does not make: the real-dump kernel booted here again.

With ``paging=true`` QEMU writes PT_LOADs at the guest's virtual addresses, so
``init_uts_ns`` is read through ``p_vaddr`` (the real-dump bed only has
``paging=false`` dumps, read through ``p_paddr``).

Without an initramfs the guest never loads ``qemu_fw_cfg``, so it never registers its
VMCOREINFO with QEMU (QEMU >= 2.11 needs ``-device vmcoreinfo`` *and* the guest driver);
it panics at "VFS: Unable to mount root fs".  QEMU's ELF dump of it has only CPU notes,
so cas-ident must fall back to the banner scan; QEMU's kdump-compressed dump has only
``utsname.machine`` and zlib pages that hide the banner, so it must say it cannot tell.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import run
from caslib.dumps import elfcore, flattened

BOOT_TIMEOUT = 600


class Qmp:
    def __init__(self, path: str, deadline: float):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.fh = self.sock.makefile("rw")
        json.loads(self.fh.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments) -> dict:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.fh.write(json.dumps(msg) + "\n")
        self.fh.flush()
        while True:
            reply = json.loads(self.fh.readline())
            if "return" in reply or "error" in reply:
                assert "error" not in reply, reply
                return reply["return"]

    def close(self):
        self.fh.close()
        self.sock.close()


def boot_and_dump(realdump, out, initrd: str | None, dumps: dict, memory: int) -> dict:
    """Boot the real-dump kernel under QEMU (TCG) until it panics, then dump it.

    ``dumps`` maps a name to dump-guest-memory arguments; returns name -> path, plus
    "serial" (the guest's console).
    """
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 not installed")
    serial, qmp_path = out / "serial.log", str(out / "qmp.sock")
    argv = [qemu, "-accel", "tcg", "-cpu", "max", "-m", str(memory), "-smp", "1",
            "-display", "none", "-monitor", "none", "-no-reboot", "-device", "vmcoreinfo",
            "-kernel", realdump["vmlinuz"], "-append", "console=ttyS0 panic=0",
            "-serial", f"file:{serial}", "-qmp", f"unix:{qmp_path},server,nowait"]
    if initrd:
        argv += ["-initrd", initrd]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    paths = {}
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        qmp = Qmp(qmp_path, deadline)
        while b"end Kernel panic" not in (serial.read_bytes() if serial.exists() else b""):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, serial.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        qmp.execute("stop")
        for name, arguments in dumps.items():
            paths[name] = str(out / name)
            qmp.execute("dump-guest-memory", protocol=f"file:{paths[name]}", **arguments)
        qmp.close()
    finally:
        proc.kill()
        proc.wait()
    paths["serial"] = serial.read_text(errors="replace")
    return paths


@pytest.fixture(scope="module")
def novmcoreinfo(realdump, tmp_path_factory):
    """QEMU's ELF and kdump-zlib dumps of a guest that registered no VMCOREINFO."""
    return boot_and_dump(realdump, tmp_path_factory.mktemp("qemu-novmci"), None,
                         {"elf": {"paging": False},
                          "kdump": {"paging": False, "format": "kdump-zlib"}}, 160)


@pytest.fixture(scope="module")
def paging(realdump, tmp_path_factory):
    """QEMU's ELF dump with paging=true (virtual PT_LOADs) of the real-dump guest, which
    loads qemu_fw_cfg from its initramfs and so registers VMCOREINFO."""
    initrd = next((f["path"] for f in realdump["files"] if f["role"] == "initrd"), None)
    if initrd is None:
        pytest.skip("the real-dump manifest has no initramfs")
    return boot_and_dump(realdump, tmp_path_factory.mktemp("qemu-paging"), initrd,
                         {"elf": {"paging": True}}, 256)


def test_qemu_paging_elf_reads_init_uts_ns_through_virtual_addresses(paging, realdump):
    path = paging["elf"]
    out = subprocess.run(["readelf", "-W", "-l", path], capture_output=True, text=True).stdout
    vaddrs = [int(m, 16) for m in re.findall(r"^\s*LOAD\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)", out, re.M)]
    # readelf vouches: PT_LOADs at virtual addresses, some in the kernel-image mapping
    assert any(v >= 0xFFFFFFFF80000000 for v in vaddrs), out[:3000]
    res = run("cas-ident", path)
    assert res.returncode == 0, res
    rec = res.record
    for key in ("release", "version", "machine", "hostname", "build_id"):
        assert rec["kernel"][key] == realdump["kernel"][key], key
    assert rec["ident_method"] == "vmcoreinfo"
    assert "p_vaddr" in rec["ident"]["utsname_at"], rec["ident"]
    assert rec["ident"]["bytes_read"] < 1 << 20


def test_qemu_elf_without_vmcoreinfo_falls_back_to_the_banner(novmcoreinfo, realdump):
    path = novmcoreinfo["elf"]
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
    assert "VMCOREINFO" not in out and "NT_PRSTATUS" in out  # readelf vouches: no VMCOREINFO
    with flattened.FileSource(path) as src:
        assert elfcore.read_elf(src).note("VMCOREINFO") is None
    size = os.path.getsize(path)
    res = run("cas-ident", "--buffersize", str(size), path)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["format"] == "elf" and rec["ident_method"] == "banner"
    k = rec["kernel"]
    assert k["release"] == realdump["kernel"]["release"]
    assert k["machine"] == "x86_64"  # from e_machine
    # the kernel filled its vmcoreinfo_data page at boot; its symbols, checked against this
    # memory, lead to init_uts_ns: no init ever set a hostname, so it is the kernel's "(none)"
    assert k["build_id"] == realdump["kernel"]["build_id"]
    assert k["hostname"] == "(none)"
    assert k["crash_time"] is None
    assert "VMCOREINFO at byte" in rec["ident"]["utsname_at"]
    assert rec["ident"]["sources"]["build_id"] == "VMCOREINFO in memory"
    # the banner the scan reports is the kernel's own, as the guest printed it
    assert k["banner"] and k["banner"] in novmcoreinfo["serial"]
    assert k["version"] == realdump["kernel"]["version"]
    assert rec["ident"]["scanned"] == size


def test_qemu_kdump_without_vmcoreinfo_cannot_be_named(novmcoreinfo):
    path = novmcoreinfo["kdump"]
    res = run("cas-ident", "--buffersize", "1M", path)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr
    rec = res.record
    assert rec["error"]["kind"] == "unidentified", rec
    assert path in rec["error"]["message"] and "flattened" in rec["error"]["message"]
