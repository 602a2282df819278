"""cas-unpack --compress: parallel xz (independent streams) and multi-threaded zstd."""

import os
import subprocess

import pytest

from conftest import run
from unpack_fixtures import MiB, dumpish, sha256


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()

    def unpack(*args):
        return run("cas-unpack", "--config", conf, *args, env=casenv)

    unpack.tmp = tmp_path
    # 52 MiB: three xz blocks of 24 MiB (data and zeros, all zeros, data)
    path = tmp_path / "vmcore"
    dumpish(path, 6 * MiB, seed=7)
    with open(path, "r+b") as fh:
        fh.seek(48 * MiB)
        fh.write(open(dumpish(tmp_path / "tail", 4 * MiB, seed=8), "rb").read())
    unpack.data = str(path)
    return unpack


def decompressed_sha(argv, path):
    proc = subprocess.run(argv + [path], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    import hashlib

    return hashlib.sha256(proc.stdout).hexdigest()


def test_xz_parallel_blocks(setup):
    res = setup("--compress", setup.data)
    assert res.returncode == 0, res
    rec = res.record
    out = setup.data + ".xz"
    assert rec["compressed"] == out and rec["compression"] == "xz"
    assert rec["source_bytes"] == 52 * MiB and rec["compressed_bytes"] == os.path.getsize(out)
    assert decompressed_sha(["xz", "-dc"], out) == sha256(setup.data)
    # as xz -T0 writes them: one stream of independent blocks whose headers state both
    # sizes (what xz's threaded decoder needs), as xz itself reports them
    listing = subprocess.run(["xz", "--robot", "-lvv", out], capture_output=True,
                             text=True).stdout
    totals = [line.split("\t") for line in listing.splitlines() if line.startswith("totals")]
    assert totals[0][1:3] == ["1", "3"], listing  # streams, blocks
    assert totals[0][10] == "yes", listing        # sizes in headers
    flags = [line.split("\t")[12] for line in listing.splitlines() if line.startswith("block")]
    assert flags == ["cu"] * 3, listing
    # and cas-unpack reads it back
    res = setup("-i", "1", out)
    assert res.returncode == 0, res
    assert res.record["layers"] == ["xz"] and sha256(res.record["core"]) == sha256(setup.data)
    assert [f for f in os.listdir(setup.tmp) if ".part" in f] == []


def test_zstd(setup):
    res = setup("--compress", setup.data, "--compress-format", "zstd")
    assert res.returncode == 0, res
    out = setup.data + ".zst"
    assert res.record["compressed"] == out
    assert decompressed_sha(["zstd", "-q", "-dc"], out) == sha256(setup.data)


def test_never_overwrites_without_force(setup):
    out = setup.data + ".xz"
    with open(out, "w") as fh:
        fh.write("precious")
    res = setup("--compress", setup.data)
    assert res.returncode == 1
    assert res.record["error"]["kind"] == "exists" and "--force" in res.record["error"]["message"]
    assert open(out).read() == "precious"
    res = setup("--compress", setup.data, "--force")
    assert res.returncode == 0, res
    assert decompressed_sha(["xz", "-dc"], out) == sha256(setup.data)


def test_missing_input(setup):
    res = setup("--compress", setup.tmp / "nope")
    assert res.returncode == 1 and "nope" in res.record["error"]["message"]
    assert "Traceback" not in res.stderr


def test_compress_library_function(setup):
    from caslib.streams.compress import compress_file

    info = compress_file(setup.data, "xz", threads=2)
    assert decompressed_sha(["xz", "-dc"], info["compressed"]) == sha256(setup.data)
