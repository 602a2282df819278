"""The cas driver end to end on a real dump: unpack, ident, findkernel, extract, crash, mail."""

import email
import email.policy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import SmtpCollector, command, run


@pytest.fixture(scope="module")
def smtpd():
    with SmtpCollector() as server:
        yield server


def dump(manifest, variant):
    return next(d for d in manifest["dumps"] if d["variant"] == variant)


@pytest.fixture(scope="module")
def tarball(realdump, tmp_path_factory):
    """The real ELF dump as a customer sends it: vmcore.12345.tar.xz, made by tar."""
    top = tmp_path_factory.mktemp("customer")
    src = dump(realdump, "qemu-elf")["path"]
    os.symlink(src, top / "vmcore.12345")
    out = top / "vmcore.12345.tar.xz"
    subprocess.run(["tar", "-chJf", str(out), "-C", str(top), "vmcore.12345"], check=True,
                   env=dict(os.environ, XZ_OPT="-T0 -1"))
    return str(out)


@pytest.fixture(scope="module")
def site(realdump, tmp_path_factory, smtpd):
    """A config and an indexed shelf holding the real package (zstd payload) and decoys."""
    top = tmp_path_factory.mktemp("site")
    shelf = top / "kernels"
    shelf.mkdir()
    for rpm in realdump["rpms"]:
        if rpm["payload"] == "zstd" or rpm.get("decoy"):
            sub = shelf / rpm["payload"]
            sub.mkdir(exist_ok=True)
            os.symlink(rpm["path"], sub / os.path.basename(rpm["path"]))
    conf = top / "cas.conf"
    conf.write_text(
        "[settings]\n"
        f"kernels = {shelf}\nworkDirectory = {top / 'work'}\ndatabase = {top / 'cas.db'}\n"
        f"debugs = {top / 'debugs'}\nsmtphost = {smtpd.hostport}\nmailFrom = cas@example.org\n")
    res = run("cas-admin", "--config", conf)
    assert res.returncode == 0, res
    return {"conf": str(conf), "top": top, "db": str(top / "cas.db")}


def job_rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT job, identifier, workdir, state, release, email, error "
                            "FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()


def test_whole_pipeline_on_a_customer_tarball(realdump, tarball, site, smtpd):
    before = len(smtpd.messages)
    res = run("cas", "--config", site["conf"], "-i", "12345", "-f", tarball,
              "-e", "user@localhost", "--job", "1", "--json")
    assert res.returncode == 0, res
    rec = res.record
    assert "error" not in rec
    workdir = rec["workdir"]
    assert workdir.startswith(str(site["top"] / "work" / "1") + os.sep)
    assert rec["kernel"]["release"] == realdump["kernel"]["release"]
    for name in ("1.log", "vmcore.12345", "crash", "crash.in", "crash.out", "traceback", "sys",
                 "log", "modules", "memory", "mail.eml", "report.html", "record.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "record.json")) as fh:
        assert json.load(fh) == rec  # the final record, kept for cas-web
    assert os.access(os.path.join(workdir, "crash"), os.X_OK)
    assert rec["vmlinux"].startswith(os.path.join(workdir, "usr") + os.sep)
    with open(os.path.join(workdir, "traceback")) as fh:
        assert "sysrq_handle_crash" in fh.read()
    assert rec["crash"]["panic"]["message"] == "sysrq triggered crash"
    assert rec["mail"]["sent"] is True
    msg = email.message_from_bytes(smtpd.messages[before].content, policy=email.policy.default)
    assert msg["Subject"] == "CAS results for 1"
    assert msg["To"] == "user@localhost"
    assert "sysrq triggered crash" in msg.get_body(("plain",)).get_content()
    assert "sysrq triggered crash" in msg.get_body(("html",)).get_content()
    rows = [r for r in job_rows(site["db"]) if r[2] == workdir]
    assert rows and rows[0][3] == "done" and rows[0][0] == "1" and rows[0][1] == "12345"
    assert rows[0][4] == realdump["kernel"]["release"] and rows[0][5] == "user@localhost"


def test_modules_are_extracted_and_loaded(realdump, site):
    core = dump(realdump, "qemu-elf")["path"]
    res = run("cas", "--config", site["conf"], "-i", "mods", "-f", core, "-m", "--json")
    assert res.returncode == 0, res
    rec = res.record
    assert rec["modules"], rec
    assert all(m.startswith(rec["workdir"] + os.sep) for m in rec["modules"])
    with open(os.path.join(rec["workdir"], "crash.in")) as fh:
        assert "mod -S" in fh.read()


def test_strip_shrinks_a_kdump_readable_core_and_crash_still_reads_it(realdump, site):
    variants = {d["variant"]: d for d in realdump["dumps"]}
    src = (variants.get("qemu-elf-fixed") or variants["qemu-elf"])["path"]
    res = run("cas", "--config", site["conf"], "-i", "strip", "-f", src, "--strip", "--json")
    assert res.returncode == 0, res
    rec = res.record
    strip = rec["strip"]
    if "qemu-elf-fixed" not in variants:
        # makedumpfile cannot read QEMU 7.2's ELF layout: the job goes on with the original
        assert strip["replaced"] is False and "makedumpfile" in strip["reason"]
    else:
        assert strip["replaced"] is True and strip["saved_bytes"] > 0
        assert os.path.getsize(rec["core"]) == strip["stripped_bytes"] < strip["original_bytes"]
    assert rec["crash"]["panic"]["message"] == "sysrq triggered crash"


def test_a_replaced_step_from_the_config_is_used(realdump, site, tmp_path):
    conf = tmp_path / "replaced.conf"
    with open(site["conf"]) as fh:
        text = fh.read()
    conf.write_text(text + "[pipeline]\nmail = cat\ncrash = cat\n")
    core = dump(realdump, "makedumpfile-zlib")["path"]
    res = run("cas", "--config", conf, "-i", "repl", "-f", core, "--json")
    assert res.returncode == 0, res
    assert "crash" not in res.record and "mail" not in res.record
    assert res.record["vmlinux"]


def test_a_failing_step_is_named(site, tmp_path):
    junk = tmp_path / "vmcore.junk"
    junk.write_bytes(b"\xff\xd8\xff\xe0 this is no dump" * 100)
    res = run("cas", "--config", site["conf"], "-i", "junk", "-f", junk)
    assert res.returncode == 1
    assert "cas-ident" in res.stdout and "Error:" in res.stdout
    assert "Traceback" not in res.stderr
    rows = [r for r in job_rows(site["db"]) if r[1] == "junk"]
    assert rows and rows[-1][3] == "failed" and "cas-ident" in rows[-1][6]


@pytest.mark.parametrize("bad", ["../../etc", "-rf", "", "a" * 65, "a/b"])
def test_bad_identifier_touches_nothing(bad, site, tmp_path):
    work = site["top"] / "work"
    before = set(os.listdir(work)) if work.exists() else set()
    res = run("cas", "--config", site["conf"], "-i", bad, "-f", tmp_path / "x")
    assert res.returncode == 2, res
    assert "identifier" in res.stderr and "Traceback" not in res.stderr
    after = set(os.listdir(work)) if work.exists() else set()
    assert after == before


def test_four_runs_at_once_against_one_database(realdump, site):
    variants = ["qemu-elf", "makedumpfile-zlib", "qemu-kdump-flattened", "makedumpfile-flattened"]
    have = {d["variant"] for d in realdump["dumps"]}
    procs = []
    for n, variant in enumerate(v for v in variants if v in have):
        argv = command("cas") + ["--config", site["conf"], "-i", f"par{n}", "-f",
                                 dump(realdump, variant)["path"], "--json"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err
    states = {r[1]: r[3] for r in job_rows(site["db"]) if r[1].startswith("par")}
    assert states and set(states.values()) == {"done"}


def test_interrupted_run_is_failed_and_leaves_no_child(realdump, site):
    core = dump(realdump, "qemu-elf")["path"]
    argv = command("cas") + ["--config", site["conf"], "-i", "intr", "-f", core]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # the steps share cas's session; crash runs in a process group of its own, found by
    # the job directory on its command line
    jobs_dir = str(site["top"] / "work" / "intr") + os.sep

    def crash_pids():
        return subprocess.run(["pgrep", "-f", jobs_dir], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not crash_pids():  # wait for the longest step
        assert proc.poll() is None, "cas ended before crash started"
        time.sleep(0.2)
    assert crash_pids(), "crash never started"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    assert left.strip() == "", f"steps left behind: {left}"
    assert crash_pids() == [], "crash left behind"
    rows = [r for r in job_rows(site["db"]) if r[1] == "intr"]
    assert rows and rows[-1][3] == "failed"


def test_compress_alone_makes_an_xz_file(tmp_path, casenv):
    src = tmp_path / "vmcore"
    src.write_bytes(os.urandom(1 << 16) + bytes(1 << 20))
    res = subprocess.run(command("cas") + ["-f", str(src), "--compress"], capture_output=True,
                         text=True, env=casenv)
    assert res.returncode == 0, res.stderr
    out = subprocess.run(["xz", "-dc", str(src) + ".xz"], capture_output=True, check=True).stdout
    assert out == src.read_bytes()
    assert sys.executable
