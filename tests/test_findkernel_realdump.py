"""cas-admin and cas-findkernel on the real-dump test bed: real RPMs, the real Debian -dbg
package, real dumps identified by cas-ident, checked against rpm, dpkg-deb and readelf."""

import os
import subprocess

import pytest

from conftest import command, run
from realdump import build

pytestmark = pytest.mark.realdump


@pytest.fixture(scope="module")
def real_index(realdump, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realidx")
    kernels = tmp / "kernels"
    for i, rpm in enumerate(realdump["rpms"]):
        d = kernels / ("decoy" if rpm["decoy"] else rpm["payload"])
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(rpm["path"], d / os.path.basename(rpm["path"]))
    debs = [f["path"] for f in realdump["files"] if f["path"].endswith(".deb")]
    (kernels / "debian").mkdir()
    for deb in debs:
        os.symlink(deb, kernels / "debian" / os.path.basename(deb))
    env = dict(os.environ, HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_CACHE_HOME=str(tmp / "cache"))
    env.pop("CAS_CONFIG", None)
    conf = tmp / "cas.conf"
    conf.write_text(f"[settings]\nkernels = {kernels}\nworkDirectory = {tmp / 'work'}\n"
                    f"database = {tmp / 'cas.db'}\n")
    res = run("cas-admin", "--config", conf, env=env)
    assert res.returncode == 0, res
    listed = run("cas-admin", "--config", conf, "--list", env=env)
    return {"conf": str(conf), "env": env, "kernels": str(kernels), "admin": res,
            "list": listed.records}


def test_real_packages_indexed_from_headers(realdump, real_index):
    # the RPMs (real and decoys) and the -dbg .deb; the image .deb is not a debug package
    n = len(realdump["rpms"]) + 1
    assert f"{n} packages seen, {n} indexed" in real_index["admin"].stderr
    by_package = {os.path.realpath(k["package"]): k for k in real_index["list"]}
    for rpm in realdump["rpms"]:
        k = by_package[os.path.realpath(rpm["path"])]
        assert k["release"] == rpm["uname_r"]
        assert k["vmlinux"] == rpm["vmlinux_member"]
        assert k["build_id"] == rpm["vmlinux_build_id"]  # from the .build-id link
        assert (k["name"], k["version"], k["package_release"], k["arch"], k["payload"]) == (
            rpm["name"], rpm["version"], rpm["release"], rpm["arch"], rpm["payload"])
        qpl = subprocess.run(["rpm", "-qpl", "--nosignature", "--nodigest", rpm["path"]],
                             capture_output=True, text=True, check=True).stdout.split()
        assert k["vmlinux"] in qpl
        assert k["modules"] == sum(1 for p in qpl if p.endswith(".ko.debug"))
    deb = [k for k in real_index["list"] if k["format"] == "deb"]
    assert len(deb) == 1
    assert deb[0]["release"] == realdump["kernel"]["release"]
    assert deb[0]["build_id"] == realdump["kernel"]["build_id"]  # read from the ELF notes
    assert deb[0]["vmlinux"] == f"/usr/lib/debug/boot/vmlinux-{realdump['kernel']['release']}"


def test_real_kernel_found_by_build_id(realdump, real_index):
    kernel = realdump["kernel"]
    res = run("cas-findkernel", "--config", real_index["conf"], "--release", kernel["release"],
              "--machine", kernel["machine"], "--build-id", kernel["build_id"],
              env=real_index["env"])
    assert res.returncode == 0, res
    info = res.record["debuginfo"]
    real = [r for r in realdump["rpms"] if not r["decoy"]]
    assert info["match"] == "build_id"
    assert os.path.realpath(info["rpm"]) in {os.path.realpath(r["path"]) for r in real}
    assert info["vmlinux"] == real[0]["vmlinux_member"]
    assert info["modules_prefix"] == f"/usr/lib/debug/lib/modules/{kernel['release']}/"
    assert info["format"] == "rpm"
    assert "also holds" in res.stderr  # the other payloads and the .deb, logged


def test_real_dumps_through_cas_ident(realdump, real_index):
    """cas-ident on each real dump | cas-findkernel: the real kernel's package, by build-id."""
    for dump in realdump["dumps"]:
        ident = subprocess.run(command("cas-ident") + ["--config", real_index["conf"], dump["path"]],
                               capture_output=True, text=True, env=real_index["env"], timeout=300)
        res = run("cas-findkernel", "--config", real_index["conf"], input=ident.stdout,
                  env=real_index["env"])
        rec = res.record
        if "error" in rec:
            assert rec["error"]["step"] == "cas-ident", (dump["name"], rec)
            continue
        assert res.returncode == 0, (dump["name"], res)
        assert rec["debuginfo"]["vmlinux"].endswith(f"/{realdump['kernel']['release']}/vmlinux")
        if rec["kernel"].get("build_id"):
            assert rec["debuginfo"]["match"] == "build_id", dump["name"]


def test_decoy_releases_are_the_nearest(realdump, real_index):
    """A release the test bed lacks (ABI + 2): the nearest is the ABI + 1 decoy."""
    kernel = realdump["kernel"]
    absent = build.abi_shift(kernel["release"], +2)
    assert absent not in {r["uname_r"] for r in realdump["rpms"]}
    res = run("cas-findkernel", "--config", real_index["conf"], "--release", absent,
              "--machine", kernel["machine"], env=real_index["env"])
    assert res.returncode == 1
    msg = res.record["error"]["message"]
    assert msg.startswith(f"no debuginfo for {absent} ({kernel['machine']}) among "
                          f"{len(realdump['rpms']) + 1} indexed packages; nearest: "
                          f"{realdump['decoys']['newer']}"), msg


def test_decoys_recorded_are_the_decoys_built(realdump):
    """The manifest's decoy roles name exactly the decoy RPMs, per the rule in build.py."""
    assert realdump["decoys"] == build.decoys(realdump["kernel"]["release"])
    assert sorted(realdump["decoys"].values()) == sorted(
        r["uname_r"] for r in realdump["rpms"] if r["decoy"])


def test_issue_example_with_only_the_decoys(realdump, tmp_path, config_file, casenv):
    """The real kernel's packages are missing; the three decoys remain (ABI - 1, the other
    flavour, ABI + 1): the message names them all, the same flavour first."""
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    for rpm in realdump["rpms"]:
        if rpm["decoy"]:
            os.symlink(rpm["path"], kernels / os.path.basename(rpm["path"]))
    conf = config_file(kernels=str(kernels))
    assert run("cas-admin", "--config", conf, env=casenv).returncode == 0
    kernel, decoys = realdump["kernel"], realdump["decoys"]
    res = run("cas-findkernel", "--config", conf, "--release", kernel["release"], "--machine",
              kernel["machine"], "--build-id", kernel["build_id"], env=casenv)
    assert res.returncode == 1
    msg = res.record["error"]["message"]
    head = (f"no debuginfo for {kernel['release']} ({kernel['machine']}) among 3 indexed "
            f"packages; nearest: ")
    assert msg.startswith(head), msg
    nearest = msg[len(head):].split(", ")
    assert sorted(nearest) == sorted(decoys.values()), msg
    assert nearest[0] in (decoys["older"], decoys["newer"]), msg
    assert nearest[1] == decoys["other_flavour"], msg
