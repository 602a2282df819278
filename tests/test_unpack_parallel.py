"""cas-unpack decoding on every core: inputs made by xz -T, pixz, pbzip2, lbzip2, pzstd and
``cas-unpack --compress``; the core must be byte-identical and sparse, the log must say how
many threads decoded each layer (or why one), and a damaged piece must fail cleanly."""

import os
import shutil
import tarfile
import threading

import pytest

from caslib.streams import parallel
from conftest import run
from unpack_fixtures import MiB, assert_clean_failure, compress_with, dumpish, files_under, sh, \
    sha256

MULTI = parallel.workers() >= 2
needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")
         for tool in ("pbzip2", "lbzip2", "pzstd", "pixz")}


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()
    data = dumpish(tmp_path / "vmcore", 6 * MiB, seed=3)

    def unpack(*args, input=None):
        return run("cas-unpack", "--config", conf, *args, input=input, env=casenv)

    unpack.tmp = tmp_path
    unpack.data = data
    unpack.work = str(tmp_path / "work")
    return unpack


def threads_line(res, codec):
    lines = [line for line in res.stderr.splitlines() if f"decoding {codec} on" in line]
    assert len(lines) == 1, res.stderr
    return lines[0]


def check(res, setup, layers, codec, parallel_expected, why=""):
    assert res.returncode == 0, res
    rec = res.record
    assert rec["layers"] == layers
    assert sha256(rec["core"]) == sha256(setup.data)
    assert rec["core_bytes"] == os.path.getsize(setup.data)
    # sparse: the zero runs of the input are holes in the core
    assert os.stat(rec["core"]).st_blocks * 512 <= os.stat(setup.data).st_blocks * 512 + MiB
    assert [f for f in files_under(rec["workdir"]) if ".part" in f] == []
    line = threads_line(res, codec)
    if parallel_expected and MULTI:
        assert f"decoding {codec} on {parallel.workers()} cores" in line, line
    else:
        assert f"decoding {codec} on one thread" in line and why in line, line
    return rec


XZ_MULTI = ["xz", "-c", "-T2", "--block-size=256KiB"]


def test_xz_multi_block(setup):
    packed = compress_with(XZ_MULTI, setup.data, setup.tmp / "vmcore.xz")
    check(setup("-i", "1", packed), setup, ["xz"], "xz", True)


def test_xz_multi_block_sha256_and_concatenated(setup):
    a = compress_with(XZ_MULTI + ["--check=sha256"], setup.data, setup.tmp / "a.xz")
    head = open(setup.data, "rb").read()
    half = len(head) // 2
    (setup.tmp / "first").write_bytes(head[:half])
    (setup.tmp / "second").write_bytes(head[half:])
    a = compress_with(XZ_MULTI + ["--check=sha256"], setup.tmp / "first", setup.tmp / "a.xz")
    b = compress_with(XZ_MULTI + ["--check=crc32"], setup.tmp / "second", setup.tmp / "b.xz")
    both = setup.tmp / "vmcore.xz"
    # two streams with stream padding between them, as xz(1) allows
    both.write_bytes(open(a, "rb").read() + bytes(8) + open(b, "rb").read())
    check(setup("-i", "1", both), setup, ["xz"], "xz", True)


def test_xz_single_thread_writer_stays_on_one_thread(setup):
    packed = compress_with(["xz", "-c", "-T1"], setup.data, setup.tmp / "vmcore.xz")
    check(setup("-i", "1", packed), setup, ["xz"], "xz", False, "a single block")


def test_xz_single_block_stays_on_one_thread(setup):
    # xz -T2 with its default block size (24 MiB) writes one block for 6 MiB
    packed = compress_with(["xz", "-c", "-T2"], setup.data, setup.tmp / "vmcore.xz")
    check(setup("-i", "1", packed), setup, ["xz"], "xz", False, "a single block")


@needs["pixz"]
def test_pixz(setup):
    packed = setup.tmp / "vmcore.xz"
    with open(setup.data, "rb") as fin, open(packed, "wb") as fout:
        sh("pixz", "-1", stdin=fin, stdout=fout)
    check(setup("-i", "1", packed), setup, ["xz"], "xz", True)


def test_cas_compress_xz_and_zstd(setup):
    big = setup.tmp / "big"
    with open(big, "wb") as fh:  # 40 MiB: two xz blocks, three zstd frames
        for seed in range(5):
            fh.write(open(dumpish(setup.tmp / f"p{seed}", 8 * MiB, seed=seed), "rb").read())
    setup.data = str(big)
    for fmt, suffix in (("xz", ".xz"), ("zstd", ".zst")):
        res = setup("--compress", big, "--compress-format", fmt)
        assert res.returncode == 0, res
        check(setup("-i", "1", str(big) + suffix), setup, [fmt], fmt, True)


def test_xz_in_plain_tar_and_stored_zip(setup):
    packed = compress_with(XZ_MULTI, setup.data, setup.tmp / "vmcore.xz")
    tar = setup.tmp / "case.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as tf:
        (setup.tmp / "notes.txt").write_text("customer notes\n" * 100)
        tf.add(setup.tmp / "notes.txt", "notes.txt")   # a member before it: offset not zero
        tf.add(packed, "vmcore.xz")
    check(setup("-i", "1", tar), setup, ["tar", "xz"], "xz", True)
    sh("zip", "-q", "-0", setup.tmp / "case.zip", "vmcore.xz", cwd=setup.tmp)
    check(setup("-i", "2", setup.tmp / "case.zip"), setup, ["zip", "xz"], "xz", True)


def test_xz_inside_compressed_tar_stays_on_one_thread(setup):
    packed = compress_with(XZ_MULTI, setup.data, setup.tmp / "vmcore.xz")
    tgz = setup.tmp / "case.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(packed, "vmcore.xz")
    res = setup("-i", "1", tgz)
    check(res, setup, ["gzip", "tar", "xz"], "xz", False, "inside another compressed layer")
    assert "decoding gzip on one thread: gzip is one deflate stream" in res.stderr


def test_pipe_stays_on_one_thread(setup):
    packed = compress_with(XZ_MULTI, setup.data, setup.tmp / "vmcore.xz")
    fifo = setup.tmp / "vmcore.fifo.xz"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as out:
            out.write(open(packed, "rb").read())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    res = setup("-i", "1", fifo)
    writer.join(60)
    check(res, setup, ["xz"], "xz", False, "not a seekable file")


@needs["pbzip2"]
def test_pbzip2_streams(setup):
    packed = compress_with(["pbzip2", "-c", "-b1", "-p2"], setup.data, setup.tmp / "vmcore.bz2")
    check(setup("-i", "1", packed), setup, ["bzip2"], "bzip2", True)


@needs["lbzip2"]
def test_lbzip2_one_stream_stays_on_one_thread(setup):
    packed = compress_with(["lbzip2", "-c", "-n2"], setup.data, setup.tmp / "vmcore.bz2")
    check(setup("-i", "1", packed), setup, ["bzip2"], "bzip2", False, "no second stream")


@needs["pzstd"]
def test_pzstd_frames(setup):
    packed = setup.tmp / "vmcore.zst"
    sh("pzstd", "-q", "-1", "-p", "2", "-o", packed, setup.data)  # 2 MiB frames at level 1
    check(setup("-i", "1", packed), setup, ["zstd"], "zstd", True)


def test_zstd_single_frame_stays_on_one_thread(setup):
    packed = compress_with(["zstd", "-q", "-c", "-T2"], setup.data, setup.tmp / "vmcore.zst")
    check(setup("-i", "1", packed), setup, ["zstd"], "zstd", False, "a single frame")


def _damage(path, at=None):
    data = bytearray(open(path, "rb").read())
    at = len(data) // 2 if at is None else at
    for i in range(at, at + 16):
        data[i] ^= 0x55
    open(path, "wb").write(bytes(data))


def _makers(tmp, data):
    yield "xz", compress_with(XZ_MULTI, data, tmp / "vmcore.xz")
    if shutil.which("pbzip2"):
        yield "bzip2", compress_with(["pbzip2", "-c", "-b1"], data, tmp / "vmcore.bz2")
    if shutil.which("pzstd"):
        sh("pzstd", "-q", "-1", "-p", "2", "-o", tmp / "vmcore.zst", data)
        yield "zstd", str(tmp / "vmcore.zst")


def test_damaged_piece_in_the_middle_fails_cleanly(setup):
    for codec, packed in _makers(setup.tmp, setup.data):
        _damage(packed)
        res = setup("-i", codec, packed)
        err = assert_clean_failure(res, setup.work, "corrupt", [packed])
        assert "corrupt" in err["message"] and codec in err["message"], err


def test_truncated_multi_piece_fails_cleanly(setup):
    for codec, packed in _makers(setup.tmp, setup.data):
        size = os.path.getsize(packed)
        with open(packed, "r+b") as fh:
            fh.truncate(size * 2 // 3)
        res = setup("-i", codec, packed)
        assert_clean_failure(res, setup.work, "truncated", [packed])


def test_trailing_garbage_after_streams(setup):
    packed = compress_with(XZ_MULTI, setup.data, setup.tmp / "vmcore.xz")
    with open(packed, "ab") as fh:
        fh.write(b"not xz at all, someone appended notes")
    res = setup("-i", "1", packed)
    assert_clean_failure(res, setup.work, "corrupt", [packed, "trailing data"])
