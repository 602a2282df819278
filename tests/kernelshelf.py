"""A small shelf of real kernel debuginfo packages, built by rpmbuild and dpkg-deb.

The layouts follow the real packages (doc/formats.md section 8): RHEL 4's
multi-flavour kernel-debuginfo, RHEL 5 xen (with xen-syms, no arch in the
release), RHEL 7 with a .build-id link and its .debug variant, RHEL 9
+debug/+64k/+rt, SUSE -default with vmlinux-<rel>.debug under boot/,
Fedora, a debuginfo-common without any image, a package whose name lies
about the release it holds; Debian .deb (with and without md5sums) and an
Ubuntu .ddeb, whose vmlinux is a real ELF with a GNU build-id (a copy of a
system binary; ``readelf -n`` vouches for the id).  Payloads are tiny: the
index reads headers only.  Built once into ``~/.cache/cas/testshelf/<hash>``.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

ELF_SOURCE = "/usr/bin/true"

# name, version, release, target arch, payload, members
# members: (path, "file"|"link"|"elf", link target)
RPMS = [
    ("kernel-debuginfo", "2.6.9", "78.18.EL", "i686", "w9.gzdio", [
        (f"/usr/lib/debug/lib/modules/2.6.9-78.18.EL{f}/{m}", "file", None)
        for f in ("", "smp", "hugemem") for m in ("vmlinux", "kernel/fs/ext3/ext3.ko.debug",
                                                 "kernel/drivers/net/e1000/e1000.ko.debug")]),
    ("kernel-debuginfo", "2.6.9", "78.18.EL", "x86_64", "w9.gzdio", [
        (f"/usr/lib/debug/lib/modules/2.6.9-78.18.EL{f}/{m}", "file", None)
        for f in ("", "smp", "largesmp") for m in ("vmlinux", "kernel/fs/ext3/ext3.ko.debug")]),
    ("kernel-xen-debuginfo", "2.6.18", "194.el5", "x86_64", "w9.gzdio", [
        ("/usr/lib/debug/lib/modules/2.6.18-194.el5xen/vmlinux", "file", None),
        ("/usr/lib/debug/lib/modules/2.6.18-194.el5xen/kernel/fs/ext3/ext3.ko.debug", "file", None),
        ("/usr/lib/debug/boot/xen-syms-2.6.18-194.el5.debug", "file", None)]),
    ("kernel-debuginfo", "2.6.18", "194.el5", "x86_64", "w9.gzdio", [
        ("/usr/lib/debug/lib/modules/2.6.18-194.el5/vmlinux", "file", None)]),
    ("kernel-debuginfo", "3.10.0", "1160.el7", "x86_64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/3.10.0-1160.el7.x86_64/vmlinux", "file", None),
        ("/usr/lib/debug/lib/modules/3.10.0-1160.el7.x86_64/kernel/fs/xfs/xfs.ko.debug", "file", None),
        ("/usr/lib/debug/.build-id/3c/0ffee0000000000000000000000000000000ab.debug", "link",
         "../../lib/modules/3.10.0-1160.el7.x86_64/vmlinux"),
        ("/usr/lib/debug/.build-id/77/0000000000000000000000000000000000aaaa.debug", "link",
         "../../lib/modules/3.10.0-1160.el7.x86_64/kernel/fs/xfs/xfs.ko.debug")]),
    ("kernel-debug-debuginfo", "3.10.0", "1160.el7", "x86_64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/3.10.0-1160.el7.x86_64.debug/vmlinux", "file", None)]),
    ("kernel-debuginfo-common-x86_64", "3.10.0", "1160.el7", "x86_64", "w2.xzdio", [
        ("/usr/src/debug/kernel-3.10.0-1160.el7/linux-3.10.0-1160.el7.x86_64/init/main.c", "file", None)]),
    ("kernel-debuginfo", "5.14.0", "362.8.1.el9_3", "x86_64", "w19.zstdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64/vmlinux", "file", None),
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64/kernel/fs/xfs/xfs.ko.debug", "file", None)]),
    ("kernel-debug-debuginfo", "5.14.0", "362.8.1.el9_3", "x86_64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64+debug/vmlinux", "file", None)]),
    ("kernel-rt-debuginfo", "5.14.0", "362.8.1.el9_3", "x86_64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64+rt/vmlinux", "file", None)]),
    ("kernel-64k-debuginfo", "5.14.0", "362.8.1.el9_3", "aarch64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.aarch64+64k/vmlinux", "file", None)]),
    ("kernel-debuginfo", "5.14.0", "362.8.1.el9_3", "aarch64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.aarch64/vmlinux", "file", None)]),
    ("kernel-default-debuginfo", "5.14.21", "150500.55.28.1", "x86_64", "w9.bzdio", [
        ("/usr/lib/debug/boot/vmlinux-5.14.21-150500.55.28-default.debug", "file", None),
        ("/usr/lib/debug/lib/modules/5.14.21-150500.55.28-default/kernel/fs/ext4/ext4.ko.debug",
         "file", None)]),
    ("kernel-debuginfo", "6.5.6", "300.fc39", "x86_64", "w19.zstdio", [
        ("/usr/lib/debug/lib/modules/6.5.6-300.fc39.x86_64/vmlinux", "file", None),
        ("/usr/lib/debug/.build-id/9a/1b2c3d4e5f60718293a4b5c6d7e8f901234567.debug", "link",
         "../../../../../usr/lib/debug/lib/modules/6.5.6-300.fc39.x86_64/vmlinux")]),
    # the name is only a hint: this package holds 5.14.0-362.24.1.el9_3
    ("kernel-debuginfo", "9.9.9", "1", "x86_64", "w2.xzdio", [
        ("/usr/lib/debug/lib/modules/5.14.0-362.24.1.el9_3.x86_64/vmlinux", "file", None)]),
]

# Debian/Ubuntu: file name, package, version, arch, compression, with md5sums, release
DEBS = [
    ("linux-image-6.1.0-18-cloud-amd64-dbg_6.1.76-1_amd64.deb", "linux-image-6.1.0-18-cloud-amd64-dbg",
     "6.1.76-1", "amd64", "xz", True, "6.1.0-18-cloud-amd64"),
    ("linux-image-6.1.0-18-amd64-dbg_6.1.76-1_amd64.deb", "linux-image-6.1.0-18-amd64-dbg",
     "6.1.76-1", "amd64", "gzip", False, "6.1.0-18-amd64"),
    ("linux-image-unsigned-5.15.0-91-generic-dbgsym_5.15.0-91.101_amd64.ddeb",
     "linux-image-unsigned-5.15.0-91-generic-dbgsym", "5.15.0-91.101", "amd64", "zstd", True,
     "5.15.0-91-generic"),
]


def elf_build_id(path: str) -> str:
    """The build-id as readelf prints it (the independent witness)."""
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    raise AssertionError(f"{path} has no build-id")


def _spec(name, version, release, members) -> str:
    install = []
    tops = set()
    for path, kind, target in members:
        tops.add("/" + "/".join(path.split("/")[1:4]))
        d = os.path.dirname(path)
        install.append(f"mkdir -p '%{{buildroot}}{d}'")
        if kind == "link":
            install.append(f"ln -s '{target}' '%{{buildroot}}{path}'")
        else:
            install.append(f"echo '{path}' > '%{{buildroot}}{path}'")
    return "\n".join([
        f"Name: {name}", f"Version: {version}", f"Release: {release}", "Summary: test debuginfo",
        "License: GPL-2.0", "AutoReqProv: no", "%define debug_package %{nil}",
        "%define __os_install_post %{nil}", "%define _build_id_links none",
        "%description", "test", "%install", *install, "%files", *sorted(tops), ""])


def _build_rpm(out_dir: str, entry) -> str:
    name, version, release, arch, payload, members = entry
    with tempfile.TemporaryDirectory() as top:
        spec = os.path.join(top, "p.spec")
        with open(spec, "w") as fh:
            fh.write(_spec(name, version, release, members))
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--target", arch,
                        "--define", f"_topdir {top}", "--define", f"_binary_payload {payload}",
                        spec], check=True, capture_output=True)
        made = os.path.join(top, "RPMS", arch, f"{name}-{version}-{release}.{arch}.rpm")
        dest = os.path.join(out_dir, os.path.basename(made))
        if name == "kernel-debuginfo" and version == "9.9.9":
            dest = os.path.join(out_dir, "odd", os.path.basename(made))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(made, dest)
        return dest


def _build_deb(out_dir: str, entry) -> str:
    filename, package, version, arch, comp, md5sums, rel = entry
    with tempfile.TemporaryDirectory() as root:
        files = {
            f"usr/lib/debug/boot/vmlinux-{rel}": ELF_SOURCE,
            f"usr/lib/debug/lib/modules/{rel}/kernel/fs/ext4/ext4.ko": None,
            f"usr/lib/debug/lib/modules/{rel}/kernel/net/ipv6/ipv6.ko": None,
        }
        for rel_path, source in files.items():
            path = os.path.join(root, rel_path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if source:
                shutil.copyfile(source, path)
            else:
                with open(path, "w") as fh:
                    fh.write(rel_path + "\n")
        link = os.path.join(root, f"usr/lib/debug/lib/modules/{rel}/vmlinux")
        os.symlink(f"../../../boot/vmlinux-{rel}", link)
        os.makedirs(os.path.join(root, "DEBIAN"))
        with open(os.path.join(root, "DEBIAN", "control"), "w") as fh:
            fh.write(f"Package: {package}\nSource: linux\nVersion: {version}\nArchitecture: {arch}\n"
                     "Maintainer: CAS tests <cas@example.org>\nSection: debug\nPriority: optional\n"
                     f"Description: debug symbols for {rel}\n test package\n")
        if md5sums:
            lines = []
            for rel_path in sorted(files):
                with open(os.path.join(root, rel_path), "rb") as fh:
                    lines.append(f"{hashlib.md5(fh.read()).hexdigest()}  {rel_path}\n")
            with open(os.path.join(root, "DEBIAN", "md5sums"), "w") as fh:
                fh.writelines(lines)
        dest = os.path.join(out_dir, "debian", filename)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{comp}", "--build", root, dest],
                       check=True, capture_output=True)
        return dest


def _fingerprint() -> str:
    text = json.dumps([RPMS, DEBS, open(__file__).read()], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(cache_root: str | None = None) -> dict:
    """Build (or reuse) the shelf; return {"dir", "rpms": [...], "debs": [...], "elf_build_id"}."""
    cache_root = cache_root or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cas", "testshelf")
    final = os.path.join(cache_root, _fingerprint())
    manifest = os.path.join(final, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as fh:
            return json.load(fh)
    os.makedirs(cache_root, exist_ok=True)
    work = tempfile.mkdtemp(dir=cache_root, prefix=".build-")
    try:
        shelf_dir = os.path.join(work, "shelf")
        os.makedirs(shelf_dir)
        with ThreadPoolExecutor(max_workers=2) as pool:
            rpms = list(pool.map(lambda e: _build_rpm(shelf_dir, e), RPMS))
            debs = list(pool.map(lambda e: _build_deb(shelf_dir, e), DEBS))
        info = {"dir": os.path.join(final, "shelf"),
                "rpms": [os.path.join(final, os.path.relpath(p, work)) for p in rpms],
                "debs": [os.path.join(final, os.path.relpath(p, work)) for p in debs],
                "elf_build_id": elf_build_id(ELF_SOURCE)}
        with open(os.path.join(work, "manifest.json"), "w") as fh:
            json.dump(info, fh, indent=1)
        try:
            os.rename(work, final)
        except OSError:  # built by someone else meanwhile
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    with open(manifest) as fh:
        return json.load(fh)
