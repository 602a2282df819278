"""Unit tests of the cpio walker on archives written by GNU cpio and by rpm.

GNU cpio writes the newc (070701) and crc (070702) formats; rpm writes newc,
and its stripped 07070X entries only when a package holds a file of 4 GiB or
more, so that case is covered by a real rpmbuild of a package with a sparse
4 GiB + 1 byte file (see ``big_rpm``; slow-ish: rpmbuild hashes and compresses
4 GiB of zeros, about a minute here, once per session).
"""

import hashlib
import io
import os
import subprocess

import pytest

from caslib.packages import cpio, rpm
from caslib.records import StepError
from conftest import run


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpio-tree")
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "a.txt").write_bytes(b"alpha\n")
    (root / "dir" / "sub" / "big.bin").write_bytes(os.urandom(3 * (1 << 20) + 5))
    (root / "dir" / "odd").write_bytes(b"x" * 13)
    os.symlink("a.txt", root / "dir" / "link")
    return root


def gnu_cpio(root, fmt: str) -> bytes:
    names = subprocess.run(["find", "dir"], cwd=root, check=True, capture_output=True).stdout
    return subprocess.run(["cpio", "-o", "-H", fmt, "--quiet"], cwd=root, input=names,
                          check=True, capture_output=True).stdout


@pytest.mark.parametrize("fmt", ["newc", "crc"])
def test_walk_gnu_cpio(tree, fmt):
    data = gnu_cpio(tree, fmt)
    assert data[:6] == (b"070701" if fmt == "newc" else b"070702")
    seen = {}
    for m in cpio.walk(io.BytesIO(data), "test.cpio"):
        body = b""
        while True:
            chunk = m.read(65536)
            if not chunk:
                break
            body += chunk
        seen[m.name] = (m.mode, body)
    for rel in ("dir/a.txt", "dir/sub/big.bin", "dir/odd"):
        assert seen[rel][1] == (tree / rel).read_bytes()
        assert seen[rel][0] & 0o170000 == 0o100000
    assert seen["dir/link"][1] == b"a.txt"
    assert seen["dir/sub"][0] & 0o170000 == 0o040000


def test_unread_data_is_skipped(tree):
    data = gnu_cpio(tree, "newc")
    names = []
    for m in cpio.walk(io.BytesIO(data), "test.cpio"):
        names.append(m.name)
        m.read(3)  # read a little, leave the rest: the walker must skip it
    assert "dir/odd" in names and "dir/sub/big.bin" in names


def test_truncated_archive(tree):
    data = gnu_cpio(tree, "newc")
    cut = data[: len(data) // 2]
    with pytest.raises(StepError) as err:
        for m in cpio.walk(io.BytesIO(cut), "cut.cpio"):
            while m.read(1 << 20):
                pass
    assert err.value.kind == "truncated" and "cut.cpio" in err.value.message


def test_bad_magic():
    with pytest.raises(StepError) as err:
        list(cpio.walk(io.BytesIO(b"not a cpio archive at all, sorry" * 10), "x.cpio"))
    assert err.value.kind == "corrupt" and "magic" in err.value.message


def test_stripped_without_header_is_refused():
    with pytest.raises(StepError) as err:
        list(cpio.walk(io.BytesIO(b"07070X00000000\0\0"), "x.cpio"))
    assert err.value.kind == "corrupt"


@pytest.fixture(scope="session")
def big_rpm(tmp_path_factory):
    """A real RPM holding a sparse 4 GiB + 1 file, so rpm writes 07070X entries."""
    work = tmp_path_factory.mktemp("big-rpm")
    spec = work / "big.spec"
    spec.write_text(
        "%global __os_install_post %{nil}\n%global _build_id_links none\n"
        "%define debug_package %{nil}\n"
        "Name: bigfile\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n"
        "%description\nt\n%install\nmkdir -p %{buildroot}/usr/share/big\n"
        "truncate -s 4294967297 %{buildroot}/usr/share/big/huge.img\n"
        "echo small > %{buildroot}/usr/share/big/a-small.txt\n"
        "echo after > %{buildroot}/usr/share/big/z-after.txt\n"
        "ln %{buildroot}/usr/share/big/a-small.txt %{buildroot}/usr/share/big/hard.txt\n"
        "ln -s a-small.txt %{buildroot}/usr/share/big/link\n"
        "%files\n/usr/share/big\n")
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}/top",
                    "--define", "_binary_payload w1.zstdio", str(spec)],
                   check=True, capture_output=True)
    (path,) = (work / "top" / "RPMS" / "noarch").iterdir()
    return str(path)


def test_stripped_07070X_from_real_rpm(big_rpm):
    pkg = rpm.open_package(big_rpm)
    assert pkg.large, "rpm should have written LONGFILESIZES for a 4 GiB file"
    huge = pkg.by_path["/usr/share/big/huge.img"]
    assert huge.size == 4294967297  # an int64 tag that rpmfile itself cannot decode
    sizes = pkg.payload_sizes()
    stripped = lambda fx: (pkg.files[fx].path, pkg.files[fx].mode, sizes[fx])  # noqa: E731
    with open(big_rpm, "rb") as fh:
        assert rpm.open_payload(pkg, fh).read(6) == b"07070X"
    got = {}
    with open(big_rpm, "rb") as fh:
        for m in cpio.walk(rpm.open_payload(pkg, fh), big_rpm, stripped):
            assert m.fx is not None and m.name == pkg.files[m.fx].path
            if m.name.endswith("huge.img"):
                got[m.name] = m.size  # 4 GiB of zeros: skipped by the walker, not kept
            else:
                got[m.name] = m.read(100)
    # hard links: only the last one (by header index) carries the data in 07070X
    assert got["/usr/share/big/a-small.txt"] == b""
    assert got["/usr/share/big/hard.txt"] == b"small\n"
    assert got["/usr/share/big/z-after.txt"] == b"after\n"
    assert got["/usr/share/big/link"] == b"a-small.txt"
    assert got["/usr/share/big/huge.img"] == 4294967297
    small = pkg.by_path["/usr/share/big/z-after.txt"]
    assert small.digest == hashlib.sha256(b"after\n").hexdigest()


def test_cas_extract_from_07070X_rpm(big_rpm, casenv, config_file, tmp_path):
    """End to end: members of a stripped-header payload, by name from the header, verified."""
    casenv["CAS_CONFIG"] = config_file()
    for member, body in (("/usr/share/big/z-after.txt", b"after\n"),
                         ("/usr/share/big/a-small.txt", b"small\n")):  # a hard link, data later
        res = run("cas-extract", "--rpm", big_rpm, "--member", member,
                  "--workdir", tmp_path / "job", env=casenv)
        assert res.returncode == 0, res
        with open(res.record["vmlinux"], "rb") as fh:
            assert fh.read() == body
