"""cas-crash through its executable, for what needs no dump: the time limit, bad input,
missing programs, servers, the record contract.

Real crash runs on real dumps are in test_crash_real.py.  Here crash is never
asked to read anything: where a run is needed, ``crashCommand`` names a test
script that hangs -- it tests our time limit and process-group kill, not crash.
The ``core`` and ``vmlinux`` files are empty placeholders nobody opens.
"""

import os
import platform
import time

import pytest

from conftest import run
from caslib import db
from caslib.crashrun import servers


@pytest.fixture
def job(tmp_path):
    work = tmp_path / "work" / "7" / "2026.01.02.03.04.05"  # under config_file's workDirectory
    work.mkdir(parents=True)
    (work / "vmcore").write_bytes(b"")
    (work / "vmlinux").write_bytes(b"")
    return {"id": "7", "job": "7", "workdir": str(work), "core": str(work / "vmcore"),
            "vmlinux": str(work / "vmlinux"),
            "kernel": {"release": "6.1.0-56-cloud-amd64", "machine": platform.machine()}}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\nState:\tZ" not in fh.read()
    except FileNotFoundError:
        return False


def test_timeout_kills_the_process_group_and_keeps_partial_output(job, tmp_path, casenv, config_file):
    pids = tmp_path / "pids"
    hang = tmp_path / "hanging-crash"
    hang.write_text("#!/bin/sh\n"
                    "echo 'crash 0.0-test (a stand-in that never finishes)'\n"
                    f"echo $$ > {pids}\n"
                    "sleep 600 &\n"
                    f"echo $! >> {pids}\n"
                    "wait\n")
    hang.chmod(0o755)
    cfg = config_file(crashCommand=str(hang), crashTimeout="2")
    job = dict(job, ticket="INC-1")  # an unknown key: passed through, in place
    started = time.monotonic()
    res = run("cas-crash", "--config", cfg, input=job, env=casenv, timeout=120)
    assert res.returncode == 0, res
    rec = res.record
    assert list(rec)[: len(job)] == list(job) and rec["ticket"] == "INC-1"
    c = rec["crash"]
    assert c["timed_out"] is True and c["exit_status"] is None
    assert c["note"] == "timed out after 2 s; the output is partial"
    assert c["output"] == os.path.join(job["workdir"], "crash.out")
    with open(c["output"]) as fh:
        assert "a stand-in that never finishes" in fh.read()
    assert "timed out after 2 s; the output is partial" in res.stderr
    assert "Traceback" not in res.stderr
    shell, sleeper = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 10
    while (_alive(shell) or _alive(sleeper)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(shell) and not _alive(sleeper)
    assert time.monotonic() - started < 60
    # the wrapper, the commands and the log are all in the job directory
    with open(os.path.join(job["workdir"], "crash")) as fh:
        assert fh.read().startswith("#!/bin/sh\n")
    assert os.access(os.path.join(job["workdir"], "crash"), os.X_OK)
    with open(os.path.join(job["workdir"], "crash.in")) as fh:
        text = fh.read()
        assert "kmem -f >> memory\n" in text and text.endswith("runq >> runq\nexit\n")
    with open(os.path.join(job["workdir"], "7.log")) as fh:
        assert "timed out" in fh.read()


def test_missing_crash_names_the_package(job, casenv, config_file):
    cfg = config_file(crashCommand="/nonexistent/bin/crash")
    res = run("cas-crash", "--config", cfg, input=job, env=casenv)
    assert res.returncode == 1
    err = res.record["error"]
    assert err["step"] == "cas-crash" and err["kind"] == "missing-tool"
    assert "'/nonexistent/bin/crash' (crashCommand) not found" in err["message"]
    assert "install the crash package" in err["message"]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not os.path.exists(os.path.join(job["workdir"], "crash.out"))


def test_unreadable_snippet_is_named(job, tmp_path, casenv, config_file):
    snips = tmp_path / "snips"
    snips.mkdir()
    (snips / "10-bt").write_text("bt >> traceback\n")
    (snips / "20-gone").symlink_to(tmp_path / "nowhere")
    cfg = config_file(snippets=str(snips))
    res = run("cas-crash", "--config", cfg, input=job, env=casenv)
    assert res.returncode == 1
    assert res.record["error"]["message"] == \
        f"snippet {snips / '20-gone'}: cannot read: No such file or directory"
    assert res.record["error"]["kind"] == "bad-snippet"
    assert not os.path.exists(os.path.join(job["workdir"], "crash.in"))


def test_no_server_for_the_architecture(job, tmp_path, casenv, config_file):
    cfg = config_file()
    rec = dict(job, kernel={"release": "6.1.0-56-s390x", "machine": "s390x"})
    res = run("cas-crash", "--config", cfg, input=rec, env=casenv)
    assert res.returncode == 1
    assert res.record["error"]["kind"] == "no-server"
    assert res.record["error"]["message"] == (
        f"no server for architecture s390x (this host is {platform.machine()}); "
        "no servers are registered (run cas-admin --server)")
    conn = db.connect(str(tmp_path / "cas.db"))
    servers.store(conn, [
        {"host": "x86.example", "port": 22, "arch": "x86_64", "crash": "/usr/bin/crash",
         "status": "ok", "checked": 1.0},
        {"host": "z.example", "port": 2222, "arch": None, "crash": None,
         "status": "Authentication Failed (Permission denied (publickey).)", "checked": 1.0}])
    conn.close()
    res = run("cas-crash", "--config", cfg, input=rec, env=casenv)
    assert res.record["error"]["message"].endswith(
        "servers: x86.example (x86_64), z.example:2222 (Authentication Failed (Permission "
        "denied (publickey).))")


def test_i686_core_without_crash_32_needs_a_server(job, casenv, config_file):
    if platform.machine() != "x86_64":
        pytest.skip("x86_64 host only")
    rec = dict(job, kernel={"release": "2.6.18-8.el5", "machine": "i686"})
    res = run("cas-crash", "--config", config_file(), input=rec, env=casenv)
    assert "no server for architecture i686 (this host is x86_64 and crash_32 is not set)" \
        in res.record["error"]["message"]


def test_bad_records_and_error_records(job, casenv, config_file):
    cfg = config_file()
    earlier = {"id": "8", "error": {"step": "cas-extract", "message": "x", "kind": "corrupt"}}
    no_vmlinux = {k: v for k, v in job.items() if k != "vmlinux"}
    relative = dict(job, core="vmcore")
    missing = dict(job, core=job["core"] + ".gone")
    res = run("cas-crash", "--config", cfg, input=[earlier, no_vmlinux, relative, missing],
              env=casenv)
    assert res.returncode == 1
    assert res.records[0] == earlier
    assert res.records[1]["error"] == {"step": "cas-crash", "message": "record has no vmlinux",
                                       "kind": "bad-record"}
    assert res.records[2]["error"]["message"] == "record key 'core': 'vmcore' is not an absolute path"
    assert res.records[3]["error"]["message"] == f"{missing['core']}: no such file (core)"
    assert "Traceback" not in res.stderr


def test_usage_errors(casenv, config_file):
    res = run("cas-crash", "--config", config_file(), "only-a-core", env=casenv)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == "cas-crash: give a core and its vmlinux (got one file)"
    res = run("cas-crash", "--bogus", env=casenv)
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr


def test_help_and_man_page_mention_every_option():
    import subprocess
    from conftest import command
    res = subprocess.run(command("cas-crash") + ["-h"], capture_output=True, text=True)
    assert res.returncode == 0
    man = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "man",
                       "cas-crash.1")
    with open(man) as fh:
        text = fh.read()
    assert text.startswith(".TH CAS-CRASH 1")
    for option in ("--config", "--workdir", "--machine", "--release", "-h"):
        assert option in res.stdout
        assert option.replace("-", r"\-") in text, option


def test_i686_core_runs_locally_with_crash_32(job, tmp_path, casenv, config_file):
    """crash_32 names the i386 crash (here a test script that hangs: only where it runs matters)."""
    if platform.machine() != "x86_64":
        pytest.skip("x86_64 host only")
    hang = tmp_path / "crash32"
    hang.write_text("#!/bin/sh\necho 'crash 7.3.0 (i386 test stand-in)'\nexec sleep 600\n")
    hang.chmod(0o755)
    cfg = config_file(crashTimeout="1", extra=f"[advanced]\ncrash_32 = {hang}\n")
    rec = dict(job, kernel={"release": "2.6.18-8.el5", "machine": "i686"})
    res = run("cas-crash", "--config", cfg, input=rec, env=casenv, timeout=60)
    assert res.returncode == 0, res
    c = res.record["crash"]
    assert c["timed_out"] is True
    with open(os.path.join(job["workdir"], "crash")) as fh:
        assert fh.read().splitlines()[-1].startswith(f"exec {hang} ")


def test_record_from_arguments(job, tmp_path, casenv, config_file):
    """cas-crash CORE VMLINUX [MODULE...] builds the first record itself."""
    hang = tmp_path / "hanging-crash"
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    hang.chmod(0o755)
    cfg = config_file(crashCommand=str(hang), crashTimeout="1")
    module = tmp_path / "mods" / "lib" / "modules" / "6.1.0-56-cloud-amd64" / "kernel" / "dummy.ko"
    res = run("cas-crash", "--config", cfg, "--workdir", job["workdir"], "--machine",
              platform.machine(), "--release", "6.1.0-56-cloud-amd64", job["core"],
              job["vmlinux"], module, env=casenv, timeout=60)
    assert res.returncode == 0, res
    rec = res.record
    assert (rec["core"], rec["vmlinux"], rec["workdir"]) == (job["core"], job["vmlinux"],
                                                              job["workdir"])
    assert rec["kernel"] == {"release": "6.1.0-56-cloud-amd64", "machine": platform.machine()}
    assert rec["modules"] == [str(module)]
    with open(os.path.join(job["workdir"], "crash.in")) as fh:
        assert fh.readline() == f"mod -S {tmp_path}/mods/lib/modules/6.1.0-56-cloud-amd64\n"
    assert rec["crash"]["timed_out"] is True
