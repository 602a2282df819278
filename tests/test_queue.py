"""The job service through its executables: cas --queue, cas-worker, cas-jobs (small inputs).

The real-dump runs (twenty jobs, two workers, SIGKILL, cancel, failure mail)
are in test_queue_realdump.py.
"""

import json
import os
import pty
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from conftest import command, run


@pytest.fixture
def conf(config_file):
    return config_file()


def junk(tmp_path, name="vmcore.junk", size=65536):
    path = tmp_path / name
    path.write_bytes(b"\x7fNOTELF" + os.urandom(size))
    return str(path)


def jobs_json(conf, *args):
    res = run("cas-jobs", "--config", conf, "--json", *args)
    assert res.returncode == 0, res
    return res.records


@pytest.mark.parametrize("argv, what", [
    (["-i", "ok", "-f", "/nonexistent/vmcore"], "no such file"),
    (["-i", "../x", "-f", "{junk}"], "identifier"),
    (["-i", "ok", "-f", "{junk}", "-e", "not an address"], "email"),
    (["-i", "ok", "-f", "{junk}", "--job", "a/b"], "job name"),
    (["-i", "ok", "-f", "{junk}", "--vmlinux", "/nonexistent/vmlinux"], "--vmlinux"),
    (["-i", "ok", "-f", "{junk}", "--release", "r", "--package", "{junk}"], "give one of"),
    (["-i", "ok", "-f", "{tmp}"], "directory"),
])
def test_a_typo_fails_at_once_and_queues_nothing(argv, what, conf, tmp_path):
    path = junk(tmp_path)
    argv = [a.format(junk=path, tmp=tmp_path) for a in argv]
    res = run("cas", "--config", conf, "--queue", *argv)
    assert res.returncode == 2, res
    assert what in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    db = tmp_path / "cas.db"
    if db.exists():
        assert jobs_json(conf) == []


def test_queue_prints_the_id_or_the_record_and_runs_nothing(conf, tmp_path):
    path = junk(tmp_path)
    res = run("cas", "--config", conf, "--queue", "-i", "t1", "-f", path)
    assert res.returncode == 0, res
    first = int(res.stdout.strip())
    res = run("cas", "--config", conf, "--queue", "-i", "t2", "-f", path, "--json", "-m",
              "--strip", "--job", "J2", "-e", "a@example.com", "--release", "6.1.0-18-amd64")
    assert res.returncode == 0, res
    job = res.record
    assert job["job_id"] == first + 1 and job["state"] == "queued" and job["workdir"] is None
    assert job["options"] == {"identifier": "t2", "file": path, "email": "a@example.com",
                              "modules": True, "strip": True, "job": "J2",
                              "release": "6.1.0-18-amd64", "vmlinux": None, "package": None}
    assert not (tmp_path / "work").exists()  # nothing ran
    listed = jobs_json(conf, "--state", "queued")
    assert [j["job_id"] for j in listed] == [first, first + 1]
    assert [j["job_id"] for j in jobs_json(conf, "-i", "t2")] == [first + 1]
    assert jobs_json(conf, "--since", "2999-01-01") == []


def test_worker_once_runs_oldest_first_and_expected_failures_are_recorded(config_file, tmp_path):
    conf = config_file(maxJobs=1)  # the default for --jobs
    ids = []
    for n in range(4):
        res = run("cas", "--config", conf, "--queue", "-i", f"w{n}", "-f", junk(tmp_path, f"c{n}"))
        ids.append(int(res.stdout))
    res = run("cas-worker", "--config", conf, "--once", "--machine", "m1")
    assert res.returncode == 0, res
    jobs = {j["job_id"]: j for j in jobs_json(conf)}
    assert sorted(jobs) == ids
    started = [jobs[i]["started"] for i in ids]
    assert started == sorted(started)  # oldest first
    for a, b in zip(ids, ids[1:]):  # one at a time
        assert jobs[a]["finished"] <= jobs[b]["started"]
    for i in ids:
        j = jobs[i]
        assert j["state"] == "failed" and j["error"]["step"] == "cas-ident", j
        assert j["worker"]["host"] == "m1" and j["finished"] >= j["started"]
        assert os.path.isdir(j["workdir"]) and os.path.exists(os.path.join(j["workdir"], "failure.eml"))
    full = run("cas-jobs", "--config", conf, "--json", ids[0]).record
    assert full["paths"]["log"].endswith(".log") and full["log_tail"]
    assert "Traceback" not in res.stderr


def test_the_table_on_a_terminal(conf, tmp_path):
    run("cas", "--config", conf, "--queue", "-i", "tty1", "-f", junk(tmp_path))
    main, sub = pty.openpty()
    proc = subprocess.run(command("cas-jobs") + ["--config", conf], stdout=sub,
                          stderr=subprocess.PIPE, timeout=60)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.returncode == 0, proc.stderr
    lines = out.decode().splitlines()
    assert lines[0].startswith("1 job(s): 1 queued")
    assert lines[1].split() == ["JOB", "IDENTIFIER", "STATE", "KERNEL", "PANIC", "STARTED", "TOOK",
                                "WHERE"]
    assert lines[2].split()[:3] == ["1", "tty1", "queued"]


def test_cancel_a_queued_job_and_rerun_it_with_a_release(conf, tmp_path):
    job = int(run("cas", "--config", conf, "--queue", "-i", "c1", "-f", junk(tmp_path)).stdout)
    res = run("cas-jobs", "--config", conf, "--cancel", job, "--json")
    assert res.returncode == 0, res
    assert res.record["state"] == "cancelled" and res.record["was"] == "queued"
    assert run("cas-jobs", "--config", conf, "--cancel", job).returncode == 1  # already ended
    res = run("cas-jobs", "--config", conf, "--rerun", job, "--release", "6.1.0-99-amd64", "--json")
    assert res.returncode == 0, res
    new = res.record
    assert new["rerun_of"] == job and new["attempt"] == 2 and new["state"] == "queued"
    assert new["identifier"] == "c1" and new["options"]["release"] == "6.1.0-99-amd64"
    # the worker hands the stored options to cas's own argument parser
    text = run("cas-jobs", "--config", conf, new["job_id"])
    assert "--release 6.1.0-99-amd64" in text.stdout or "6.1.0-99-amd64" in text.stdout
    assert run("cas-jobs", "--config", conf, "--rerun", new["job_id"]).returncode == 2  # queued
    assert run("cas-jobs", "--config", conf, "--release", "x").returncode == 2
    assert run("cas-jobs", "--config", conf, "--cancel", 999).returncode == 1


def test_claims_never_overlap(conf, tmp_path):
    """Eight processes claim from one database at once: every job is taken exactly once."""
    path = junk(tmp_path)
    for n in range(24):
        run("cas", "--config", conf, "--queue", "-i", f"x{n}", "-f", path)
    script = ("import sys, json; sys.path.insert(0, sys.argv[1]); from caslib import config;"
              "from caslib.queue import open_queue; q = open_queue(config.load(sys.argv[2]));"
              "got = []\nwhile True:\n j = q.claim(0)\n if not j: break\n got.append(j['job_id'])\n"
              "print(json.dumps(got))")
    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib")
    procs = [subprocess.Popen([command("cas")[0], "-c", script, lib, conf], stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    taken = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        taken += json.loads(out)
    assert sorted(taken) == list(range(1, 25))


def test_a_version_2_database_is_migrated_with_its_jobs(conf, tmp_path):
    db = tmp_path / "cas.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE jobs(id INTEGER PRIMARY KEY, job TEXT NOT NULL, identifier TEXT,
            workdir TEXT UNIQUE NOT NULL, source TEXT,
            state TEXT NOT NULL CHECK(state IN ('running','done','failed')),
            started REAL NOT NULL, finished REAL, release TEXT, error TEXT, email TEXT, pid INTEGER);
        INSERT INTO jobs VALUES (1, 'old', 'old', '/w/old/1', '/x', 'failed', 1.0, 2.0, NULL,
                                 'cas-ident: not a dump', NULL, 42);
        PRAGMA user_version = 2;
    """)
    conn.close()
    # only the jobs table of version 2 is there: version 3 rebuilds just that table
    old = jobs_json(conf)[0]
    assert old["state"] == "failed" and old["error"] == {"step": "cas-ident", "kind": None,
                                                         "message": "not a dump"}
    assert old["submitted"] == 1.0 and old["attempt"] == 1


def test_usage_errors_exit_2(conf):
    for argv in (["--jobs", "0"], ["--machine", " "], ["--bogus"]):
        res = run("cas-worker", "--config", conf, *argv)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res
    for argv in (["--since", "yesterday"], ["--state", "lost"], ["1", "--cancel", "2"]):
        res = run("cas-jobs", "--config", conf, *argv)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res


def test_a_read_only_user_can_list_but_not_change(config_file, tmp_path, request):
    """As another user (nobody): cas-jobs lists from a read-only connection; --cancel is refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    top = tempfile.mkdtemp(prefix="cas-ro-", dir="/tmp")  # pytest's tmp_path is root's only
    request.addfinalizer(lambda: shutil.rmtree(top))
    os.chmod(top, 0o755)
    conf = config_file(database=os.path.join(top, "cas.db"), casuser="root")
    shutil.copy(conf, top)
    conf = os.path.join(top, "cas.conf")
    os.chmod(conf, 0o644)
    path = junk(tmp_path)
    job = int(run("cas", "--config", conf, "--queue", "-i", "ro", "-f", path).stdout)
    os.chmod(os.path.join(top, "cas.db"), 0o644)

    def as_nobody(*args):
        return subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                               *command("cas-jobs"), "--config", conf, *args],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, HOME="/nonexistent"))

    res = as_nobody("--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["job_id"] for line in res.stdout.splitlines()] == [job]
    res = as_nobody("--cancel", str(job))
    assert res.returncode == 2 and "casuser" in res.stderr, res.stderr
    assert jobs_json(conf)[0]["state"] == "queued"


def test_a_foreground_run_is_in_the_same_table(conf, tmp_path):
    res = run("cas", "--config", conf, "-i", "fg", "-f", junk(tmp_path), "-e", "a@example.com")
    assert res.returncode == 1, res
    (j,) = jobs_json(conf, "-i", "fg")
    assert j["state"] == "failed" and j["options"] is None and j["error"]["step"] == "cas-ident"
    assert j["worker"]["host"] and j["finished"] >= j["started"]
    assert os.path.exists(os.path.join(j["workdir"], "failure.eml"))  # no smtphost: saved
    assert run("cas-jobs", "--config", conf, "--rerun", j["job_id"]).returncode == 0
    (again,) = [x for x in jobs_json(conf, "-i", "fg") if x["rerun_of"] == j["job_id"]]
    assert again["state"] == "queued" and again["options"]["email"] == "a@example.com"
