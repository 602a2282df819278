"""cas-unpack on kdump directories and their archives, with split parts written by
tests/kdumpgen.py (makedumpfile's layouts): what is kept, what is only named, what is
refused."""

import os
import subprocess

import kdumpgen
from conftest import run

UTS = {"sysname": "Linux", "nodename": "h", "release": "6.1.0-9-amd64", "machine": "x86_64"}
VMCI = b"OSRELEASE=6.1.0-9-amd64\nPAGESIZE=4096\n"


def parts(where, ranges=((0, 0x4000), (0x4000, 0x8000)), stamp=1700000000):
    out = []
    for i, (start, end) in enumerate(ranges, start=1):
        p = where / f"vmcore.part{i}of{len(ranges)}"
        kdumpgen.write(str(p), max_mapnr=0x8000, utsname=UTS, vmcoreinfo=VMCI, timestamp=stamp,
                       split=(start, end), pages={start + 2: bytes([i]) * 4096})
        out.append(p)
    return out


def test_directory_parts_keep_their_names_and_links_are_not_followed(tmp_path, config_file):
    d = tmp_path / "crash" / "10.0.0.1-2026-01-01-00:00:00"
    d.mkdir(parents=True)
    parts(d)
    os.symlink("/etc/passwd", d / "vmcore-dmesg.txt")  # never read through a link
    (d / "sub").mkdir()
    res = run("cas-unpack", "--config", config_file(), "-i", "7", d)
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert [os.path.basename(c) for c in rec["cores"]] == ["vmcore.part1of2", "vmcore.part2of2"]
    assert "vmcore_dmesg" not in rec and sorted(rec["ignored"]) == ["sub/", "vmcore-dmesg.txt"]
    for core in rec["cores"]:
        assert os.path.dirname(core) == rec["workdir"]
    res = run("cas-ident", "--config", config_file(), input=[rec])
    assert res.record["split"]["count"] == 2 and res.record["kernel"]["release"] == UTS["release"]


def test_parts_of_two_dumps_keep_the_larger_set(tmp_path, config_file):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a").mkdir()
    (d / "b").mkdir()
    for p in parts(d / "a", ((0, 0x3000), (0x3000, 0x6000), (0x6000, 0x8000))):
        os.rename(p, d / ("a-" + p.name))
    other = parts(d / "b", ((0, 0x8000),), stamp=1600000000)[0]
    os.rename(other, d / "b-vmcore")
    res = run("cas-unpack", "--config", config_file(), "-i", "8", d)
    assert res.returncode == 0, res.stderr
    assert len(res.record["cores"]) == 3 and "b-vmcore" in res.record["ignored"]


def test_tarball_binary_dmesg_is_not_kept_as_text(tmp_path, config_file):
    d = tmp_path / "host-date"
    d.mkdir()
    parts(d)
    (d / "vmcore-dmesg.txt").write_bytes(b"\x00\x01binary")
    tarball = tmp_path / "d.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(tmp_path), d.name], check=True)
    res = run("cas-unpack", "--config", config_file(), "-i", "9", tarball)
    assert res.returncode == 0, res.stderr
    assert "vmcore_dmesg" not in res.record and len(res.record["cores"]) == 2
    assert sorted(os.listdir(res.record["workdir"])) == sorted(
        [os.path.basename(c) for c in res.record["cores"]] + ["9.log"])


def test_cores_outside_the_job_directory_are_refused(tmp_path, config_file):
    p = parts(tmp_path)
    work = tmp_path / "work" / "job" / "2026.01.02.03.04.05"  # a real job directory
    work.mkdir(parents=True)
    res = run("cas-ident", "--config", config_file(),
              input=[{"id": "job", "job": "job", "core": str(p[0]),
                      "cores": [str(p[0]), str(p[1])], "workdir": str(work)}])
    assert res.returncode == 1 and res.record["error"]["kind"] == "bad-record"
    assert "outside the job directory" in res.record["error"]["message"]
    assert "Traceback" not in res.stderr
