"""cas-extract through the executable, on small real packages built by rpmbuild and dpkg-deb.

See tests/extract_pkgs.py for how the packages are made.  Bad-input packages
are made from real ones by the means a shelf really damages them: cut short
(``head -c``), bytes flipped inside the compressed payload, a header spliced
onto another build's payload, a package replaced while it is read.
"""

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess

import pytest

import extract_pkgs as P
from conftest import command, run, sha256

PAYLOAD_KINDS = ["gzip", "bzip2", "xz", "xzmt", "lzma", "zstd", "none"]
DEB_KINDS = ["xz", "gzip", "zstd", "none"]


@pytest.fixture(scope="session")
def pkgs(tmp_path_factory):
    """Every payload kind of one kernel-debuginfo layout, plus debs and damaged variants."""
    work = str(tmp_path_factory.mktemp("extract-pkgs"))
    stage = os.path.join(work, "stage")
    digests = P.stage_tree(stage, vmlinux_size=4 << 20)
    other = os.path.join(work, "stage-other")  # same layout and sizes, other bytes
    P.stage_tree(other, vmlinux_size=4 << 20, salt="other")
    out = {"digests": digests, "work": work, "rpm": {}, "deb": {}}
    for kind in PAYLOAD_KINDS:
        out["rpm"][kind] = P.build_rpm(work, kind, stage)
    out["rpm_other_gzip"] = P.build_rpm(work, "gzip", other, release="98_other")
    for kind in DEB_KINDS:
        out["deb"][kind] = P.build_deb(work, kind)
    out["deb_symlink"] = P.build_deb(work, "xz", vmlinux_symlink=True)
    out["deb_nomd5"] = P.build_deb(work, "gzip", md5sums=False)
    return out


@pytest.fixture
def env(casenv, config_file, tmp_path):
    casenv["CAS_CONFIG"] = config_file()
    return casenv


def extract(env, package, member=P.VMLINUX, workdir=None, *extra):
    return run("cas-extract", "--rpm", package, "--member", member, "--workdir", workdir,
               *extra, env=env)


def assert_one_line_error(res, kind):
    assert res.returncode == 1, res
    assert res.record["error"]["kind"] == kind, res
    assert res.record["error"]["step"] == "cas-extract"
    assert "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) >= 1


def leftovers(tmp_path):
    """Files in the cache staging area and the job directory (must be none after a failure)."""
    found = []
    for base in (tmp_path / "debugs" / ".tmp", tmp_path / "job"):
        if base.exists():
            found += [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs
                      if not f.endswith(".log")]
    return found


@pytest.mark.parametrize("kind", PAYLOAD_KINDS)
def test_rpm_payloads_with_modules(pkgs, env, tmp_path, kind):
    job = tmp_path / "job"
    res = extract(env, pkgs["rpm"][kind], P.VMLINUX, job, "-m")
    assert res.returncode == 0, res
    rec = res.record
    assert rec["vmlinux"] == str(job) + P.VMLINUX
    assert sha256(rec["vmlinux"]) == pkgs["digests"][P.VMLINUX]
    want = sorted(str(job) + P.PREFIX + m for m in P.MODULES)
    assert sorted(rec["modules"]) == want
    for path in rec["modules"]:
        assert sha256(path) == pkgs["digests"][path[len(str(job)):]]


@pytest.mark.parametrize("kind", DEB_KINDS)
def test_deb_payloads_with_modules(pkgs, env, tmp_path, kind):
    deb, md5s = pkgs["deb"][kind]
    job = tmp_path / "job"
    res = extract(env, deb, P.DEB_VMLINUX, job, "-m", "--modules-prefix", P.PREFIX)
    assert res.returncode == 0, res
    assert res.record["vmlinux"] == str(job) + P.DEB_VMLINUX
    with open(res.record["vmlinux"], "rb") as fh:
        assert hashlib.md5(fh.read()).hexdigest() == md5s[P.DEB_VMLINUX]
    assert sorted(p[len(str(job)):] for p in res.record["modules"]) == sorted(
        p for p in md5s if p.startswith(P.PREFIX))


def test_deb_vmlinux_symlink_to_earlier_member(pkgs, env, tmp_path):
    """lib/modules/<rel>/vmlinux -> boot/vmlinux-<rel>: the target streamed past already."""
    deb, md5s = pkgs["deb_symlink"]
    res = extract(env, deb, P.VMLINUX, tmp_path / "job")
    assert res.returncode == 0, res
    with open(res.record["vmlinux"], "rb") as fh:
        assert hashlib.md5(fh.read()).hexdigest() == md5s[P.DEB_VMLINUX]
    assert not os.path.islink(res.record["vmlinux"])


def test_deb_without_md5sums_says_unverified(pkgs, env, tmp_path):
    deb, _ = pkgs["deb_nomd5"]
    res = extract(env, deb, P.DEB_VMLINUX, tmp_path / "job")
    assert res.returncode == 0, res
    assert "unverified" in res.stderr


def test_pipeline_record_passes_unknown_keys(pkgs, env, tmp_path):
    # a record's paths must lie where they belong: the job under workDirectory, the package
    # on the shelf (the config_file fixture puts both in tmp_path)
    job = tmp_path / "work" / "x1" / "2026.01.02.03.04.05"
    job.mkdir(parents=True)
    shelved = tmp_path / "kernels" / os.path.basename(pkgs["rpm"]["gzip"])
    os.link(pkgs["rpm"]["gzip"], shelved)
    rec = {"id": "x1", "workdir": str(job), "zz_unknown": [1, 2],
           "debuginfo": {"rpm": str(shelved), "name": "kernel-debuginfo",
                         "vmlinux": P.VMLINUX, "modules_prefix": P.PREFIX, "match": "release"}}
    err = {"id": "x2", "error": {"step": "cas-ident", "message": "boom", "kind": "corrupt"}}
    res = run("cas-extract", input=[rec, err], env=env)
    assert res.returncode == 1  # the error record passes through and counts
    first, second = res.records
    assert list(first)[:4] == ["id", "workdir", "zz_unknown", "debuginfo"]
    assert first["zz_unknown"] == [1, 2] and "modules" not in first
    assert sha256(first["vmlinux"]) == pkgs["digests"][P.VMLINUX]
    assert second == err


def test_process_function(pkgs, tmp_path):
    from caslib import config
    from caslib.extract import process
    cfg = config.defaults()
    cfg.values["debugs"] = str(tmp_path / "debugs")
    job = tmp_path / "job"
    job.mkdir()
    out = process({"workdir": str(job), "debuginfo": {"rpm": pkgs["rpm"]["xz"],
                   "vmlinux": P.VMLINUX, "modules_prefix": P.PREFIX}}, cfg, modules=True)
    assert out["vmlinux"] == str(job) + P.VMLINUX and len(out["modules"]) == len(P.MODULES)


# -- the cache ------------------------------------------------------------------------
def test_second_job_links_from_cache(pkgs, env, tmp_path):
    first = extract(env, pkgs["rpm"]["zstd"], P.VMLINUX, tmp_path / "job1", "-m")
    second = extract(env, pkgs["rpm"]["zstd"], P.VMLINUX, tmp_path / "job2", "-m")
    assert first.returncode == second.returncode == 0, (first, second)
    assert "cache hit" in second.stderr and "extracting" not in second.stderr
    a, b = os.stat(first.record["vmlinux"]), os.stat(second.record["vmlinux"])
    assert a.st_ino == b.st_ino and b.st_nlink >= 3  # cache + two jobs share the inode
    assert not (b.st_mode & 0o222), "cached files are read-only, so no job can change them"
    entries = [d for d in os.listdir(tmp_path / "debugs") if not d.startswith(".")]
    assert len(entries) == 2  # the vmlinux and the module set


def test_concurrent_jobs_extract_once(pkgs, env, tmp_path):
    procs = []
    for i in range(3):
        argv = command("cas-extract") + ["--rpm", pkgs["rpm"]["bzip2"], "--member", P.VMLINUX,
                                         "--workdir", str(tmp_path / f"job{i}")]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in outs), outs
    stderr = [e for _, e, _ in outs]
    assert sum("extracting" in e for e in stderr) == 1, stderr
    assert sum("cache hit" in e for e in stderr) == 2, stderr
    paths = [json.loads(o)["vmlinux"] for o, _, _ in outs]
    assert len({os.stat(p).st_ino for p in paths}) == 1
    assert sha256(paths[0]) == pkgs["digests"][P.VMLINUX]


def test_lru_eviction(pkgs, casenv, config_file, tmp_path):
    # each vmlinux entry is 4 MiB: a 6 MiB limit holds one of them
    casenv["CAS_CONFIG"] = config_file(cacheLimit="6M")
    a = extract(casenv, pkgs["rpm"]["gzip"], P.VMLINUX, tmp_path / "a")
    b = extract(casenv, pkgs["rpm"]["xz"], P.VMLINUX, tmp_path / "b")
    assert a.returncode == b.returncode == 0
    assert "evicted" in b.stderr
    entries = [d for d in os.listdir(tmp_path / "debugs") if not d.startswith(".")]
    assert len(entries) == 1
    # the job that got the evicted entry keeps its file (a link of its own)
    assert sha256(a.record["vmlinux"]) == pkgs["digests"][P.VMLINUX]
    again = extract(casenv, pkgs["rpm"]["xz"], P.VMLINUX, tmp_path / "c")
    assert "cache hit" in again.stderr


def test_unusable_cache_falls_back_to_job_directory(pkgs, casenv, config_file, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    casenv["CAS_CONFIG"] = config_file(debugs=str(blocker / "debugs"))
    res = extract(casenv, pkgs["rpm"]["gzip"], P.VMLINUX, tmp_path / "job")
    assert res.returncode == 0, res
    assert "unusable" in res.stderr
    assert sha256(res.record["vmlinux"]) == pkgs["digests"][P.VMLINUX]
    assert os.listdir(tmp_path / "job") == ["usr"]  # no staging directory left behind


# -- bad input ------------------------------------------------------------------------
def test_truncated_rpm(pkgs, env, tmp_path):
    src = pkgs["rpm"]["xz"]
    cut = tmp_path / "cut.rpm"
    with open(cut, "wb") as out:
        subprocess.run(["head", "-c", str(os.path.getsize(src) * 2 // 3), src], stdout=out,
                       check=True)
    res = extract(env, cut, P.VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "truncated")
    assert str(cut) in res.record["error"]["message"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["gzip", "xz", "xzmt", "zstd"])
def test_corrupt_payload(pkgs, env, tmp_path, kind):
    from caslib.packages import rpm
    src = pkgs["rpm"][kind]
    bad = tmp_path / "bad.rpm"
    shutil.copy(src, bad)
    start = rpm.open_package(src).data_offset
    with open(bad, "r+b") as fh:
        fh.seek(start + (os.path.getsize(src) - start) // 2)
        chunk = bytearray(fh.read(64))
        fh.seek(-64, 1)
        fh.write(bytes(b ^ 0x5A for b in chunk))
    res = extract(env, bad, P.VMLINUX, tmp_path / "job")
    assert res.returncode == 1
    # the codec notices (corrupt), or, if the damage decodes, the digest check does
    assert res.record["error"]["kind"] in ("corrupt", "digest"), res
    assert leftovers(tmp_path) == []


def test_unsupported_compressor(pkgs, env, tmp_path):
    """rpm 4.18 writes only compressors we read (gzip, bzip2, xz, lzma, zstd, none), so the
    PAYLOADCOMPRESSOR string of a real zstd RPM is rewritten to "lz4" in place; rpm itself
    (``rpm -qp --nodigest --nosignature``) then reports lz4, vouching for the header."""
    src = pkgs["rpm"]["zstd"]
    data = bytearray(open(src, "rb").read(64 << 10))
    from caslib.packages import rpm
    off = rpm.open_package(src).data_offset
    at = bytes(data[:off]).rfind(b"zstd\0")
    assert at > 0
    data[at:at + 5] = b"lz4\0\0"
    bad = tmp_path / "lz4.rpm"
    with open(bad, "wb") as out, open(src, "rb") as fh:
        out.write(data)
        fh.seek(len(data))
        shutil.copyfileobj(fh, out)
    shown = subprocess.run(["rpm", "-qp", "--nodigest", "--nosignature", "--qf",
                            "%{PAYLOADCOMPRESSOR}", str(bad)], capture_output=True, text=True)
    assert shown.stdout == "lz4"
    res = extract(env, bad, P.VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "unsupported")
    assert "'lz4'" in res.record["error"]["message"]


def test_member_not_present(pkgs, env, tmp_path):
    res = extract(env, pkgs["rpm"]["gzip"], "/usr/lib/debug/lib/modules/9.9/vmlinux",
                  tmp_path / "job")
    assert_one_line_error(res, "not-found")
    deb, _ = pkgs["deb"]["gzip"]
    res = extract(env, deb, "/usr/lib/debug/boot/vmlinux-9.9", tmp_path / "job2")
    assert_one_line_error(res, "not-found")


def test_digest_mismatch(pkgs, env, tmp_path):
    """Header of one real build spliced onto the payload of another.

    Both RPMs come from trees with the same layout and file sizes but other
    bytes, so the payload walks cleanly and only the header digests disagree:
    what a package damaged after signing, or mixed up on a mirror, looks like.
    """
    from caslib.packages import rpm
    a, b = pkgs["rpm"]["gzip"], pkgs["rpm_other_gzip"]
    off_a = rpm.open_package(a).data_offset
    off_b = rpm.open_package(b).data_offset
    spliced = tmp_path / "spliced.rpm"
    with open(spliced, "wb") as out:
        with open(a, "rb") as fh:
            out.write(fh.read(off_a))
        with open(b, "rb") as fh:
            fh.seek(off_b)
            shutil.copyfileobj(fh, out)
    res = extract(env, spliced, P.VMLINUX, tmp_path / "job", "-m")
    assert_one_line_error(res, "digest")
    assert "sha256 digest mismatch" in res.record["error"]["message"]
    assert leftovers(tmp_path) == []


def test_no_space_left(pkgs, env, tmp_path):
    """RLIMIT_FSIZE makes write() fail with EFBIG, as a full disk fails with ENOSPC."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    argv = command("cas-extract") + ["--rpm", pkgs["rpm"]["gzip"], "--member", P.VMLINUX,
                                     "--workdir", str(tmp_path / "job")]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, preexec_fn=limit)
    assert proc.returncode == 1, proc
    rec = json.loads(proc.stdout)
    assert rec["error"]["kind"] == "disk-full"
    assert "partial file removed" in rec["error"]["message"]
    assert "Traceback" not in proc.stderr
    assert leftovers(tmp_path) == []


def test_package_replaced_while_read(pkgs, tmp_path, monkeypatch):
    """Another build lands on the shelf (rename over the path) while the payload streams."""
    from caslib import config, extract as ex
    from caslib.packages import cpio
    from caslib.records import StepError
    shelf = tmp_path / "shelf.rpm"
    shutil.copy(pkgs["rpm"]["gzip"], shelf)
    real_walk = cpio.walk

    def walk_and_replace(*args, **kw):
        for n, member in enumerate(real_walk(*args, **kw)):
            if n == 2:
                shutil.copy(pkgs["rpm_other_gzip"], tmp_path / "new.rpm")
                os.replace(tmp_path / "new.rpm", shelf)
            yield member
    monkeypatch.setattr(cpio, "walk", walk_and_replace)
    cfg = config.defaults()
    cfg.values["debugs"] = str(tmp_path / "debugs")
    job = tmp_path / "job"
    job.mkdir()
    with pytest.raises(StepError) as err:
        ex.process({"workdir": str(job), "debuginfo": {"rpm": str(shelf), "vmlinux": P.VMLINUX}},
                   cfg)
    assert err.value.kind == "changed"
    assert leftovers(tmp_path) == []
    assert [d for d in os.listdir(tmp_path / "debugs") if not d.startswith(".")] == []


def test_unsafe_member_and_workdir(pkgs, env, tmp_path):
    res = extract(env, pkgs["rpm"]["gzip"], "/usr/lib/../../etc/passwd", tmp_path / "job")
    assert_one_line_error(res, "unsafe")
    outside = tmp_path / "outside"
    outside.mkdir()
    job = tmp_path / "job2"
    job.mkdir()
    os.symlink(outside, job / "usr")  # usr/ in the job points out of it
    res = extract(env, pkgs["rpm"]["gzip"], P.VMLINUX, job)
    assert_one_line_error(res, "unsafe")
    assert os.listdir(outside) == []


def test_truncated_deb(pkgs, env, tmp_path):
    deb, _ = pkgs["deb"]["xz"]
    cut = tmp_path / "cut.deb"
    with open(cut, "wb") as out:
        subprocess.run(["head", "-c", str(os.path.getsize(deb) // 2), deb], stdout=out, check=True)
    res = extract(env, cut, P.DEB_VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "truncated")
    assert leftovers(tmp_path) == []


def test_symlink_out_of_the_package(env, tmp_path):
    """A package whose vmlinux is a symlink climbing above / (rpmbuild packages it as is)."""
    stage = tmp_path / "stage"
    moddir = stage / P.PREFIX.lstrip("/")
    moddir.mkdir(parents=True)
    os.symlink("../" * 9 + "etc/passwd", moddir / "vmlinux")
    (moddir / "kernel").mkdir()
    (moddir / "kernel" / "x.ko.debug").write_bytes(b"x" * 100)
    bid = stage / P.BUILD_ID.lstrip("/")
    bid.parent.mkdir(parents=True)
    bid.write_bytes(b"y")
    rpm = P.build_rpm(str(tmp_path), "gzip", str(stage))
    res = extract(env, rpm, P.VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "unsafe")
    assert "points outside the package" in res.record["error"]["message"]


def test_missing_package(env, tmp_path):
    res = extract(env, tmp_path / "nope.rpm", P.VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "not-found")


def test_not_a_package(env, tmp_path):
    junk = tmp_path / "junk.rpm"
    junk.write_bytes(b"hello, not a package\n" * 10)
    res = extract(env, junk, P.VMLINUX, tmp_path / "job")
    assert_one_line_error(res, "unsupported")


def test_usage_errors(env, tmp_path):
    res = run("cas-extract", "--rpm", "x.rpm", env=env)
    assert res.returncode == 2 and "go together" in res.stderr


def test_man_page_mentions_every_option():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "man", "cas-extract.1")).read()
    assert text.startswith(".TH") or "\n.TH" in text
    for opt in ("--rpm", "--member", "--workdir", "--modules-prefix", "-m", "--config", "-h"):
        assert opt.replace("-", r"\-") in text or opt in text, opt


def test_stale_staging_is_swept(pkgs, env, tmp_path):
    """What a SIGKILLed extraction leaves in the cache's staging area goes on the next run."""
    stale = tmp_path / "debugs" / ".tmp" / "deadbeef.12345.1"
    stale.mkdir(parents=True)
    (stale / "half-a-vmlinux").write_bytes(b"x" * 1000)
    old = os.stat(stale).st_mtime - 7 * 3600
    os.utime(stale, (old, old))
    res = extract(env, pkgs["rpm"]["zstd"], P.VMLINUX, tmp_path / "job")
    assert res.returncode == 0, res
    assert not stale.exists()


def test_modules_later_reuse_the_cached_vmlinux(pkgs, env, tmp_path):
    """A job without -m caches the vmlinux; a later -m job reads only the modules."""
    first = extract(env, pkgs["rpm"]["xz"], P.VMLINUX, tmp_path / "job1")
    second = extract(env, pkgs["rpm"]["xz"], P.VMLINUX, tmp_path / "job2", "-m")
    assert first.returncode == second.returncode == 0, (first, second)
    assert f"extracting modules under {P.PREFIX}" in second.stderr
    assert f"extracting {P.VMLINUX}" not in second.stderr
    assert os.stat(first.record["vmlinux"]).st_ino == os.stat(second.record["vmlinux"]).st_ino
    assert len(second.record["modules"]) == len(P.MODULES)
