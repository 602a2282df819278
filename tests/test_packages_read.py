"""The package readers (caslib.packages: rpm, deb, read) against rpm and dpkg-deb on the same
files (the independent witnesses), and the package-member path rule of caslib.pathsafety."""

import os
import subprocess

import pytest

import kernelshelf
from caslib.dumps import elfnote
from caslib.shelf import index
from caslib import pathsafety
from caslib.packages import deb, read, rpm

SHELF = kernelshelf.build()


def _rpm_query(path):
    qf = "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{ARCH}\\n%{EPOCH}\\n%{PAYLOADCOMPRESSOR}\\n"
    out = subprocess.run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, path],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    files = subprocess.run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf",
                            "[%{FILENAMES}\\t%{FILEMODES:perms}\\t%{FILELINKTOS}\\n]", path],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    return out[:6], [line.split("\t") for line in files]


@pytest.mark.parametrize("path", SHELF["rpms"], ids=os.path.basename)
def test_rpm_header_agrees_with_rpm(path):
    (name, version, release, arch, epoch, payload), files = _rpm_query(path)
    pkg = rpm.read(path, prefix=None)
    assert (pkg.name, pkg.version, pkg.release, pkg.arch, pkg.payload) == (
        name, version, release, arch, payload)
    assert pkg.epoch == (None if epoch == "(none)" else int(epoch))
    assert pkg.file_count == len(files)
    got = {(m.path, m.kind, m.linkto or "") for m in pkg.members}
    want = {(f, "link" if perms.startswith("l") else "dir" if perms.startswith("d") else "file",
             target) for f, perms, target in files}
    assert got == want
    debug_only = rpm.read(path)
    assert {m.path for m in debug_only.members} == {
        f for f, _, _ in files if f.startswith("/usr/lib/debug/")}


@pytest.mark.parametrize("path", SHELF["debs"], ids=os.path.basename)
def test_deb_agrees_with_dpkg_deb(path):
    fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version", "Architecture"],
                            capture_output=True, text=True, check=True).stdout
    pkg = deb.read(path)
    version = f"{pkg.version}-{pkg.release}" if pkg.release else pkg.version
    assert fields.splitlines() == [f"Package: {pkg.name}", f"Version: {version}",
                                   f"Architecture: {pkg.arch}"]
    listing = subprocess.run(["dpkg-deb", "-c", path], capture_output=True, text=True,
                             check=True).stdout
    regular = {line.split()[-1][1:] for line in listing.splitlines() if line.startswith("-")}
    assert {m.path for m in pkg.members if m.kind == "file"} == regular
    vmlinux = [p for p in regular if "/boot/vmlinux-" in p][0]
    assert pkg.build_ids[vmlinux] == SHELF["elf_build_id"]


def test_elfnote_matches_readelf():
    with open(kernelshelf.ELF_SOURCE, "rb") as fh:
        assert elfnote.build_id(fh) == kernelshelf.elf_build_id(kernelshelf.ELF_SOURCE)


def test_elfnote_not_elf(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"not an elf file" * 10)
    with open(p, "rb") as fh:
        assert elfnote.build_id(fh) is None


def test_kernels_in_prefers_regular_file_over_link():
    pkg = read.Package("/x.deb", "deb", "p", "1", "1", "amd64", members=[
        read.Member("/usr/lib/debug/lib/modules/6.1.0-9-amd64/vmlinux", "link",
                         "../../../boot/vmlinux-6.1.0-9-amd64"),
        read.Member("/usr/lib/debug/boot/vmlinux-6.1.0-9-amd64", "file"),
        read.Member("/usr/lib/debug/boot/xen-syms-6.1.0-9.debug", "file"),
    ])
    (k,) = index.kernels_in(pkg)
    assert k["vmlinux"] == "/usr/lib/debug/boot/vmlinux-6.1.0-9-amd64"
    assert k["machine"] == "x86_64" and k["modules_prefix"] is None


def test_kernels_in_skips_dangling_image_links():
    pkg = read.Package("/x.rpm", "rpm", "p", "1", "1", "x86_64", members=[
        read.Member("/usr/lib/debug/lib/modules/5.14.0-1.el9.x86_64/vmlinux", "link",
                         "/somewhere/else")])
    assert index.kernels_in(pkg) == []


def test_package_path():
    assert pathsafety.package_path("./usr/lib/x") == "/usr/lib/x"
    assert pathsafety.package_path("usr//lib/./x") == "/usr/lib/x"
    assert pathsafety.package_path("./") == "/"
    assert pathsafety.package_path("./usr/../../etc/passwd") is None
    assert pathsafety.package_path("/usr/x\0y") is None


def test_package_link():
    link = "/usr/lib/debug/.build-id/3c/0ffee.debug"
    assert pathsafety.package_link(link, "../../lib/modules/5/vmlinux") == \
        "/usr/lib/debug/lib/modules/5/vmlinux"
    assert pathsafety.package_link(link, "/boot/vmlinuz") == "/boot/vmlinuz"
    assert pathsafety.package_link(link, "../" * 5 + "lib/x") == "/lib/x"
    assert pathsafety.package_link(link, "../" * 6 + "lib/x") is None
    assert pathsafety.package_link("/a/b", "/a/../../a") is None   # half-way out is out


def test_check_package_path_kinds():
    import pytest as _pytest
    from caslib.records import StepError
    with _pytest.raises(StepError) as err:
        pathsafety.check_package_path("./", "member path")
    assert err.value.kind == "bad-record"
    with _pytest.raises(StepError) as err:
        pathsafety.check_package_path("usr/../../x", "member path")
    assert err.value.kind == "unsafe"
    with _pytest.raises(StepError) as err:
        pathsafety.check_package_link("/usr/a", "../../x")
    assert err.value.kind == "unsafe"


def test_read_package_by_magic(tmp_path):
    from caslib.errors import FormatError
    empty, text = tmp_path / "e.rpm", tmp_path / "t.deb"
    empty.write_bytes(b"")
    text.write_bytes(b"not a package at all")
    for path, kind in ((empty, "empty"), (text, "unsupported")):
        with pytest.raises(FormatError) as err:
            read.read_package(str(path))
        assert err.value.kind == kind and str(path) in err.value.message
    assert read.read_package(SHELF["rpms"][0]).format == "rpm"
    assert read.read_package(SHELF["debs"][0]).format == "deb"
