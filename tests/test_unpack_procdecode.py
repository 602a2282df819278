"""cas-unpack's decoder processes (caslib.streams.procdecode): each worker writes its pieces straight
into the core at their offsets.  The core must be byte-identical and as sparse as the input,
a damaged piece must fail cleanly, and no worker process or partial file may outlive the run,
whether it ends normally, on a corrupt block, on SIGTERM or on SIGKILL."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

from caslib.streams import parallel
from conftest import ROOT, command, run
from unpack_fixtures import MiB, assert_clean_failure, compress_with, dumpish, files_under, sh, \
    sha256

pytestmark = pytest.mark.skipif(parallel.workers() < 2, reason="needs two CPUs")
LIB = os.path.join(ROOT, "lib")
XZ_BLOCKS = ["xz", "-c", "-T2", "--block-size=512KiB"]


def workers_alive() -> list:
    """Decoder processes of this checkout still running (cmdline names our lib directory)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if any(b"procworker.main" in a for a in argv) and LIB.encode() in argv:
            found.append(int(pid))
    return found


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()

    def unpack(*args):
        return run("cas-unpack", "--config", conf, *args, env=casenv)

    unpack.tmp, unpack.conf, unpack.env = tmp_path, conf, casenv
    unpack.work = str(tmp_path / "work")
    return unpack


def check_core(res, data, codec):
    assert res.returncode == 0, res
    rec = res.record
    assert sha256(rec["core"]) == sha256(data)
    assert rec["core_bytes"] == os.path.getsize(data)
    # sparse: the input's holes are holes in the core (the input was written with holes)
    assert os.stat(rec["core"]).st_blocks <= os.stat(data).st_blocks + 8
    assert [f for f in files_under(rec["workdir"]) if ".part" in f] == []
    assert f"{codec} decoded by {parallel.workers()} worker processes" in res.stderr, res.stderr
    assert workers_alive() == []
    return rec


def test_xz_blocks_written_by_processes(setup):
    data = dumpish(setup.tmp / "vmcore", 12 * MiB, seed=7)
    packed = compress_with(XZ_BLOCKS, data, setup.tmp / "vmcore.xz")
    check_core(setup("-i", "1", packed), data, "xz")


def test_unaligned_pieces_and_a_trailing_hole(setup):
    # pbzip2 streams of 100 kB and a dump that ends in zeros: pieces straddle pages,
    # and the core's size comes from the last piece, not from a write
    data = str(setup.tmp / "vmcore")
    dumpish(data, 5 * MiB + 12345, seed=8)
    with open(data, "r+b") as fh:
        fh.truncate(9 * MiB + 777)
    if shutil.which("pbzip2"):
        packed = compress_with(["pbzip2", "-c", "-b1", "-p2"], data, setup.tmp / "vmcore.bz2")
        check_core(setup("-i", "b", packed), data, "bzip2")
    packed = compress_with(["xz", "-c", "-T2", "--block-size=300000"], data,
                           setup.tmp / "vmcore.xz")
    check_core(setup("-i", "x", packed), data, "xz")


def sparse_concat(dst, *parts) -> str:
    """``cat parts > dst`` with the zero 4 KiB blocks left as holes, as the core will be."""
    with open(dst, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(4096):
                    if block.count(0) == len(block):
                        out.seek(len(block), 1)
                    else:
                        out.write(block)
        out.truncate()
    return str(dst)


@pytest.mark.skipif(not shutil.which("pbzip2"), reason="needs pbzip2")
def test_bzip2_pieces_of_uneven_cost_are_placed_in_order(setup):
    # a piece of random bytes decodes far slower than a piece of zeros or code: a worker
    # done with a quick piece holds it, decodes its next one meanwhile, and writes it
    # once the slow piece's size (and so its offset) is known
    rng = random.Random(12)
    code = dumpish(setup.tmp / "code", 8 * MiB, seed=12)
    data = str(setup.tmp / "vmcore")
    with open(data, "wb") as out, open(code, "rb") as src:
        for i in range(30):
            kind = i % 5
            if kind == 0:
                out.write(rng.randbytes(800_000))
            elif kind in (1, 3):
                out.seek(800_000 + 4096 * i, 1)
            else:
                out.write(src.read(700_000 + 333 * i) or rng.randbytes(1000))
        out.truncate()
    packed = compress_with(["pbzip2", "-c", "-b1", "-p2"], data, setup.tmp / "vmcore.bz2")
    check_core(setup("-i", "1", packed), data, "bzip2")


@pytest.mark.skipif(not shutil.which("pbzip2"), reason="needs pbzip2")
def test_a_stream_too_large_for_a_piece_goes_to_one_thread_after_the_pieces_before_it(setup):
    # pbzip2's streams, then one bzip2 stream of 40 MiB (more than a piece may hold): the
    # pieces before it are written by the workers, that stream by the one-thread reader
    first = dumpish(setup.tmp / "first", 6 * MiB, seed=13)
    second = dumpish(setup.tmp / "second", 40 * MiB, seed=14)
    packed = setup.tmp / "vmcore.bz2"
    with open(packed, "wb") as out:
        for argv, src in ((["pbzip2", "-c", "-b1", "-p2"], first), (["bzip2", "-c", "-9"], second)):
            with open(src, "rb") as fin:
                sh(*argv, stdin=fin, stdout=out)
    data = sparse_concat(setup.tmp / "vmcore", first, second)
    res = setup("-i", "1", str(packed))
    check_core(res, data, "bzip2")
    assert "bzip2 decoded on one thread from compressed byte" in res.stderr, res.stderr


@pytest.mark.skipif(not shutil.which("pbzip2"), reason="needs pbzip2")
def test_a_corrupt_bzip2_stream_late_in_the_file_fails_cleanly(setup):
    data = dumpish(setup.tmp / "vmcore", 24 * MiB, seed=15)
    packed = compress_with(["pbzip2", "-c", "-b1", "-p2"], data, setup.tmp / "vmcore.bz2")
    raw = bytearray(open(packed, "rb").read())
    starts = [m.start() for m in re.finditer(rb"BZh[1-9]1AY&SY", raw)]
    late = starts[len(starts) * 3 // 4]     # pieces before it are decoded, held and written
    for i in range(late + 200, late + 216):
        raw[i] ^= 0x55
    open(packed, "wb").write(bytes(raw))
    res = setup("-i", "1", packed)
    # the one-thread reader takes over at the bad piece and names the damaged stream
    assert_clean_failure(res, setup.work, "corrupt",
                         [packed, f"in the stream that starts at byte {late:,}"])
    assert workers_alive() == []


def test_cas_compress_zstd_frames_written_by_processes(setup):
    data = dumpish(setup.tmp / "vmcore", 40 * MiB, seed=9)
    assert setup("--compress", data, "--compress-format", "zstd").returncode == 0
    check_core(setup("-i", "1", data + ".zst"), data, "zstd")


def test_corrupt_block_fails_cleanly_without_leftovers(setup):
    data = dumpish(setup.tmp / "vmcore", 12 * MiB, seed=10)
    packed = compress_with(XZ_BLOCKS, data, setup.tmp / "vmcore.xz")
    raw = bytearray(open(packed, "rb").read())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0x55
    open(packed, "wb").write(bytes(raw))
    res = setup("-i", "1", packed)
    err = assert_clean_failure(res, setup.work, "corrupt", [packed, "corrupt xz data in the block"])
    assert "compressed byte" in err["message"]
    assert workers_alive() == []


def test_max_core_size_stops_before_writing(setup, config_file):
    data = dumpish(setup.tmp / "vmcore", 12 * MiB, seed=11)
    packed = compress_with(XZ_BLOCKS, data, setup.tmp / "vmcore.xz")
    conf = config_file(extra="[advanced]\nmaxCoreSize = 4M\n")
    res = run("cas-unpack", "--config", conf, "-i", "1", packed, env=setup.env)
    assert_clean_failure(res, setup.work, "too-large", ["maxCoreSize"])
    assert workers_alive() == []


def _start_long_unpack(setup):
    """A cas-unpack that runs for a while (64 MiB in 512 KiB xz blocks); returns it once
    its decoder processes are at work."""
    data = str(setup.tmp / "vmcore")
    with open(data, "wb") as out:
        for seed in range(8):
            out.write(open(dumpish(setup.tmp / "p", 8 * MiB, seed=seed), "rb").read())
    packed = compress_with(XZ_BLOCKS, data, setup.tmp / "vmcore.xz")
    proc = subprocess.Popen(command("cas-unpack") + ["--config", setup.conf, "-i", "1", packed],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=setup.env, text=True)
    deadline = time.monotonic() + 60
    while not workers_alive():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)   # held in the middle of its 128 blocks
    return proc


def test_sigterm_stops_workers_and_removes_the_partial_core(setup):
    proc = _start_long_unpack(setup)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    rec = json.loads(out.splitlines()[-1])
    assert rec["error"]["kind"] == "interrupted"
    assert "Traceback" not in err
    assert [f for f in files_under(setup.work) if not f.endswith(".log")] == []
    assert workers_alive() == []


def test_sigkill_of_cas_unpack_kills_its_workers(setup):
    proc = _start_long_unpack(setup)
    assert workers_alive()
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while workers_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers_alive() == []


def test_tar_inside_xz_still_read_by_threads(setup):
    data = dumpish(setup.tmp / "vmcore", 6 * MiB, seed=12)
    sh("tar", "-cf", setup.tmp / "case.tar", "-C", setup.tmp, "vmcore")
    packed = compress_with(XZ_BLOCKS, setup.tmp / "case.tar", setup.tmp / "case.tar.xz")
    res = setup("-i", "1", packed)
    assert res.returncode == 0, res
    assert res.record["layers"] == ["xz", "tar"]
    assert sha256(res.record["core"]) == sha256(data)
    assert "xz decoded by threads" in res.stderr
    assert workers_alive() == []
