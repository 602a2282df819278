"""cas-unpack on the real dumps from tests/realdump (QEMU ELF, makedumpfile kdump/flattened)."""

import os
import subprocess

import pytest

from conftest import run
from unpack_fixtures import MiB, dumpish, sh, sha256


@pytest.fixture(scope="module")
def dumps(request):
    try:
        manifest = request.getfixturevalue("realdump")
    except pytest.FixtureLookupError:
        pytest.skip("the realdump fixture is not available")
    by_variant = {d["variant"]: d for d in manifest["dumps"]}
    for need in ("qemu-elf", "makedumpfile-flattened", "makedumpfile-zlib"):
        if need not in by_variant:
            pytest.skip(f"realdump has no {need} dump")
    return by_variant


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()

    def unpack(*args):
        return run("cas-unpack", "--config", conf, *args, env=casenv)

    unpack.tmp = tmp_path
    return unpack


def test_elf_dump_tar_xz(setup, dumps):
    """`tar cJf` of the real QEMU ELF dump: byte-identical and sparse after unpacking."""
    elf = dumps["qemu-elf"]
    tarball = setup.tmp / "vmcore.12345.tar.xz"
    env = dict(os.environ, XZ_OPT="-1 -T0")  # the fastest preset keeps the test short
    subprocess.run(["tar", "-cJf", str(tarball), "-C", os.path.dirname(elf["path"]),
                    os.path.basename(elf["path"])], check=True, env=env)
    res = setup("-i", "12345", tarball)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["layers"] == ["xz", "tar"]
    assert os.path.basename(rec["core"]) == "vmcore.12345"
    assert rec["core_bytes"] == elf["size"]
    assert sha256(rec["core"]) == elf["sha256"]
    assert "elf dump by magic" in res.stderr
    used = os.stat(rec["core"]).st_blocks * 512
    assert used < 0.6 * elf["size"], (used, elf["size"])


def test_dump_by_magic_beats_larger_decoy(setup, dumps):
    """makedumpfile's flattened and kdump files are chosen over a larger plain member."""
    flat = dumps["makedumpfile-flattened"]
    kdump = dumps["makedumpfile-zlib"]
    decoy = dumpish(setup.tmp / "sosreport.bin", flat["size"] + 4 * MiB, seed=9)
    tarball = setup.tmp / "case.tar.gz"
    sh("tar", "-czf", tarball, "-C", setup.tmp, "sosreport.bin",
       "-C", os.path.dirname(flat["path"]), os.path.basename(flat["path"]))
    res = setup("-i", "1", tarball)
    assert res.returncode == 0, res
    assert sha256(res.record["core"]) == flat["sha256"]
    assert "flattened dump by magic" in res.stderr
    zipped = setup.tmp / "case.zip"
    os.link(kdump["path"], setup.tmp / "vmcore")
    sh("zip", "-q", zipped, "sosreport.bin", "vmcore", cwd=setup.tmp)
    res = setup("-i", "1", zipped)
    assert res.returncode == 0, res
    assert sha256(res.record["core"]) == kdump["sha256"]
    assert "kdump dump by magic" in res.stderr
    assert decoy


def test_raw_elf_dump_linked(setup, dumps):
    elf = dumps["qemu-elf"]
    res = setup("-i", "1", elf["path"])
    assert res.returncode == 0, res
    assert res.record["layers"] == []
    if os.stat(elf["path"]).st_dev == os.stat(setup.tmp).st_dev:
        assert os.stat(res.record["core"]).st_ino == os.stat(elf["path"]).st_ino
    assert res.record["core_bytes"] == elf["size"]
