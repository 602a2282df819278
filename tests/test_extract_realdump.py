"""cas-extract on the real-dump test bed: the real 590 MB Debian vmlinux in Fedora-layout RPMs.

Every payload (gzip, xz, zstd) is extracted once, with ``-m``; the vmlinux
must be byte-identical (sha256) to the one the kernel package shipped, and
each module debug file to its source.  Slow: the xz payload alone takes
about 10 s to decode.
"""

import os
import signal
import subprocess
import time

import pytest

from conftest import command, run, sha256


def _files_by_role(manifest, role):
    return [f for f in manifest.get("files", []) if f.get("role") == role]


def _real_rpms(manifest):
    return [r for r in manifest.get("rpms", []) if not r.get("decoy")]


def test_every_real_payload(realdump, casenv, config_file, tmp_path):
    rpms = _real_rpms(realdump)
    assert {r["payload"] for r in rpms} >= {"gzip", "xz", "zstd"}, rpms
    vm = _files_by_role(realdump, "debug-vmlinux")
    want_vmlinux = vm[0]["sha256"] if vm and vm[0].get("sha256") else sha256(realdump["vmlinux"])
    module_sha = {os.path.basename(f["path"]): f["sha256"]
                  for f in _files_by_role(realdump, "debug-module") if f.get("sha256")}
    casenv["CAS_CONFIG"] = config_file()
    for rpm in rpms:
        job = tmp_path / f"job-{rpm['payload']}"
        res = run("cas-extract", "-m", "--rpm", rpm["path"], "--member", rpm["vmlinux_member"],
                  "--workdir", job, env=casenv, timeout=900)
        assert res.returncode == 0, res
        rec = res.record
        assert rec["vmlinux"] == str(job) + rpm["vmlinux_member"]
        assert sha256(rec["vmlinux"]) == want_vmlinux, rpm["payload"]
        assert sorted(p[len(str(job)):] for p in rec["modules"]) == sorted(
            rpm["module_members"]), rpm["payload"]
        for path in rec["modules"]:
            name = os.path.basename(path)
            for key, digest in module_sha.items():  # x.ko.debug in the RPM, x.ko(.debug) shipped
                if name == key or name.replace(".ko.debug", ".ko") == key:
                    assert sha256(path) == digest, (rpm["payload"], name)


def test_interrupted_extraction_leaves_nothing(realdump, casenv, config_file, tmp_path):
    """SIGTERM in the middle of the real xz payload: exit 143, no partial file anywhere."""
    rpm = [r for r in _real_rpms(realdump) if r["payload"] == "xz"][0]
    casenv["CAS_CONFIG"] = config_file()
    job = tmp_path / "job"
    proc = subprocess.Popen(command("cas-extract") + [
        "--rpm", rpm["path"], "--member", rpm["vmlinux_member"], "--workdir", str(job)],
        env=casenv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = tmp_path / "debugs" / ".tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it is writing into the cache
        if tmp.exists() and any(files for _, _, files in os.walk(tmp)):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    assert "Traceback" not in err
    assert [f for _, _, fs in os.walk(tmp) for f in fs] == []
    assert not (job / "usr").exists()
    assert [d for d in os.listdir(tmp_path / "debugs") if not d.startswith(".")] == []


def test_decoys_are_not_the_kernel(realdump, casenv, config_file, tmp_path):
    decoys = [r for r in realdump.get("rpms", []) if r.get("decoy")]
    if not decoys:
        pytest.skip("the test bed built no decoy packages")
    casenv["CAS_CONFIG"] = config_file()
    rpm = decoys[0]
    res = run("cas-extract", "--rpm", rpm["path"], "--member", rpm["vmlinux_member"],
              "--workdir", tmp_path / "job", env=casenv)
    assert res.returncode == 0, res
    assert sha256(res.record["vmlinux"]) != sha256(realdump["vmlinux"])
