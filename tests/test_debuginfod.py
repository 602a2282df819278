"""debuginfod end to end: the real server indexing the real packages, an empty shelf.

One debuginfod indexes the real-dump RPM (``-R``), another the real Debian
``-dbg`` package (``-U``).  ``cas`` with an empty shelf reaches the panicking
task's backtrace through the first; the second serves the vmlinux out of
the .deb.  Failures: a server that is down, a slow one, 404, a file with the
wrong build-id, a file over DEBUGINFOD_MAXSIZE.
"""

import glob
import json
import os
import subprocess
import time

import pytest

from conftest import command, run, sha256
from debuginfod_fixture import Debuginfod, Peer, link_dir, need_debuginfod, free_port

pytestmark = pytest.mark.realdump


def _zstd_rpm(manifest):
    return next(r["path"] for r in manifest["rpms"] if r["payload"] == "zstd" and not r["decoy"])


def _dbg_deb(manifest):
    return next(f["path"] for f in manifest["files"]
                if f["role"] == "deb" and "-dbg_" in os.path.basename(f["path"]))


def _dump(manifest, variant):
    return next(d["path"] for d in manifest["dumps"] if d["variant"] == variant)


def _debug_vmlinux(manifest):
    return next(f for f in manifest["files"] if f["role"] == "debug-vmlinux")


@pytest.fixture(scope="module")
def rpm_server(realdump, tmp_path_factory):
    need_debuginfod()
    root = tmp_path_factory.mktemp("debuginfod-rpm")
    rpms = link_dir(root, "rpms", [_zstd_rpm(realdump)])
    server = Debuginfod(root, rpm_dirs=[rpms]).start(realdump["kernel"]["build_id"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deb_server(realdump, tmp_path_factory):
    need_debuginfod()
    root = tmp_path_factory.mktemp("debuginfod-deb")
    debs = link_dir(root, "debs", [_dbg_deb(realdump)])
    server = Debuginfod(root, deb_dirs=[debs]).start(realdump["kernel"]["build_id"])
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path, casenv):
    """A config with an EMPTY shelf (indexed: no packages) and its own cache."""
    def make(urls, env_extra=None):
        conf = tmp_path / "cas.conf"
        (tmp_path / "kernels").mkdir(exist_ok=True)
        conf.write_text(
            "[settings]\n"
            f"kernels = {tmp_path / 'kernels'}\nworkDirectory = {tmp_path / 'work'}\n"
            f"database = {tmp_path / 'cas.db'}\ndebugs = {tmp_path / 'debugs'}\n"
            f"debuginfodUrls = {' '.join(urls)}\n")
        env = dict(casenv)
        for name in ("DEBUGINFOD_URLS", "DEBUGINFOD_TIMEOUT", "DEBUGINFOD_MAXSIZE",
                     "DEBUGINFOD_MAXTIME"):
            env.pop(name, None)
        env.update(env_extra or {})
        assert run("cas-admin", "--config", conf, env=env).returncode == 0
        return str(conf), env
    return make


STAMP = "2026.01.02.03.04.05"


def _jobdir(tmp_path, job="job", work="work"):
    """``<workDirectory>/<job>/<stamp>``: the only workdir a piped record may name."""
    workdir = tmp_path / work / job / STAMP
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _record(manifest, tmp_path, work="work"):
    """What cas-ident says about the real dump, in a job directory of its own."""
    workdir = _jobdir(tmp_path, work=work)
    k = manifest["kernel"]
    return {"workdir": str(workdir), "kernel": {"release": k["release"], "machine": k["machine"],
                                                 "build_id": k["build_id"]}}


def _find_and_extract(conf, env, record):
    found = run("cas-findkernel", "--config", conf, input=record, env=env)
    if found.returncode != 0:
        return found, None
    return found, run("cas-extract", "--config", conf, input=found.record, env=env)


def test_cas_with_an_empty_shelf_reaches_the_backtrace_through_debuginfod(
        realdump, rpm_server, site, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"  # nobody listens: skipped, the next one answers
    conf, env = site([down, rpm_server.url])
    res = run("cas", "--config", conf, "-i", "dfd", "-f", _dump(realdump, "makedumpfile-zlib"),
              "--json", env=env, timeout=1800)
    assert res.returncode == 0, res
    rec = res.record
    info = rec["debuginfo"]
    build_id = realdump["kernel"]["build_id"]
    assert info["source"] == "debuginfod" and info["match"] == "build_id"
    assert info["url"] == f"{rpm_server.url}/buildid/{build_id}/debuginfo"
    assert rec["vmlinux"].startswith(rec["workdir"] + os.sep)
    assert sha256(rec["vmlinux"]) == _debug_vmlinux(realdump)["sha256"]
    with open(os.path.join(rec["workdir"], "traceback")) as fh:
        assert "sysrq_handle_crash" in fh.read()
    assert rec["crash"]["panic"]["message"] == realdump["kernel"]["panic"]
    assert "Connection refused" in res.stderr or "refused" in res.stderr
    # the download went into the extraction cache: the next job only links it
    again = run("cas-extract", "--config", conf, env=env,
                input={k: v for k, v in rec.items() if k in ("workdir", "kernel", "debuginfo")})
    assert again.returncode == 0, again
    assert "cache hit" in again.stderr
    assert os.path.samefile(again.record["vmlinux"], rec["vmlinux"])


def test_the_debian_dbg_package_is_served_too(realdump, deb_server, site, tmp_path):
    conf, env = site([deb_server.url])
    found, extracted = _find_and_extract(conf, env, _record(realdump, tmp_path))
    assert found.returncode == 0, found
    assert found.record["debuginfo"]["server"] == deb_server.url
    assert extracted.returncode == 0, extracted
    assert sha256(extracted.record["vmlinux"]) == _debug_vmlinux(realdump)["sha256"]


def test_two_jobs_at_once_download_once(realdump, rpm_server, site, tmp_path):
    conf, env = site([rpm_server.url])
    found = run("cas-findkernel", "--config", conf, input=_record(realdump, tmp_path), env=env)
    assert found.returncode == 0, found
    procs = []
    for n in range(2):
        workdir = _jobdir(tmp_path, job=f"job{n}")
        rec = dict(found.record, workdir=str(workdir))
        proc = subprocess.Popen(command("cas-extract") + ["--config", conf], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdin.write(json.dumps(rec) + "\n")
        proc.stdin.close()
        procs.append(proc)
    results = [(p.stdout.read(), p.stderr.read(), p.wait(600)) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    assert sum("downloading" in r[1] for r in results) == 1, results
    paths = [json.loads(r[0])["vmlinux"] for r in results]
    assert os.path.samefile(*paths)


def test_env_debuginfod_urls_is_the_default(realdump, rpm_server, tmp_path, casenv):
    conf = tmp_path / "cas.conf"
    conf.write_text(f"[settings]\nkernels = {tmp_path}/k\nworkDirectory = {tmp_path}/w\n"
                    f"database = {tmp_path}/db\ndebugs = {tmp_path}/d\n")
    env = dict(casenv, DEBUGINFOD_URLS=f"http://127.0.0.1:{free_port()} {rpm_server.url}")
    res = run("cas-findkernel", "--config", conf, input=_record(realdump, tmp_path, work="w"),
              env=env)
    assert res.returncode == 0, res
    assert res.record["debuginfo"]["server"] == rpm_server.url


def test_server_down_is_a_not_found_naming_the_server(realdump, site, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    conf, env = site([down])
    res = run("cas-findkernel", "--config", conf, input=_record(realdump, tmp_path), env=env)
    assert res.returncode == 1
    err = res.record["error"]
    assert err["kind"] == "not-found" and down in err["message"] and "debuginfod" in err["message"]
    assert "Traceback" not in res.stderr


def test_unknown_build_id_is_404_and_the_miss_is_remembered(realdump, rpm_server, site, tmp_path):
    conf, env = site([rpm_server.url])
    record = _record(realdump, tmp_path)
    record["kernel"]["build_id"] = "ab" * 20
    first = run("cas-findkernel", "--config", conf, input=record, env=env)
    assert first.returncode == 1 and "not found" in first.record["error"]["message"]
    second = run("cas-findkernel", "--config", conf, input=record, env=env)
    assert second.returncode == 1
    assert "remembered" in second.record["error"]["message"]
    assert "not found" in second.record["error"]["message"]


def test_a_slow_server_is_given_up_after_debuginfod_timeout(realdump, site, tmp_path):
    def respond(handler):
        time.sleep(8)
        handler.send_error(404)

    with Peer(respond) as slow:
        conf, env = site([slow.url], {"DEBUGINFOD_TIMEOUT": "1"})
        started = time.monotonic()
        res = run("cas-findkernel", "--config", conf, input=_record(realdump, tmp_path), env=env,
                  timeout=60)
    assert res.returncode == 1
    assert res.record["error"]["kind"] == "not-found"
    assert "within 1 s" in res.record["error"]["message"], res
    assert slow.requests  # it was asked


def _serving(path):
    """A peer that answers every build-id with ``path``, close-delimited (no Content-Length)."""
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                handler.wfile.write(chunk)
    return respond


def test_a_file_with_the_wrong_build_id_is_refused(realdump, site, tmp_path):
    wrong = "/bin/true"  # a real ELF file with a build-id that is not the kernel's
    with Peer(_serving(wrong)) as peer:
        conf, env = site([peer.url])
        found, extracted = _find_and_extract(conf, env, _record(realdump, tmp_path))
    assert found.returncode == 0, found
    assert extracted.returncode == 1, extracted
    err = extracted.record["error"]
    assert err["kind"] == "mismatch" and realdump["kernel"]["build_id"] in err["message"]
    assert "vmlinux" not in extracted.record
    assert not glob.glob(str(_jobdir(tmp_path) / "usr" / "**" / "*.debug"), recursive=True)
    assert not [p for p in glob.glob(str(tmp_path / "debugs" / "*")) if os.path.isdir(p)]
    assert "Traceback" not in extracted.stderr


def test_debuginfod_maxsize_is_sent_to_the_server(realdump, rpm_server, site, tmp_path):
    conf, env = site([rpm_server.url], {"DEBUGINFOD_MAXSIZE": "1000000"})
    res = run("cas-findkernel", "--config", conf, input=_record(realdump, tmp_path), env=env)
    assert res.returncode == 1
    assert "DEBUGINFOD_MAXSIZE=1000000" in res.record["error"]["message"]


def test_debuginfod_maxsize_is_counted_when_the_server_does_not_say(realdump, site, tmp_path):
    big = _debug_vmlinux(realdump)["path"]
    with Peer(_serving(big)) as peer:
        conf, env = site([peer.url], {"DEBUGINFOD_MAXSIZE": "5000000"})
        found, extracted = _find_and_extract(conf, env, _record(realdump, tmp_path))
    assert found.returncode == 0, found
    assert extracted.returncode == 1
    err = extracted.record["error"]
    assert err["kind"] == "too-large" and "DEBUGINFOD_MAXSIZE=5000000" in err["message"]
    assert not glob.glob(str(_jobdir(tmp_path) / "usr" / "**" / "*.debug"), recursive=True)


def test_a_record_cannot_point_cas_extract_at_another_url(realdump, rpm_server, site, tmp_path):
    conf, env = site([rpm_server.url])
    record = _record(realdump, tmp_path)
    build_id = record["kernel"]["build_id"]
    record["debuginfo"] = {"source": "debuginfod", "build_id": build_id,
                           "url": f"http://127.0.0.1:1/buildid/{build_id}/debuginfo"}
    res = run("cas-extract", "--config", conf, input=record, env=env)
    assert res.returncode == 1 and res.record["error"]["kind"] == "bad-record"
    record["debuginfo"]["url"] = f"{rpm_server.url}/buildid/{build_id}/debuginfo"
    record["debuginfo"]["build_id"] = "../../etc"
    res = run("cas-extract", "--config", conf, input=record, env=env)
    assert res.returncode == 1 and res.record["error"]["kind"] == "bad-record"


# -- the client's parsers, alone ------------------------------------------------------------
def test_limits_follow_the_elfutils_variables():
    from caslib.shelf.debuginfod import DEFAULT_MAXTIME, DEFAULT_TIMEOUT, Limits

    lim = Limits({"DEBUGINFOD_TIMEOUT": "5", "DEBUGINFOD_MAXSIZE": "1000",
                  "DEBUGINFOD_MAXTIME": "60"})
    assert (lim.timeout, lim.maxsize, lim.maxtime) == (5, 1000, 60)
    assert lim.headers()["X-DEBUGINFOD-MAXSIZE"] == "1000"
    lim = Limits({"DEBUGINFOD_TIMEOUT": "soon", "DEBUGINFOD_MAXSIZE": "-1"})
    assert (lim.timeout, lim.maxsize, lim.maxtime) == (DEFAULT_TIMEOUT, None, DEFAULT_MAXTIME)
    assert "X-DEBUGINFOD-MAXSIZE" not in Limits({}).headers()


@pytest.mark.parametrize("bad", ["", "abc", "0g" * 20, "../etc", "a" * 3, "ab" * 65, None, 7])
def test_bad_build_ids_are_refused(bad):
    from caslib.shelf.debuginfod import check_build_id
    from caslib.records import StepError

    with pytest.raises(StepError) as exc:
        check_build_id(bad)
    assert exc.value.kind == "bad-record"


def test_only_configured_servers_and_http_urls():
    from caslib.config import defaults
    from caslib.shelf.debuginfod import check_url, servers
    from caslib.records import StepError

    cfg = defaults()
    cfg.values["debuginfodUrls"] = ["http://a.example/", "file:///etc", "https://b.example/x"]
    assert servers(cfg) == ["http://a.example", "https://b.example/x"]
    bid = "ab" * 20
    assert check_url(f"https://b.example/x/buildid/{bid}/debuginfo", cfg, bid)
    for url in (f"http://c.example/buildid/{bid}/debuginfo", f"http://a.example/buildid/{bid}/x",
                f"file:///etc/buildid/{bid}/debuginfo", None):
        with pytest.raises(StepError):
            check_url(url, cfg, bid)
