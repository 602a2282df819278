"""cas-findkernel: exact matching by build-id, release+machine, release; helpful misses."""

import os
import shutil

import pytest

import kernelshelf
from conftest import run
from caslib import config, findkernel
from caslib.records import StepError


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The test shelf indexed by cas-admin; returns (config path, env, shelf info)."""
    shelf = kernelshelf.build()
    tmp = tmp_path_factory.mktemp("fk")
    env = dict(os.environ, HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_CACHE_HOME=str(tmp / "cache"))
    env.pop("CAS_CONFIG", None)
    conf = tmp / "cas.conf"
    conf.write_text(f"[settings]\nkernels = {shelf['dir']}\nworkDirectory = {tmp / 'work'}\n"
                    f"database = {tmp / 'cas.db'}\n")
    res = run("cas-admin", "--config", conf, env=env)
    assert res.returncode == 0, res
    return str(conf), env, shelf


def _find(indexed, *args, input=None):
    conf, env, _ = indexed
    return run("cas-findkernel", "--config", conf, *args, input=input, env=env)


MATCHES = [
    # release, machine, build-id, package file, vmlinux, match
    ("2.6.9-78.18.ELsmp", "i686", None, "kernel-debuginfo-2.6.9-78.18.EL.i686.rpm",
     "/usr/lib/debug/lib/modules/2.6.9-78.18.ELsmp/vmlinux", "release+machine"),
    ("2.6.9-78.18.ELsmp", "i386", None, "kernel-debuginfo-2.6.9-78.18.EL.i686.rpm",
     "/usr/lib/debug/lib/modules/2.6.9-78.18.ELsmp/vmlinux", "release+machine"),
    ("2.6.9-78.18.ELsmp", "x86_64", None, "kernel-debuginfo-2.6.9-78.18.EL.x86_64.rpm",
     "/usr/lib/debug/lib/modules/2.6.9-78.18.ELsmp/vmlinux", "release+machine"),
    ("2.6.9-78.18.ELlargesmp", None, None, "kernel-debuginfo-2.6.9-78.18.EL.x86_64.rpm",
     "/usr/lib/debug/lib/modules/2.6.9-78.18.ELlargesmp/vmlinux", "release"),
    ("2.6.18-194.el5xen", "x86_64", None, "kernel-xen-debuginfo-2.6.18-194.el5.x86_64.rpm",
     "/usr/lib/debug/lib/modules/2.6.18-194.el5xen/vmlinux", "release+machine"),
    ("2.6.18-194.el5", "x86_64", None, "kernel-debuginfo-2.6.18-194.el5.x86_64.rpm",
     "/usr/lib/debug/lib/modules/2.6.18-194.el5/vmlinux", "release+machine"),
    ("3.10.0-1160.el7.x86_64", "x86_64", "3c0ffee0000000000000000000000000000000ab",
     "kernel-debuginfo-3.10.0-1160.el7.x86_64.rpm",
     "/usr/lib/debug/lib/modules/3.10.0-1160.el7.x86_64/vmlinux", "build_id"),
    ("3.10.0-1160.el7.x86_64.debug", "x86_64", None, "kernel-debug-debuginfo-3.10.0-1160.el7.x86_64.rpm",
     "/usr/lib/debug/lib/modules/3.10.0-1160.el7.x86_64.debug/vmlinux", "release+machine"),
    ("5.14.0-362.8.1.el9_3.x86_64+debug", "x86_64", None,
     "kernel-debug-debuginfo-5.14.0-362.8.1.el9_3.x86_64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64+debug/vmlinux", "release+machine"),
    ("5.14.0-362.8.1.el9_3.x86_64+rt", "x86_64", None,
     "kernel-rt-debuginfo-5.14.0-362.8.1.el9_3.x86_64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64+rt/vmlinux", "release+machine"),
    ("5.14.0-362.8.1.el9_3.aarch64+64k", "aarch64", None,
     "kernel-64k-debuginfo-5.14.0-362.8.1.el9_3.aarch64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.aarch64+64k/vmlinux", "release+machine"),
    ("5.14.0-362.8.1.el9_3.aarch64", None, None, "kernel-debuginfo-5.14.0-362.8.1.el9_3.aarch64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.aarch64/vmlinux", "release"),
    ("5.14.0-362.8.1.el9_3.x86_64", "x86_64", None, "kernel-debuginfo-5.14.0-362.8.1.el9_3.x86_64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.8.1.el9_3.x86_64/vmlinux", "release+machine"),
    ("5.14.21-150500.55.28-default", "x86_64", None,
     "kernel-default-debuginfo-5.14.21-150500.55.28.1.x86_64.rpm",
     "/usr/lib/debug/boot/vmlinux-5.14.21-150500.55.28-default.debug", "release+machine"),
    ("6.5.6-300.fc39.x86_64", None, "9a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
     "kernel-debuginfo-6.5.6-300.fc39.x86_64.rpm",
     "/usr/lib/debug/lib/modules/6.5.6-300.fc39.x86_64/vmlinux", "build_id"),
    ("5.14.0-362.24.1.el9_3.x86_64", "x86_64", None, "kernel-debuginfo-9.9.9-1.x86_64.rpm",
     "/usr/lib/debug/lib/modules/5.14.0-362.24.1.el9_3.x86_64/vmlinux", "release+machine"),
    ("6.1.0-18-amd64", "x86_64", None, "linux-image-6.1.0-18-amd64-dbg_6.1.76-1_amd64.deb",
     "/usr/lib/debug/boot/vmlinux-6.1.0-18-amd64", "release+machine"),
    ("5.15.0-91-generic", None, None,
     "linux-image-unsigned-5.15.0-91-generic-dbgsym_5.15.0-91.101_amd64.ddeb",
     "/usr/lib/debug/boot/vmlinux-5.15.0-91-generic", "release"),
]


@pytest.mark.parametrize("release,machine,build_id,package,vmlinux,match", MATCHES)
def test_match(indexed, release, machine, build_id, package, vmlinux, match):
    args = ["--release", release]
    if machine:
        args += ["--machine", machine]
    if build_id:
        args += ["--build-id", build_id]
    res = _find(indexed, *args)
    assert res.returncode == 0, res
    info = res.record["debuginfo"]
    assert os.path.basename(info["rpm"]) == package
    assert os.path.isabs(info["rpm"]) and os.path.exists(info["rpm"])
    assert (info["vmlinux"], info["match"]) == (vmlinux, match)
    assert set(info) >= {"rpm", "name", "version", "release", "arch", "vmlinux", "modules_prefix",
                         "match", "epoch", "payload", "format"}
    assert res.record["kernel"]["release"] == release


def test_debuginfo_fields_for_a_deb(indexed):
    res = _find(indexed, "--release", "6.1.0-18-cloud-amd64", "--machine", "x86_64")
    info = res.record["debuginfo"]
    assert info == {"rpm": info["rpm"], "name": "linux-image-6.1.0-18-cloud-amd64-dbg", "epoch": None,
                    "version": "6.1.76", "release": "1", "arch": "amd64", "payload": "xz",
                    "format": "deb", "vmlinux": "/usr/lib/debug/boot/vmlinux-6.1.0-18-cloud-amd64",
                    "modules_prefix": "/usr/lib/debug/lib/modules/6.1.0-18-cloud-amd64/",
                    "match": "release+machine"}


def test_build_id_agreeing_with_release_wins(indexed):
    """The three test debs share one ELF (same build-id): the release decides among them."""
    _, _, shelf = indexed
    for release in ("6.1.0-18-cloud-amd64", "6.1.0-18-amd64", "5.15.0-91-generic"):
        res = _find(indexed, "--release", release, "--build-id", shelf["elf_build_id"])
        assert res.returncode == 0, res
        assert res.record["debuginfo"]["match"] == "build_id"
        assert res.record["debuginfo"]["vmlinux"].endswith(release)


def test_build_id_alone(indexed):
    res = _find(indexed, "--build-id", "9A1B2C3D4E5F60718293A4B5C6D7E8F901234567")
    assert res.returncode == 0, res
    assert res.record["debuginfo"]["vmlinux"].endswith("6.5.6-300.fc39.x86_64/vmlinux")


def test_other_build_of_same_release_is_refused(indexed):
    res = _find(indexed, "--release", "3.10.0-1160.el7.x86_64", "--build-id", "ff" * 20)
    assert res.returncode == 1
    msg = res.record["error"]["message"]
    assert "another build-id (3c0ffee0000000000000000000000000000000ab)" in msg
    assert res.record["error"]["kind"] == "not-found"


def test_wrong_machine_says_which_exist(indexed):
    res = _find(indexed, "--release", "2.6.9-78.18.ELhugemem", "--machine", "x86_64")
    assert res.returncode == 1
    assert "2.6.9-78.18.ELhugemem is indexed for i686" in res.record["error"]["message"]


def test_no_match_names_the_nearest(indexed):
    res = _find(indexed, "--release", "6.1.0-56-cloud-amd64", "--machine", "x86_64")
    assert res.returncode == 1
    err = res.record["error"]
    assert err["step"] == "cas-findkernel" and err["kind"] == "not-found"
    assert err["message"].startswith(
        "no debuginfo for 6.1.0-56-cloud-amd64 (x86_64) among 17 indexed packages; "
        "nearest: 6.1.0-18-cloud-amd64")
    assert "cas-findkernel: no debuginfo for 6.1.0-56-cloud-amd64" in res.stderr
    assert "Traceback" not in res.stderr


def test_records_in_a_pipe_pass_through(indexed):
    records = [
        {"id": "a1", "extra": [1, 2], "kernel": {"release": "6.5.6-300.fc39.x86_64",
                                                  "machine": "x86_64", "build_id": None}, "z": 1},
        {"id": "a2", "error": {"step": "cas-ident", "message": "bad", "kind": "corrupt"}},
        {"id": "a3", "core": "/x"},
        {"id": "a4", "kernel": {"release": None, "machine": "x86_64", "build_id": None}},
    ]
    res = _find(indexed, input=records)
    assert res.returncode == 1
    out = res.records
    assert len(out) == 4
    assert list(out[0]) == ["id", "extra", "kernel", "z", "debuginfo"]
    assert out[0]["debuginfo"]["match"] == "release+machine"
    assert out[1] == records[1]
    assert out[2]["error"]["kind"] == "bad-record" and "no kernel" in out[2]["error"]["message"]
    assert out[3]["error"]["kind"] == "bad-record"


def test_no_index_yet(tmp_path, config_file, casenv):
    res = run("cas-findkernel", "--config", config_file(), "--release", "6.1.0-18-amd64", env=casenv)
    assert res.returncode == 1
    assert "run cas-admin" in res.record["error"]["message"]


def test_usage_error(indexed):
    res = _find(indexed, "--machine", "x86_64")
    assert res.returncode == 2 and res.stdout == ""


def test_duplicates_are_ordered_and_logged(tmp_path, config_file, casenv):
    shelf = kernelshelf.build()
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    src = [p for p in shelf["rpms"] if p.endswith("kernel-debuginfo-3.10.0-1160.el7.x86_64.rpm")][0]
    shutil.copy(src, kernels / "b-kernel-debuginfo.rpm")
    shutil.copy(src, kernels / "a-kernel-debuginfo.rpm")
    conf = config_file(kernels=str(kernels))
    assert run("cas-admin", "--config", conf, env=casenv).returncode == 0
    res = run("cas-findkernel", "--config", conf, "--release", "3.10.0-1160.el7.x86_64", env=casenv)
    assert res.returncode == 0, res
    assert res.record["debuginfo"]["rpm"] == str(kernels / "a-kernel-debuginfo.rpm")
    assert "also holds 3.10.0-1160.el7.x86_64: " + str(kernels / "b-kernel-debuginfo.rpm") in res.stderr


def test_process_api(indexed):
    conf, env, _ = indexed
    cfg = config.load(conf, environ=env)
    out = findkernel.process({"kernel": {"release": "2.6.18-194.el5xen", "machine": "x86_64"}}, cfg)
    assert out["debuginfo"]["name"] == "kernel-xen-debuginfo"
    with pytest.raises(StepError):
        findkernel.process({"kernel": {"release": "1.0-1", "machine": "x86_64"}}, cfg)
