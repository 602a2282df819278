"""cas-unpack through the executable, on files made by the real compressors and tar/zip."""

import json
import os
import tarfile

import pytest

from conftest import run
from unpack_fixtures import COMPRESSORS, MiB, compress_with, dumpish, files_under, sh, sha256


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()
    data = dumpish(tmp_path / "vmcore.12345")

    def unpack(*args, input=None):
        return run("cas-unpack", "--config", conf, *args, input=input, env=casenv)

    unpack.tmp = tmp_path
    unpack.data = data
    unpack.work = str(tmp_path / "work")
    unpack.env = casenv
    unpack.conf = conf
    return unpack


def check_core(res, want_sha, layers, name="vmcore.12345"):
    assert res.returncode == 0, res
    rec = res.record
    assert rec["layers"] == layers
    assert os.path.basename(rec["core"]) == name
    assert os.path.dirname(rec["core"]) == rec["workdir"]
    assert sha256(rec["core"]) == want_sha
    assert rec["core_bytes"] == os.path.getsize(rec["core"])
    left = [f for f in files_under(rec["workdir"]) if ".part" in f]
    assert left == []
    return rec


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_each_compression_by_magic(setup, codec):
    argv, suffix = COMPRESSORS[codec]
    src = compress_with(argv, setup.data, setup.tmp / ("vmcore.12345" + suffix))
    res = setup("-i", "12345", src)
    rec = check_core(res, sha256(setup.data), [codec])
    assert rec["id"] == "12345" and rec["job"] == "12345" and rec["source"] == src
    assert f"peeling {codec} layer 1" in res.stderr
    # the job log got the same lines
    with open(os.path.join(rec["workdir"], "12345.log")) as fh:
        assert f"peeling {codec} layer 1" in fh.read()


def test_magic_not_name(setup):
    """A gzip file called .bz2 and an xz file with no suffix: magic decides."""
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.12345.bz2")
    rec = check_core(setup("-i", "1", gz), sha256(setup.data), ["gzip"])
    os.rename(compress_with(["xz", "-c"], setup.data, setup.tmp / "x"), setup.tmp / "dumpfile")
    check_core(setup("-i", "1", setup.tmp / "dumpfile"), sha256(setup.data), ["xz"], "dumpfile")
    assert rec["layers"] == ["gzip"]


def test_concatenated_and_multiframe(setup):
    """cat of two gzip files, of two xz streams, a multi-frame zstd file (pzstd)."""
    half = setup.tmp / "half"
    with open(setup.data, "rb") as fh, open(half, "wb") as out:
        out.write(fh.read(3 * MiB))
    for codec in ("gzip", "xz", "zstd", "bzip2"):
        argv, suffix = COMPRESSORS[codec]
        a = compress_with(argv, half, setup.tmp / ("a" + suffix))
        both = setup.tmp / ("vmcore.12345" + suffix)
        with open(both, "wb") as out:
            out.write(open(a, "rb").read() * 2)
        want = sha256_bytes(open(half, "rb").read() * 2)
        check_core(setup("-i", "1", both), want, [codec])
    multi = setup.tmp / "vmcore.12345.zst"
    sh("pzstd", "-q", "-f", "-p", "2", "-o", multi, setup.data)  # skippable frames + many frames
    check_core(setup("-i", "1", multi), sha256(setup.data), ["zstd"])


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("flag,codec", [("-cf", None), ("-czf", "gzip"), ("-cjf", "bzip2"),
                                        ("-cJf", "xz"), ("--zstd -cf", "zstd")])
def test_tar_plain_and_compressed(setup, flag, codec):
    suffix = {None: "", "gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}[codec]
    tarball = setup.tmp / f"vmcore.12345.tar{suffix}"
    sh("tar", *flag.split(), tarball, "-C", setup.tmp, "vmcore.12345")
    res = setup("-i", "5", tarball)
    check_core(res, sha256(setup.data), ([codec] if codec else []) + ["tar"])
    assert "chose member 'vmcore.12345'" in res.stderr


def test_tar_sparse_member(setup):
    """GNU tar -S stores holes as a sparse member; the core is whole and sparse again."""
    tarball = setup.tmp / "s.tar.gz"
    sh("tar", "-cSzf", tarball, "-C", setup.tmp, "vmcore.12345")
    rec = check_core(setup("-i", "5", tarball), sha256(setup.data), ["gzip", "tar"], "s")
    assert os.stat(rec["core"]).st_blocks * 512 < 0.7 * rec["core_bytes"]


def test_twice_compressed(setup):
    """The original CAS failed on this: xz inside gzip, and a tar.bz2 compressed again by zstd."""
    xz = compress_with(["xz", "-c"], setup.data, setup.tmp / "a.xz")
    twice = compress_with(["gzip", "-c"], xz, setup.tmp / "vmcore.12345.xz.gz")
    check_core(setup("-i", "1", twice), sha256(setup.data), ["gzip", "xz"])
    tarball = setup.tmp / "t.tar.bz2"
    sh("tar", "-cjf", tarball, "-C", setup.tmp, "vmcore.12345")
    zst = compress_with(["zstd", "-q", "-c"], tarball, setup.tmp / "vmcore.12345.tar.bz2.zst")
    res = setup("-i", "1", zst)
    check_core(res, sha256(setup.data), ["zstd", "bzip2", "tar"])
    assert "peeling zstd layer 1" in res.stderr and "peeling bzip2 layer 2" in res.stderr


def test_tar_member_inside_compressed(setup):
    """A tar holding vmcore.gz: the member's own layer is peeled too."""
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.gz")
    tarball = setup.tmp / "case.tar"
    sh("tar", "-cf", tarball, "-C", setup.tmp, "vmcore.gz")
    check_core(setup("-i", "1", tarball), sha256(setup.data), ["tar", "gzip"], "case")
    assert gz


def test_largest_member_chosen(setup):
    """No dump magic in any member: the largest regular file wins, and the choice is logged."""
    d = setup.tmp / "case"
    os.makedirs(d / "logs")
    (d / "README").write_text("customer notes\n" * 100)
    (d / "logs" / "messages").write_bytes(os.urandom(300_000))
    big = dumpish(d / "vmcore", 4 * MiB, seed=3)
    (d / "small").write_bytes(os.urandom(1000))
    os.symlink("vmcore", d / "link-inside")
    tarball = setup.tmp / "case.tar.xz"
    sh("tar", "-cJf", tarball, "-C", setup.tmp, "case")
    res = setup("-i", "1", tarball)
    check_core(res, sha256(big), ["xz", "tar"], "case")
    assert "chose member 'case/vmcore'" in res.stderr and "largest regular file" in res.stderr
    zipped = setup.tmp / "case.zip"
    sh("zip", "-q", "-r", "-y", zipped, "case", cwd=setup.tmp)
    res = setup("-i", "1", zipped)
    check_core(res, sha256(big), ["zip"], "case")
    assert "chose member 'case/vmcore'" in res.stderr


def test_dump_magic_beats_size(setup):
    """A small ELF core file (made by the kernel via gcore-less `gdb -batch -ex generate-core-file`)
    beats a larger plain file; `file` vouches for the core."""
    core = make_process_core(setup.tmp)
    big = dumpish(setup.tmp / "decoy.bin", 2 * os.path.getsize(core) + MiB, seed=4)
    tarball = setup.tmp / "mixed.tar.gz"
    sh("tar", "-czf", tarball, "-C", setup.tmp, "decoy.bin", os.path.basename(core))
    res = setup("-i", "1", tarball)
    check_core(res, sha256(core), ["gzip", "tar"], "mixed")
    assert "elf dump by magic" in res.stderr
    assert big
    zipped = setup.tmp / "mixed.zip"
    sh("zip", "-q", zipped, "decoy.bin", os.path.basename(core), cwd=setup.tmp)
    res = setup("-i", "1", zipped)
    check_core(res, sha256(core), ["zip"], "mixed")


def make_process_core(tmp) -> str:
    """An ELF ET_CORE file written by gdb's generate-core-file from a live process."""
    import shutil
    import subprocess

    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    path = str(tmp / "proc.core")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        sh("gdb", "-q", "-batch", "-p", proc.pid, "-ex", f"generate-core-file {path}")
    finally:
        proc.kill()
        proc.wait()
    assert "core file" in sh("file", path).decode()
    return path


def test_zip_compressed_is_spooled(setup):
    """A zip sent xz-compressed cannot be read in place: it is spooled and removed."""
    zipped = setup.tmp / "vmcore.12345.zip"
    sh("zip", "-q", zipped, "vmcore.12345", cwd=setup.tmp)
    xz = compress_with(["xz", "-c"], zipped, setup.tmp / "vmcore.12345.zip.xz")
    res = setup("-i", "1", xz)
    rec = check_core(res, sha256(setup.data), ["xz", "zip"])
    assert "spooling zip" in res.stderr
    assert sorted(os.listdir(rec["workdir"])) == ["1.log", "vmcore.12345"]


def test_raw_file_hard_linked_and_untouched(setup):
    before = os.stat(setup.data)
    res = setup("-i", "1", setup.data)
    rec = check_core(res, sha256(setup.data), [])
    after = os.stat(setup.data)
    assert os.stat(rec["core"]).st_ino == before.st_ino  # same filesystem: a hard link
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert os.path.exists(setup.data)


def test_raw_file_copied_sparse_when_no_link(setup, monkeypatch):
    """Across filesystems (here: os.link refused) the raw file is copied, sparse, in-process."""
    import caslib.config
    import caslib.unpack

    def no_link(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(caslib.unpack.os, "link", no_link)
    monkeypatch.setenv("HOME", str(setup.tmp / "home"))
    cfg = caslib.config.load(setup.conf)
    full = setup.tmp / "full"
    with open(setup.data, "rb") as fh, open(full, "wb") as out:  # a non-sparse copy
        out.write(fh.read())
    rec = caslib.unpack.process({"id": "1", "source": str(full)}, cfg)
    assert sha256(rec["core"]) == sha256(full)
    assert os.stat(rec["core"]).st_ino != os.stat(full).st_ino
    assert os.stat(rec["core"]).st_blocks * 512 < 0.7 * os.stat(full).st_blocks * 512


def test_sparse_output(setup):
    """Zero runs become holes: blocks on disk stay close to the non-zero bytes."""
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.12345.gz")
    rec = check_core(setup("-i", "1", gz), sha256(setup.data), ["gzip"])
    with open(rec["core"], "rb") as fh:
        data = fh.read()
    nonzero = sum(4096 for i in range(0, len(data), 4096) if data[i:i + 4096].strip(b"\0"))
    assert os.stat(rec["core"]).st_blocks * 512 <= nonzero * 1.01 + 65536


def test_records_from_stdin_pass_through(setup):
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.12345.gz")
    first = {"ticket": "A-1", "id": "7", "source": gz, "zzz": [1, 2]}
    failed = {"id": "8", "source": gz, "error": {"step": "x", "message": "m", "kind": "k"}}
    res = setup(input=[first, failed])
    assert res.returncode == 1  # one record carries an error (passed through)
    out, passed = res.records
    assert list(out)[:4] == ["ticket", "id", "source", "zzz"]
    assert out["ticket"] == "A-1" and out["zzz"] == [1, 2] and out["layers"] == ["gzip"]
    assert passed == failed
    # -i and --job fill records that carry none
    res = setup("-i", "9", "--job", "nightly", input={"source": gz})
    assert res.returncode == 0, res
    assert res.record["id"] == "9" and res.record["job"] == "nightly"
    assert res.record["workdir"].startswith(os.path.join(setup.work, "nightly") + os.sep)


def test_file_option_and_pipe_to_json(setup):
    res = setup("-i", "3", "-f", setup.data)
    assert res.returncode == 0, res
    json.dumps(res.record)
    res = setup("-i", "3", "-f", setup.data, setup.data)
    assert res.returncode == 2 and "once" in res.stderr


def test_tar_built_by_tarfile_listed_by_tar(setup):
    """A tar written by Python's tarfile reads the same as GNU tar lists it."""
    tarball = setup.tmp / "py.tar"
    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(setup.data, arcname="var/crash/vmcore")
    assert sh("tar", "-tf", tarball).decode().split() == ["var/crash/vmcore"]
    check_core(setup("-i", "1", tarball), sha256(setup.data), ["tar"], "py")


def test_help():
    import subprocess

    from conftest import command

    proc = subprocess.run(command("cas-unpack") + ["-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--compress-format" in proc.stdout


def test_progress_only_on_a_terminal(setup):
    """With stderr on a pseudo-terminal a progress line appears; in a pipe it does not."""
    import pty
    import subprocess

    from conftest import command

    xz = compress_with(["xz", "-c"], setup.data, setup.tmp / "vmcore.12345.xz")
    master, slave = pty.openpty()
    proc = subprocess.Popen(command("cas-unpack") + ["--config", setup.conf, "-i", "1", xz],
                            stdout=subprocess.PIPE, stderr=slave, env=setup.env)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read()
    assert proc.wait() == 0
    os.close(master)
    assert json.loads(out)["layers"] == ["xz"]
    text = seen.decode(errors="replace")
    assert "unpack vmcore.12345.xz:" in text and "/s" in text, text
    assert "unpack vmcore.12345.xz:" not in setup("-i", "1", xz).stderr
