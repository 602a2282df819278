"""Overrides: --release in a pipe, --vmlinux, --package, and the customer's own vmlinux."""

import json
import mmap
import os
import subprocess

import pytest

from conftest import command, run, sha256

pytestmark = pytest.mark.realdump


def _dump(manifest, variant="makedumpfile-zlib"):
    return next(d["path"] for d in manifest["dumps"] if d["variant"] == variant)


def _vmlinux(manifest):
    return next(f for f in manifest["files"] if f["role"] == "debug-vmlinux")


def _rpm(manifest, decoy=False):
    return next(r for r in manifest["rpms"] if r["decoy"] == decoy and
                (decoy or r["payload"] == "zstd"))


@pytest.fixture
def conf(tmp_path, casenv):
    """A config with an empty shelf, or with the real zstd RPM when asked."""
    def make(shelf_rpm=None):
        shelf = tmp_path / "kernels"
        shelf.mkdir(exist_ok=True)
        if shelf_rpm:
            os.symlink(shelf_rpm, shelf / os.path.basename(shelf_rpm))
        path = tmp_path / "cas.conf"
        path.write_text(
            "[settings]\n"
            f"kernels = {shelf}\nworkDirectory = {tmp_path / 'work'}\n"
            f"database = {tmp_path / 'cas.db'}\ndebugs = {tmp_path / 'debugs'}\n"
            "debuginfodUrls =\n")
        assert run("cas-admin", "--config", path, env=casenv).returncode == 0
        return str(path)
    return make


def test_findkernel_release_in_a_pipe_overrides_the_record(realdump, conf, casenv, tmp_path):
    path = conf(_rpm(realdump)["path"])
    real = realdump["kernel"]
    workdir = tmp_path / "work" / "job" / "2026.01.02.03.04.05"  # piped: a real job directory
    workdir.mkdir(parents=True)
    record = {"workdir": str(workdir), "extra": [1, 2],
              "kernel": {"release": "6.1.0-99-cloud-amd64", "machine": "x86_64",
                         "build_id": "ab" * 20}}
    # a real pipe, as a user types it: cat record | cas-findkernel --release R
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    find = subprocess.Popen(command("cas-findkernel") + ["--config", path, "--release",
                                                         real["release"]],
                            stdin=cat.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=casenv)
    cat.stdout.close()
    cat.stdin.write(json.dumps(record) + "\n")
    cat.stdin.close()
    out, err = find.communicate(timeout=120)
    cat.wait(10)
    assert find.returncode == 0, err
    rec = json.loads(out)
    assert rec["kernel"]["release"] == real["release"]
    assert rec["kernel"]["build_id"] == "ab" * 20  # the dump's word stays in the record
    assert rec["extra"] == [1, 2] and rec["workdir"] == str(workdir)
    info = rec["debuginfo"]
    assert info["override"] == "release" and info["identified"] == "6.1.0-99-cloud-amd64"
    assert info["rpm"] == str(tmp_path / "kernels" / os.path.basename(_rpm(realdump)["path"]))


def test_findkernel_vmlinux_is_checked_like_any_input(conf, casenv, tmp_path):
    path = conf()
    for bad, kind in ((tmp_path / "absent", "not-found"), ("/etc/hostname", "bad-vmlinux"),
                      (tmp_path, "unreadable")):
        res = run("cas-findkernel", "--config", path, "--vmlinux", bad, env=casenv)
        assert res.returncode == 1, res
        assert res.record["error"]["kind"] == kind, res
        assert str(bad) in res.record["error"]["message"]
        assert "Traceback" not in res.stderr
    res = run("cas", "--config", path, "-i", "x", "-f", "/etc/hostname", "--vmlinux",
              tmp_path / "absent", env=casenv)
    assert res.returncode == 2 and "--vmlinux" in res.stderr


def test_cas_release_reaches_findkernel(realdump, conf, casenv):
    path = conf()
    res = run("cas", "--config", path, "-i", "rel", "-f", _dump(realdump), "--release",
              "6.1.0-99-cloud-amd64", "--json", env=casenv)
    # no debuginfo for the forced release: the job ends log-only (exit 3), the
    # findkernel error kept as analysis_error
    assert res.returncode == 3, res
    assert res.record["analysis"] == "log-only"
    err = res.record["analysis_error"]
    assert err["step"] == "cas-findkernel" and "6.1.0-99-cloud-amd64" in err["message"]


def test_cas_package_with_an_empty_shelf(realdump, conf, casenv):
    path = conf()
    res = run("cas", "--config", path, "-i", "pkg", "-f", _dump(realdump), "--package",
              _rpm(realdump)["path"], "--json", env=casenv, timeout=1800)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["debuginfo"]["override"] == "package"
    assert rec["debuginfo"]["vmlinux"] == _rpm(realdump)["vmlinux_member"]
    with open(os.path.join(rec["workdir"], "traceback")) as fh:
        assert "sysrq_handle_crash" in fh.read()


def test_cas_forced_wrong_vmlinux_fails_clearly(realdump, conf, casenv, tmp_path):
    decoy = _rpm(realdump, decoy=True)
    out = tmp_path / "decoy"
    res = run("cas-extract", "--config", conf(), "--rpm", decoy["path"], "--member",
              decoy["vmlinux_member"], "--workdir", out, env=casenv)
    assert res.returncode == 0, res
    wrong = res.record["vmlinux"]
    res = run("cas", "--config", os.path.join(tmp_path, "cas.conf"), "-i", "wrong", "-f",
              _dump(realdump), "--vmlinux", wrong, "--json", env=casenv, timeout=1800)
    # crash refuses the forced vmlinux: the job ends log-only (exit 3) with crash's error
    assert res.returncode == 3, res
    rec = res.record
    assert rec["analysis"] == "log-only" and "error" not in rec
    rec["error"] = rec["analysis_error"]
    assert rec["debuginfo"]["override"] == "vmlinux"
    assert rec["error"]["step"] == "cas-crash"
    assert rec["error"]["kind"] in ("mismatch", "bad-vmlinux"), rec["error"]
    assert "panic" not in (rec.get("crash") or {})
    assert "Traceback" not in res.stderr


def test_cas_forced_vmlinux_of_another_build_stops_at_crashs_version_check(
        realdump, conf, casenv, tmp_path):
    """The real debug vmlinux with its banner's package version changed: what crash sees of
    a rebuild of the same release.  crash warns "kernel version inconsistency" and would go
    on; with a forced vmlinux the job fails instead of mailing that analysis."""
    other = tmp_path / "vmlinux-other-build"
    subprocess.run(["cp", "--reflink=auto", _vmlinux(realdump)["path"], str(other)], check=True)
    version = realdump["kernel_package_version"].encode()
    other_version = version[:-1] + (b"8" if version.endswith(b"9") else b"9")
    changed = 0
    with open(other, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mem:
        at = mem.find(b"Debian " + version + b" (")
        while at != -1:
            mem[at:at + 7 + len(version)] = b"Debian " + other_version
            changed += 1
            at = mem.find(b"Debian " + version + b" (", at + 1)
    assert changed, "no banner found in the vmlinux"
    res = run("cas", "--config", conf(), "-i", "other", "-f", _dump(realdump), "--vmlinux",
              other, "--json", env=casenv, timeout=1800)
    assert res.returncode == 3, res  # log-only: crash's version check stopped the analysis
    rec = res.record
    assert rec["analysis"] == "log-only" and "error" not in rec
    rec["error"] = rec["analysis_error"]
    assert rec["error"]["step"] == "cas-crash" and rec["error"]["kind"] == "mismatch", rec
    assert "kernel version inconsistency" in rec["error"]["message"]
    assert "panic" not in rec["crash"]
    for name in ("traceback", "sys", "log"):
        assert not os.path.exists(os.path.join(rec["workdir"], name)), name
    assert os.path.exists(os.path.join(rec["workdir"], "crash.out"))


def test_the_customers_vmlinux_in_the_archive_is_used(realdump, conf, casenv, tmp_path):
    top = tmp_path / "customer"
    top.mkdir()
    os.symlink(_dump(realdump), top / "vmcore")
    os.symlink(_vmlinux(realdump)["path"], top / "vmlinux")
    tarball = tmp_path / "case.tar"
    # the core first: the vmlinux after it must still be kept
    subprocess.run(["tar", "-chf", str(tarball), "-C", str(top), "vmcore", "vmlinux"], check=True)
    res = run("cas", "--config", conf(), "-i", "cust", "-f", tarball, "--json", env=casenv,
              timeout=1800)
    assert res.returncode == 0, res
    rec = res.record
    kept = rec["customer_vmlinux"]
    assert kept["member"] == "vmlinux" and kept["build_id"] == realdump["kernel"]["build_id"]
    assert kept["file"] == os.path.join(rec["workdir"], "vmlinux")
    assert rec["debuginfo"]["source"] == "archive" and rec["debuginfo"]["override"] == "vmlinux"
    assert rec["vmlinux"] == kept["file"]
    assert sha256(rec["vmlinux"]) == _vmlinux(realdump)["sha256"]
    assert os.path.getsize(rec["core"]) == os.path.getsize(_dump(realdump))
    with open(os.path.join(rec["workdir"], "traceback")) as fh:
        assert "sysrq_handle_crash" in fh.read()


def test_a_zip_keeps_the_vmlinux_and_a_foreign_one_is_not_used(realdump, conf, casenv, tmp_path):
    path = conf()
    top = tmp_path / "customer"
    top.mkdir()
    os.symlink(_dump(realdump), top / "vmcore")
    os.symlink(_vmlinux(realdump)["path"], top / "vmlinux")
    archive = tmp_path / "case.zip"
    subprocess.run(["zip", "-q", "-0", str(archive), "vmcore", "vmlinux"], cwd=top, check=True)
    res = run("cas-unpack", "--config", path, "-i", "zip", archive, env=casenv)
    assert res.returncode == 0, res
    kept = res.record["customer_vmlinux"]
    assert kept["build_id"] == realdump["kernel"]["build_id"] and kept["member"] == "vmlinux"
    assert sha256(kept["file"]) == _vmlinux(realdump)["sha256"]
    assert os.path.getsize(res.record["core"]) == os.path.getsize(_dump(realdump))
    # a vmlinux of another kernel in the archive is kept but never used
    decoy = _rpm(realdump, decoy=True)
    got = run("cas-extract", "--config", path, "--rpm", decoy["path"], "--member",
              decoy["vmlinux_member"], "--workdir", tmp_path / "decoy", env=casenv)
    os.unlink(top / "vmlinux")
    os.symlink(got.record["vmlinux"], top / "vmlinux-other")
    tarball = tmp_path / "other.tar"
    subprocess.run(["tar", "-chf", str(tarball), "-C", str(top), "vmlinux-other", "vmcore"],
                   check=True)
    unpacked = run("cas-unpack", "--config", path, "-i", "other", tarball, env=casenv)
    assert unpacked.returncode == 0, unpacked
    assert unpacked.record["customer_vmlinux"]["build_id"] == decoy["vmlinux_build_id"]
    ident = run("cas-ident", "--config", path, input=unpacked.record, env=casenv)
    found = run("cas-findkernel", "--config", path, input=ident.record, env=casenv)
    assert found.returncode == 1 and found.record["error"]["kind"] == "not-found"
    # an INFO line: a failing record's stderr is its error line alone; the job log keeps it
    with open(os.path.join(found.record["workdir"], "other.log")) as fh:
        assert "not used" in fh.read()
