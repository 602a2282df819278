"""Small real debuginfo packages for the cas-extract tests, built by rpmbuild and dpkg-deb.

The layout is Fedora's kernel-debuginfo (``/usr/lib/debug/lib/modules/<rel>/vmlinux``,
``kernel/**.ko.debug``, a ``.build-id`` symlink) and Debian's -dbg package
(``/usr/lib/debug/boot/vmlinux-<rel>``, unstripped ``.ko`` under
``lib/modules/<rel>``).  The file contents are real ELF binaries from this
machine, so the packages hold realistic, compressible data; the tools that
build them (rpmbuild, dpkg-deb) are the ones distributions use.
"""

import hashlib
import os
import shutil
import subprocess
import textwrap

RELEASE = "6.1.0-99-test-amd64"
PREFIX = f"/usr/lib/debug/lib/modules/{RELEASE}/"
VMLINUX = PREFIX + "vmlinux"
MODULES = ["kernel/fs/ext4/ext4.ko.debug", "kernel/drivers/net/virtio_net.ko.debug",
           "kernel/lib/crc32.ko.debug", "kernel/lib/crc32c.ko.debug"]
HARDLINK = ("kernel/lib/crc32.ko.debug", "kernel/lib/crc32c.ko.debug")
BUILD_ID = "/usr/lib/debug/.build-id/5e/0123456789abcdef0123456789abcdef012345.debug"
DEB_VMLINUX = f"/usr/lib/debug/boot/vmlinux-{RELEASE}"
PAYLOADS = {"gzip": "w9.gzdio", "bzip2": "w9.bzdio", "xz": "w2.xzdio", "xzmt": "w2T2.xzdio",
            "lzma": "w6.lzdio",
            "zstd": "w19.zstdio", "none": "w.ufdio"}

_SPEC = textwrap.dedent("""\
    %global __os_install_post %{nil}
    %global _build_id_links none
    %global _missing_build_ids_terminate_build 0
    %define debug_package %{nil}
    Name:      kernel-debuginfo
    Version:   6.1.0
    Release:   %{t_release}
    Summary:   cas-extract test package
    License:   GPL-2.0-only
    BuildArch: x86_64
    AutoReqProv: no
    %description
    Test fixture for cas-extract.
    %install
    cp -a %{t_stage}/usr %{buildroot}/
    %files
    %defattr(-,root,root,-)
    /usr/lib/debug/lib/modules/""" + RELEASE + """
    /usr/lib/debug/.build-id/*
    """)


def _blob(seed: str, size: int) -> bytes:
    """``size`` bytes of real machine code: system binaries, salted so files differ."""
    pool = b""
    for path in ("/usr/bin/python3", "/usr/bin/rpm", "/usr/bin/bash", "/usr/bin/tar"):
        real = os.path.realpath(path)
        if os.path.exists(real):
            with open(real, "rb") as fh:
                pool += fh.read(4 << 20)
    out = bytearray(seed.encode() * 64)
    while len(out) < size:
        out += pool[: size - len(out)]
    return bytes(out[:size])


def stage_tree(root: str, vmlinux_size: int = 6 << 20, salt: str = "") -> dict:
    """The usr/lib/debug tree of the RPM under ``root``; returns {package path: sha256}."""
    files = {}
    base = os.path.join(root, PREFIX.lstrip("/"))
    for i, rel in enumerate([m for m in MODULES if m != HARDLINK[1]]):
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(_blob(f"{salt}{rel}", 200_000 + 50_000 * i))
    os.link(os.path.join(base, HARDLINK[0]), os.path.join(base, HARDLINK[1]))
    with open(os.path.join(base, "vmlinux"), "wb") as fh:
        fh.write(_blob(f"{salt}vmlinux", vmlinux_size))
    link = os.path.join(root, BUILD_ID.lstrip("/"))
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(os.path.join(base, "vmlinux"), os.path.dirname(link)), link)
    for dirpath, _, names in os.walk(os.path.join(root, "usr")):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    files["/" + os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return files


def build_rpm(workdir: str, payload: str, stage: str, release: str = "99_test") -> str:
    """rpmbuild the staged tree with ``_binary_payload`` = PAYLOADS[payload]; the RPM path."""
    top = os.path.join(workdir, f"top-{payload}-{release}")
    spec = os.path.join(workdir, "kernel-debuginfo.spec")
    with open(spec, "w") as fh:
        fh.write(_SPEC)
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                    "--define", f"t_release {release}", "--define", f"t_stage {stage}",
                    "--define", f"_binary_payload {PAYLOADS.get(payload, payload)}", spec],
                   check=True, capture_output=True, text=True)
    out = os.path.join(top, "RPMS", "x86_64")
    (name,) = os.listdir(out)
    final = os.path.join(workdir, f"kernel-debuginfo-{payload}-{release}.rpm")
    shutil.move(os.path.join(out, name), final)
    shutil.rmtree(top)
    return final


def build_deb(workdir: str, compression: str, vmlinux_size: int = 4 << 20,
              vmlinux_symlink: bool = False, md5sums: bool = True) -> tuple:
    """dpkg-deb -Z<compression> a linux-image-<rel>-dbg package; returns (path, {path: md5})."""
    root = os.path.join(workdir, f"deb-{compression}-{int(vmlinux_symlink)}-{int(md5sums)}")
    os.makedirs(os.path.join(root, "DEBIAN"))
    files = {}
    vm = os.path.join(root, DEB_VMLINUX.lstrip("/"))
    os.makedirs(os.path.dirname(vm))
    with open(vm, "wb") as fh:
        fh.write(_blob("deb-vmlinux", vmlinux_size))
    mod_base = os.path.join(root, PREFIX.lstrip("/"))
    for i, rel in enumerate(["kernel/fs/ext4/ext4.ko", "kernel/lib/crc32.ko"]):
        p = os.path.join(mod_base, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(_blob(f"deb-{rel}", 150_000 + 10_000 * i))
    if vmlinux_symlink:  # Debian's layout keeps the vmlinux under boot/; point at it
        os.symlink(os.path.relpath(vm, mod_base), os.path.join(mod_base, "vmlinux"))
    lines = []
    for dirpath, _, names in os.walk(os.path.join(root, "usr")):
        for n in sorted(names):
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                digest = hashlib.md5(fh.read()).hexdigest()
            rel = os.path.relpath(p, root)
            files["/" + rel] = digest
            lines.append(f"{digest}  {rel}\n")
    if md5sums:
        with open(os.path.join(root, "DEBIAN", "md5sums"), "w") as fh:
            fh.writelines(sorted(lines))
    with open(os.path.join(root, "DEBIAN", "control"), "w") as fh:
        fh.write(textwrap.dedent(f"""\
            Package: linux-image-{RELEASE}-dbg
            Version: 6.1.99-1
            Architecture: amd64
            Maintainer: CAS tests <cas@example.invalid>
            Section: debug
            Priority: optional
            Description: cas-extract test package
             Debug symbols for a test kernel.
            """))
    out = root + ".deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, out],
                   check=True, capture_output=True, text=True)
    return out, files
