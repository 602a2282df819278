"""A zip holding the parts of a real split dump (makedumpfile --split, from the real-dump
builder's "split" step) keeps every part, as a tar or a directory does: cas-unpack records
``cores`` with each part byte-identical, keeps vmcore-dmesg.txt, and cas-ident names one
dump in N parts."""

import os
import shutil
import subprocess
import zipfile

import pytest

from conftest import run, sha256


@pytest.fixture
def conf(tmp_path, config_file):
    return config_file()


def check(res, parts, conf):
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert rec["layers"] == ["zip"]
    assert len(rec["cores"]) == len(parts) and rec["core"] == rec["cores"][0]
    assert sorted(sha256(c) for c in rec["cores"]) == sorted(sha256(p) for p in parts)
    for core in rec["cores"]:
        assert os.path.dirname(core) == rec["workdir"]
    assert [f for f in os.listdir(rec["workdir"]) if ".part" in f] == []
    assert "another part of the split dump" in res.stderr
    ident = run("cas-ident", "--config", conf, input=[rec])
    assert ident.returncode == 0, ident.stderr
    assert ident.record["split"]["count"] == len(parts)
    assert ident.record["split"]["complete"] is True
    return rec


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_split_parts_in_a_python_zip(realdump, tmp_path, conf, compression):
    s = realdump["split"]["sets"]["split-zlib"]
    archive = tmp_path / "vmcore.zip"
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("crash/README", "customer notes: the parts of one dump\n")
        for p in reversed(s["paths"]):    # out of order: ident orders them by start_pfn
            zf.write(p, "crash/" + os.path.basename(p))
        zf.write(realdump["split"]["dmesg"], "crash/vmcore-dmesg.txt")
    res = run("cas-unpack", "--config", conf, "-i", "z1", str(archive))
    rec = check(res, s["paths"], conf)
    with open(rec["vmcore_dmesg"]) as fh:
        assert "sysrq triggered crash" in fh.read()
    assert "skipping member 'crash/README'" in res.stderr


@pytest.mark.skipif(shutil.which("zip") is None, reason="zip not installed")
def test_split_lzo_parts_zipped_by_the_zip_tool(realdump, tmp_path, conf):
    s = realdump["split"]["sets"]["split-lzo"]
    d = tmp_path / "127.0.0.1-2026-12-03-19:49:39"
    d.mkdir()
    for p in s["paths"]:
        os.link(p, d / os.path.basename(p))
    archive = tmp_path / "crash.zip"
    subprocess.run(["zip", "-q", "-r", str(archive), d.name], cwd=tmp_path, check=True)
    res = run("cas-unpack", "--config", conf, "-i", "z2", str(archive))
    check(res, s["paths"], conf)


def test_unrelated_kdump_beside_a_part_is_not_kept(realdump, tmp_path, conf):
    """Only parts of a split dump join it: a whole dump in the same zip is skipped."""
    part = realdump["split"]["sets"]["split-zlib"]["paths"][0]
    whole = next(d for d in realdump["dumps"] if d["variant"] == "makedumpfile-lzo")["path"]
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(part, "vmcore.1")
        zf.write(whole, "vmcore")
    res = run("cas-unpack", "--config", conf, "-i", "z3", str(archive))
    assert res.returncode == 0, res.stderr
    assert "cores" not in res.record
    assert "skipping member 'vmcore'" in res.stderr
