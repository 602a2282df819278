"""The job service on the real dump: twenty jobs and two workers, SIGKILL and SIGTERM of a
worker, cancelling a queued and a running job, the failure mail of a job whose dump was cut
short, received by a real SMTP server (aiosmtpd), and a rerun with --release."""

import email
import email.policy
import glob
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import command, real_dump, real_shelf, run, SmtpCollector

pytestmark = pytest.mark.realdump


@pytest.fixture(scope="module")
def smtpd():
    with SmtpCollector() as server:
        yield server


@pytest.fixture(scope="module")
def site(realdump, tmp_path_factory, smtpd):
    """A config with an indexed shelf holding the real debuginfo package (zstd payload)."""
    top = tmp_path_factory.mktemp("qsite")
    shelf = real_shelf(realdump, top)
    conf = top / "cas.conf"
    conf.write_text(
        "[settings]\n"
        f"kernels = {shelf}\nworkDirectory = {top / 'work'}\ndatabase = {top / 'cas.db'}\n"
        f"debugs = {top / 'debugs'}\nsmtphost = {smtpd.hostport}\nmailFrom = cas@example.org\n")
    res = run("cas-admin", "--config", conf, "-q")
    assert res.returncode == 0 and res.stderr == "" and res.stdout == "", res
    return {"conf": str(conf), "top": top, "db": str(top / "cas.db")}


def queue(conf, ident, path, *extra) -> int:
    res = run("cas", "--config", conf, "--queue", "-i", ident, "-f", path, *extra)
    assert res.returncode == 0, res
    return int(res.stdout)


def job(conf, job_id) -> dict:
    res = run("cas-jobs", "--config", conf, "--json", job_id)
    assert res.returncode == 0, res
    return res.record


def wait_for(predicate, what: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def worker(conf, *args):
    return subprocess.Popen(command("cas-worker") + ["--config", conf, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def processes_of(workdir: str) -> list:
    """Processes whose command line names the job directory (crash and the steps)."""
    out = subprocess.run(["pgrep", "-f", workdir + os.sep], capture_output=True, text=True).stdout
    return out.split()


def crash_running(conf, job_id):
    j = job(conf, job_id)
    return j if j["state"] == "running" and j["workdir"] and os.path.exists(
        os.path.join(j["workdir"], "crash.in")) else None


def test_twenty_jobs_two_workers(realdump, site, tmp_path):
    conf = site["conf"]
    variants = [v for v in ("qemu-elf", "makedumpfile-zlib", "qemu-kdump-flattened")
                if any(d["variant"] == v for d in realdump["dumps"])]
    real = {queue(conf, f"real{n}", real_dump(realdump, v)): v for n, v in enumerate(variants)}
    synthetic = {}
    for n in range(20 - len(real)):
        path = tmp_path / f"vmcore.syn{n}"
        path.write_bytes(os.urandom(4096 * (n + 1)))  # no dump header, no kernel banner
        synthetic[queue(conf, f"syn{n}", str(path))] = str(path)
    workers = [worker(conf, "--jobs", "2", "--once", "--machine", name) for name in ("wA", "wB")]
    for w in workers:
        out, err = w.communicate(timeout=2400)
        assert w.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    listed = {j["job_id"]: j for j in run("cas-jobs", "--config", conf, "--json").records}
    assert sorted(listed) == sorted(list(real) + list(synthetic))
    for job_id in real:
        j = listed[job_id]
        assert j["state"] == "done", j
        assert j["kernel"] == realdump["kernel"]["release"]
        assert j["panic"] == "sysrq triggered crash"
    for job_id in synthetic:
        j = listed[job_id]
        assert j["state"] == "failed" and j["error"]["step"] == "cas-ident", j
        assert j["error"]["kind"] == "not-a-dump"
    # none ran twice: one job directory each, one unpack in each log, never requeued
    for j in listed.values():
        assert j["requeues"] == 0 and j["worker"]["host"] in ("wA", "wB")
        assert glob.glob(os.path.join(site["top"], "work", j["job"], "*")) == [j["workdir"]]
        with open(os.path.join(j["workdir"], f"{j['job']}.log")) as fh:
            assert fh.read().count("cas-unpack INFO: unpacking") == 1
    # at most two at a time on each worker
    for host in ("wA", "wB"):
        spans = [(j["started"], j["finished"]) for j in listed.values() if j["worker"]["host"] == host]
        assert spans
        for start, _ in spans:
            assert sum(1 for s, f in spans if s <= start < f) <= 2
    # the table agrees with the database
    conn = sqlite3.connect(site["db"])
    counts = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    conn.close()
    assert counts == {"done": len(real), "failed": len(synthetic)}


def test_sigkill_of_a_worker_requeues_once_then_fails(realdump, site):
    conf = site["conf"]
    job_id = queue(conf, "kill1", real_dump(realdump, "qemu-elf"))
    for attempt in (1, 2):
        w = worker(conf, "--jobs", "1")
        running = wait_for(lambda: crash_running(conf, job_id), "the job to reach crash")
        runner = running["worker"]["runner"]
        os.kill(w.pid, signal.SIGKILL)
        w.communicate(timeout=60)
        # the runner notices its worker is gone and stops its pipeline
        wait_for(lambda: not os.path.exists(f"/proc/{runner}"), "the runner to stop", 120)
        wait_for(lambda: not processes_of(running["workdir"]), "the steps to stop", 60)
        after = job(conf, job_id)  # cas-jobs finds the lost job
        if attempt == 1:
            assert after["state"] == "queued" and after["requeues"] == 1, after
            assert after["workdir"] is None
        else:
            assert after["state"] == "failed", after
            assert after["error"]["kind"] == "worker-lost" and "is gone" in after["error"]["message"]


def test_sigterm_puts_the_running_job_back(realdump, site):
    conf = site["conf"]
    job_id = queue(conf, "term1", real_dump(realdump, "qemu-elf"))
    w = worker(conf, "--jobs", "1")
    running = wait_for(lambda: crash_running(conf, job_id), "the job to reach crash")
    w.send_signal(signal.SIGTERM)
    out, err = w.communicate(timeout=120)
    assert w.returncode == 143, err
    assert not processes_of(running["workdir"])
    after = job(conf, job_id)
    assert after["state"] == "queued" and after["requeues"] == 0 and after["started"] is None
    assert run("cas-jobs", "--config", conf, "--cancel", job_id).returncode == 0


def test_cancel_a_queued_and_a_running_job(realdump, site):
    conf = site["conf"]
    first = queue(conf, "can1", real_dump(realdump, "qemu-elf"))
    second = queue(conf, "can2", real_dump(realdump, "qemu-elf"))
    w = worker(conf, "--jobs", "1", "--once")
    running = wait_for(lambda: crash_running(conf, first), "the first job to reach crash")
    res = run("cas-jobs", "--config", conf, "--json", "--cancel", second)
    assert res.returncode == 0 and res.record["state"] == "cancelled", res
    assert res.record["was"] == "queued" and res.record["started"] is None
    res = run("cas-jobs", "--config", conf, "--json", "--cancel", first)
    assert res.returncode == 0, res
    assert res.record["state"] == "cancelled" and res.record["was"] == "running"
    assert not processes_of(running["workdir"])
    out, err = w.communicate(timeout=120)  # nothing left to run: --once ends
    assert w.returncode == 0, err
    assert job(conf, second)["workdir"] is None  # never ran


def test_failure_mail_for_a_corrupt_dump(realdump, tmp_path, site, smtpd):
    """A real dump cut short (an interrupted upload): cas-ident fails, the requester is told."""
    conf = site["conf"]
    cut = tmp_path / "vmcore.cut"
    with open(real_dump(realdump, "qemu-elf"), "rb") as src, open(cut, "wb") as out:
        out.write(src.read(3 << 20))
    before = len(smtpd.messages)
    job_id = queue(conf, "cutdump", str(cut), "-e", "req@example.com")
    res = run("cas-worker", "--config", conf, "--once")
    assert res.returncode == 0, res
    j = job(conf, job_id)
    assert j["state"] == "failed" and j["error"]["step"] == "cas-ident", j
    assert j["error"]["kind"] == "truncated"
    new = smtpd.messages[before:]
    assert len(new) == 1 and new[0].rcpt_tos == ["req@example.com"]
    msg = email.message_from_bytes(new[0].content, policy=email.policy.default)
    assert msg["Subject"] == f"CAS job {job_id} failed: cutdump (cas-ident)"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    body = msg.get_content()
    assert body.index("Failed step: cas-ident") < body.index("What was kept:") < \
        body.index("Next thing to try:")
    assert "Reason:      " + j["error"]["message"] in body
    assert j["workdir"] in body and os.path.join(j["workdir"], "cutdump.log") in body
    assert "the dump is cut short" in body
    assert os.path.exists(os.path.join(j["workdir"], "failure.eml"))


def test_rerun_with_release(realdump, site):
    """A job forced to a release the shelf lacks ends with the log-only analysis; its rerun
    with the right release is linked to it and gets crash's analysis."""
    conf = site["conf"]
    release = realdump["kernel"]["release"]
    first = queue(conf, "rerun1", real_dump(realdump, "makedumpfile-zlib"), "--release", "0.0.0-1-bogus")
    assert run("cas-worker", "--config", conf, "--once").returncode == 0
    old = job(conf, first)
    assert old["state"] == "done" and old["error"]["step"] == "cas-findkernel", old
    res = run("cas-jobs", "--config", conf, "--json", "--rerun", first, "--release", release)
    assert res.returncode == 0, res
    new = res.record
    assert new["rerun_of"] == first and new["attempt"] == 2 and new["state"] == "queued"
    assert new["options"]["release"] == release and new["identifier"] == "rerun1"
    assert run("cas-worker", "--config", conf, "--once").returncode == 0
    done = job(conf, new["job_id"])
    assert done["state"] == "done" and done["error"] is None, done
    assert done["kernel"] == release and done["panic"] == "sysrq triggered crash"
