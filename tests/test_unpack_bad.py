"""Bad input for cas-unpack (issue 2 "Bad input"): each a one-line error, an error record,
exit 1, no traceback, and no partial core left behind."""

import io
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time

import pytest

from conftest import ROOT, command, run
from unpack_fixtures import (COMPRESSORS, MiB, assert_clean_failure, compress_with, dumpish,
                             files_under, sh)


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()
    data = dumpish(tmp_path / "vmcore.12345")

    def unpack(*args, input=None, **kw):
        return run("cas-unpack", "--config", conf, *args, input=input, env=casenv, **kw)

    unpack.tmp, unpack.data, unpack.conf, unpack.env = tmp_path, data, conf, casenv
    unpack.work = str(tmp_path / "work")
    return unpack


def no_job_dir(setup):
    assert not os.path.exists(setup.work) or files_under(setup.work) == []


def test_missing_file(setup):
    res = setup("-i", "1", setup.tmp / "nope.gz")
    assert_clean_failure(res, setup.work, "not-found", ["nope.gz", "no such file"])
    no_job_dir(setup)


def test_directory_without_a_dump_given(setup):
    """A directory is read as a kdump directory; one with no dump in it is refused."""
    res = setup("-i", "1", setup.tmp)
    assert_clean_failure(res, setup.work, "no-core", ["no file in it is a kernel dump"])
    no_job_dir(setup)


def test_unreadable_file(setup):
    """As root, run as casuser 'nobody' (cas switches before touching files); else as ourselves."""
    top = tempfile.mkdtemp(prefix="cas-unreadable-")
    try:
        os.chmod(top, 0o755)
        secret = os.path.join(top, "vmcore.gz")
        compress_with(["gzip", "-c"], setup.data, secret)
        os.chmod(secret, 0)
        conf = os.path.join(top, "cas.conf")
        extra = "casuser = nobody\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as fh:
            fh.write(f"[settings]\n{extra}kernels = {top}/k\nworkDirectory = {top}/work\n"
                     f"database = {top}/cas.db\n")
        os.chmod(conf, 0o644)
        res = run("cas-unpack", "--config", conf, "-i", "1", secret, env=setup.env)
        assert_clean_failure(res, os.path.join(top, "work"), "unreadable",
                             [secret, "permission denied"])
    finally:
        shutil.rmtree(top)


def test_empty_file(setup):
    empty = setup.tmp / "vmcore.0"
    empty.write_bytes(b"")
    assert_clean_failure(setup("-i", "1", empty), setup.work, "empty", ["empty file"])
    no_job_dir(setup)


def test_compressed_empty(setup):
    empty = setup.tmp / "e"
    empty.write_bytes(b"")
    gz = compress_with(["gzip", "-c"], empty, setup.tmp / "e.gz")
    assert_clean_failure(setup("-i", "1", gz), setup.work, "empty", ["decompresses to nothing"])


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_truncated_stream(setup, codec):
    argv, suffix = COMPRESSORS[codec]
    full = compress_with(argv, setup.data, setup.tmp / ("full" + suffix))
    cut = setup.tmp / ("vmcore" + suffix)
    size = os.path.getsize(full) * 2 // 3
    with open(full, "rb") as fh:
        cut.write_bytes(fh.read(size))
    # the real tool agrees that it is cut short
    assert subprocess.run(argv[:1] + ["-dc"], stdin=open(cut, "rb"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0
    res = setup("-i", "1", cut)
    err = assert_clean_failure(res, setup.work, "truncated", [str(cut), "truncated", codec])
    assert f"{size:,}" in err["message"]  # where it ended
    # the job directory stays, with its log, and the error record names it
    assert os.path.exists(os.path.join(res.record["workdir"], "1.log"))


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_corrupt_data(setup, codec):
    argv, suffix = COMPRESSORS[codec]
    full = compress_with(argv, setup.data, setup.tmp / ("full" + suffix))
    data = bytearray(open(full, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x55
    bad = setup.tmp / ("vmcore" + suffix)
    bad.write_bytes(bytes(data))
    assert subprocess.run(argv[:1] + ["-dc"], stdin=open(bad, "rb"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0
    res = setup("-i", "1", bad)
    assert_clean_failure(res, setup.work, "corrupt", [str(bad), "corrupt", codec])


def test_trailing_garbage(setup):
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.gz")
    with open(gz, "ab") as fh:
        fh.write(b"this is not gzip" * 10)
    assert_clean_failure(setup("-i", "1", gz), setup.work, "corrupt", ["trailing data"])


def evil_tar(path, member: tarfile.TarInfo, data: bytes = b""):
    """A tar with a regular vmcore and one evil member, built with tarfile."""
    with tarfile.open(path, "w") as tf:
        good = tarfile.TarInfo("vmcore")
        good.size = 5
        tf.addfile(good, io.BytesIO(b"hello"))
        member.size = len(data) if member.isreg() else 0
        tf.addfile(member, io.BytesIO(data) if data else None)
    return str(path)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    ti.devmajor, ti.devminor = 1, 3
    return ti


@pytest.mark.parametrize("member,listed,words", [
    (_member("../evil"), "../evil", ["'..' leads out"]),
    (_member("a/../../evil"), "a/../../evil", ["'..' leads out"]),
    (_member("/etc/cron.d/evil"), "/etc/cron.d/evil", ["absolute path"]),
    (_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "link -> ../../etc/passwd",
     ["symlink", "points outside"]),
    (_member("dir/link", tarfile.SYMTYPE, "/etc"), "dir/link -> /etc", ["symlink"]),
    (_member("hard", tarfile.LNKTYPE, "../outside"), "hard link to", ["hard link"]),
    (_member("dev", tarfile.CHRTYPE), "crw", ["device"]),
])
def test_evil_tar_members(setup, member, listed, words):
    tarball = evil_tar(setup.tmp / "evil.tar", member, b"pwned" if member.isreg() else b"")
    listing = subprocess.run(["tar", "-tvf", tarball], capture_output=True, text=True).stdout
    assert listed in listing, listing  # GNU tar sees the same member
    xz = compress_with(["xz", "-c"], tarball, setup.tmp / "evil.tar.xz")
    for path in (tarball, xz):
        res = setup("-i", "1", path)
        assert_clean_failure(res, setup.work, "unsafe", [repr(member.name)] + words)


def test_evil_zip_members(setup):
    import zipfile

    for name in ("../evil", "/abs/evil"):
        path = setup.tmp / "evil.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("vmcore", b"hello")
            zf.writestr(name, b"pwned")
        assert name.lstrip("/") in sh("unzip", "-l", path).decode()
        assert_clean_failure(setup("-i", "1", path), setup.work, "unsafe", [repr(name)])
    # a symlink that leads out, made by the zip tool itself
    d = setup.tmp / "z"
    d.mkdir()
    (d / "vmcore").write_bytes(b"hello")
    os.symlink("../../../etc/passwd", d / "passwd")
    path = setup.tmp / "link.zip"
    sh("zip", "-q", "-y", path, "vmcore", "passwd", cwd=d)
    assert_clean_failure(setup("-i", "1", path), setup.work, "unsafe", ["symlink"])


def test_archive_without_regular_file(setup):
    d = setup.tmp / "case"
    (d / "empty-dir").mkdir(parents=True)
    os.symlink("empty-dir", d / "inside-link")
    (d / "zero").write_bytes(b"")
    tarball = setup.tmp / "case.tar.gz"
    sh("tar", "-czf", tarball, "-C", setup.tmp, "case")
    assert_clean_failure(setup("-i", "1", tarball), setup.work, "no-core", ["no regular file"])
    zipped = setup.tmp / "case.zip"
    sh("zip", "-q", "-r", "-y", zipped, "case", cwd=setup.tmp)
    assert_clean_failure(setup("-i", "1", zipped), setup.work, "no-core", ["no regular file"])


def test_truncated_zip_and_tar(setup):
    zipped = setup.tmp / "vmcore.zip"
    sh("zip", "-q", zipped, "vmcore.12345", cwd=setup.tmp)
    data = open(zipped, "rb").read()
    zipped.write_bytes(data[: len(data) - 100])  # the central directory is gone
    assert_clean_failure(setup("-i", "1", zipped), setup.work, "corrupt", ["zip"])
    tarball = setup.tmp / "vmcore.tar"
    sh("tar", "-cf", tarball, "-C", setup.tmp, "vmcore.12345")
    data = open(tarball, "rb").read()
    tarball.write_bytes(data[: len(data) // 2])
    assert_clean_failure(setup("-i", "1", tarball), setup.work, "corrupt", ["tar"])


@pytest.mark.parametrize("args,record", [
    (["-i", "../../etc"], None),
    (["--id=-rf"], None),
    (["-i", "ok", "--job", "../x"], None),
    ([], {"id": "../../etc"}),
    ([], {"id": "-rf"}),
    ([], {"id": "a" * 65}),
])
def test_bad_identifier(setup, args, record):
    if record is None:
        res = setup(*args, setup.data)
    else:
        res = setup(*args, input=dict(record, source=setup.data))
    # the command line's mistake is a usage error; a record's is a bad record
    assert_clean_failure(res, setup.work, "usage" if record is None else "bad-record", ["bad"])
    assert not os.path.exists(setup.work)  # nothing created


def test_missing_id_is_usage(setup):
    res = setup(setup.data)
    assert res.returncode == 2 and "-i ID is required" in res.stderr and res.stdout == ""


def test_too_many_layers(setup):
    path = setup.tmp / "vmcore.12345"
    for _ in range(10):
        path = compress_with(["gzip", "-c"], path, str(path) + ".gz")
    assert_clean_failure(setup("-i", "1", path), setup.work, "too-deep", ["layers"])


def _fsize_limit(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_disk_full_rlimit(setup):
    """RLIMIT_FSIZE stands in for a full disk: the partial core is removed and the error says so."""
    gz = compress_with(["gzip", "-c"], setup.data, setup.tmp / "vmcore.12345.gz")
    for src in (gz, setup.data):  # streamed, and a raw copy (no hard link across RLIMIT: copy)
        proc = subprocess.run(command("cas-unpack") + ["--config", setup.conf, "-i", "1", src],
                              capture_output=True, text=True, env=setup.env,
                              preexec_fn=_fsize_limit(MiB))
        from conftest import Result

        res = Result(proc)
        if src == setup.data and res.returncode == 0:
            continue  # hard-linked: nothing written, nothing to fill
        assert_clean_failure(res, setup.work, "disk-full", ["removed the partial file"])


@pytest.mark.parametrize("raw", [False, True])
def test_disk_full_tmpfs(setup, tmp_path, raw):
    """A real ENOSPC: a 2 MiB tmpfs mounted in a private mount namespace.  A compressed
    input fills it and is cleaned up; a raw file (another filesystem: copied, not linked)
    is refused before writing, since its data size is known."""
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user namespaces here")
    work = tmp_path / "small"
    work.mkdir()
    conf = tmp_path / "tmpfs.conf"
    conf.write_text(f"[settings]\ncasuser = root\nkernels = {tmp_path}/k\n"
                    f"workDirectory = {work}\ndatabase = {tmp_path}/db\n")
    src = setup.data if raw else compress_with(["gzip", "-c"], setup.data,
                                               setup.tmp / "vmcore.12345.gz")
    script = ('mount -t tmpfs -o size=2m cas "$1" || exit 99; shift; "$@"; rc=$?; '
              'find "$0" -type f -printf "LEFT %P\\n" >&2; exit $rc')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(work), str(work)]
                          + command("cas-unpack") + ["--config", str(conf), "-i", "1", src],
                          capture_output=True, text=True, env=setup.env)
    if proc.returncode == 99:
        pytest.skip("cannot mount tmpfs in a user namespace")
    from conftest import Result

    res = Result(proc)
    assert res.returncode == 1, res
    err = res.record["error"]
    assert err["kind"] == "disk-full"
    if raw:
        assert "not enough space" in err["message"]
    else:
        assert "No space left on device" in err["message"]
        assert "removed the partial file" in err["message"]
    assert f"cas-unpack: {err['message']}" in res.stderr.splitlines()
    left = [line for line in res.stderr.splitlines() if line.startswith("LEFT ")]
    assert left and all(line.endswith("1.log") for line in left), left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted(setup, signum):
    """Killed mid-stream (the input is a fifo we feed slowly): no core left, an error record."""
    fifo = setup.tmp / "incoming"
    os.mkfifo(fifo)
    gz = compress_with(["gzip", "-c", "-1"], setup.data, setup.tmp / "vmcore.gz")
    payload = open(gz, "rb").read()
    proc = subprocess.Popen(command("cas-unpack") + ["--config", setup.conf, "-i", "1", fifo],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=setup.env)
    with open(fifo, "wb") as feed:
        feed.write(payload[: len(payload) // 2])
        feed.flush()
        deadline = time.time() + 30
        while not any(".part" in f for f in files_under(setup.work)):
            assert time.time() < deadline, "no partial file appeared"
            time.sleep(0.05)
        proc.send_signal(signum)
        try:
            out, err = proc.communicate(timeout=30)
        except BrokenPipeError:
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1
    import json

    rec = json.loads(lines[0])
    assert rec["error"]["kind"] == "interrupted"
    assert [f for f in files_under(setup.work) if not f.endswith(".log")] == []
    assert "removed the partial core" in open(os.path.join(rec["workdir"], "1.log")).read()


def test_bin_has_no_logic():
    with open(os.path.join(ROOT, "bin", "cas-unpack")) as fh:
        assert fh.read().rstrip().endswith('sys.exit(launch("unpack"))')
    assert sys.executable
    assert stat.S_IMODE(os.stat(os.path.join(ROOT, "bin", "cas-unpack")).st_mode) & 0o111
