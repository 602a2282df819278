"""The Slurm queue backend against a real one-node Slurm cluster (slurm_fixture.py): the real
dump end to end (its log in slurm-N.out, the mail received by a real SMTP server), a dump of
an architecture with no partition refused before sbatch, scancel of a running job, and a job
killed by its time limit reported failed with Slurm's reason (and the failure mail).

The parsers of Slurm's output are tested on output captured from that cluster."""

import email
import email.policy
import glob
import os
import subprocess
import time

import pytest

from conftest import real_dump, real_shelf, run, SmtpCollector
from slurm_fixture import slurm_cluster  # noqa: F401 (a fixture)
from caslib import config
from caslib.queue import slurmcmd
from caslib.queue.slurmqueue import pick_partition
from caslib.records import StepError, UsageError

# scontrol -o show job of this test cluster (Slurm 22.05.8), one running batch job
SCONTROL = (
    "JobId=1 JobName=cas-real1 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 "
    "Nice=0 Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:04 "
    "TimeLimit=00:01:00 TimeMin=N/A SubmitTime=2026-12-03T23:29:36 StartTime=2026-12-03T23:29:38 "
    "EndTime=2026-12-03T23:30:42 Partition=x86_64 AllocNode:Sid=localhost:1954 "
    "ReqNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 Command=(null) "
    "WorkDir=/srv/cas/work/real1/2026 12 03 StdErr=/tmp/o-1.out StdIn=/dev/null "
    "StdOut=/tmp/o-1.out Power= \n"
    "JobId=2 JobName=wrap JobState=PENDING Reason=Resources NodeList=(null) BatchHost=\n")


def test_parse_scontrol():
    jobs = slurmcmd.parse_scontrol(SCONTROL)
    assert sorted(jobs) == [1, 2]
    assert jobs[1]["JobState"] == "TIMEOUT" and jobs[1]["Reason"] == "TimeLimit"
    assert jobs[1]["NodeList"] == "vm" and jobs[1]["AllocNode:Sid"] == "localhost:1954"
    assert jobs[1]["WorkDir"] == "/srv/cas/work/real1/2026 12 03"  # a value with spaces
    assert jobs[2]["JobState"] == "PENDING" and jobs[2]["BatchHost"] == ""


def test_parse_sbatch_and_sacct():
    assert slurmcmd.parse_sbatch("42\n") == 42
    assert slurmcmd.parse_sbatch("42;castest\n") == 42
    with pytest.raises(StepError):
        slurmcmd.parse_sbatch("sbatch: error: Batch job submission failed\n")
    acct = slurmcmd.parse_sacct("7|NODE_FAIL|vm|2026-12-03T23:29:38\n8|CANCELLED by 0|vm|x\n")
    assert acct[7]["JobState"] == "NODE_FAIL" and acct[8]["JobState"] == "CANCELLED"


@pytest.mark.parametrize("state, cas", [
    ("PENDING", "queued"), ("RUNNING", "running"), ("COMPLETING", "running"),
    ("COMPLETED", "done"), ("CANCELLED", "cancelled"), ("CANCELLED by 0", "cancelled"),
    ("TIMEOUT", "failed"), ("NODE_FAIL", "failed"), ("PREEMPTED", "failed"),
    ("FAILED", "failed"), ("BOGUS", None), (None, None)])
def test_state_mapping(state, cas):
    assert slurmcmd.cas_state(state) == cas


def test_pick_partition():
    assert pick_partition("x86_64", {}, ["x86_64", "arm"]) == "x86_64"
    assert pick_partition("aarch64", {"aarch64": "arm"}, ["x86_64", "arm"]) == "arm"
    with pytest.raises(StepError, match="no Slurm partition for dumps of aarch64"):
        pick_partition("aarch64", {}, ["x86_64"])
    with pytest.raises(StepError, match="partitionMap maps ppc64le to power"):
        pick_partition("ppc64le", {"ppc64le": "power"}, ["x86_64"])


def test_queue_config(tmp_path):
    conf = tmp_path / "cas.conf"
    conf.write_text("[queue]\nbackend = slurm\npartitionMap = x86_64 = amd, aarch64 = arm\n"
                    "slurmArgs = --time=30 --qos 'long jobs'\n")
    cfg = config.load(str(conf))
    assert cfg.backend == "slurm" and cfg.partitionMap == {"x86_64": "amd", "aarch64": "arm"}
    assert cfg.slurmArgs == ["--time=30", "--qos", "long jobs"]
    assert config.defaults().backend == "local"
    conf.write_text("[queue]\npartitionMap = x86_64\n")
    with pytest.raises(UsageError, match="partitionMap"):
        config.load(str(conf))
    conf.write_text("[queue]\nbackend = pbs\n")
    with pytest.raises(UsageError, match="local or slurm"):
        config.load(str(conf))


# --- against the real cluster ------------------------------------------------------------

@pytest.fixture(scope="module")
def smtpd():
    with SmtpCollector() as server:
        yield server


@pytest.fixture(scope="module")
def site(realdump, slurm_cluster, tmp_path_factory, smtpd):
    """Two configs on one shelf, database and work directory: the real crash, and a crash
    that sleeps (scancel, time limit) with ``slurmArgs = --time=1``."""
    top = tmp_path_factory.mktemp("slurmsite")
    shelf = real_shelf(realdump, top)
    sleeper = top / "sleepy-crash"
    sleeper.write_text("#!/usr/bin/python3\nimport time\ntime.sleep(900)\n")
    sleeper.chmod(0o755)
    common = (f"[settings]\nkernels = {shelf}\nworkDirectory = {top / 'work'}\n"
              f"database = {top / 'cas.db'}\ndebugs = {top / 'debugs'}\n"
              f"smtphost = {smtpd.hostport}\nmailFrom = cas@example.org\n")
    real, sleepy = top / "cas.conf", top / "sleepy.conf"
    real.write_text(common + "[queue]\nbackend = slurm\n")
    sleepy.write_text(common + f"crashCommand = {sleeper}\n"
                      "[queue]\nbackend = slurm\nslurmArgs = --time=1\n")
    res = run("cas-admin", "--config", real, "-q")
    assert res.returncode == 0 and res.stderr == "", res
    return {"real": str(real), "sleepy": str(sleepy), "top": top, "cluster": slurm_cluster}


def queue(conf, ident, path, *extra) -> dict:
    res = run("cas", "--config", conf, "--queue", "--json", "-i", ident, "-f", path, *extra)
    assert res.returncode == 0, res
    return res.record


def job(conf, job_id) -> dict:
    res = run("cas-jobs", "--config", conf, "--json", job_id)
    assert res.returncode == 0, res
    return res.record


def wait_for(predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def slurm_job(job_id: int) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True,
                         text=True, timeout=30).stdout
    return slurmcmd.parse_scontrol(out).get(job_id) or {}


def processes_of(workdir: str) -> list:
    out = subprocess.run(["pgrep", "-f", workdir + os.sep], capture_output=True, text=True,
                         timeout=30).stdout
    return out.split()


def messages_to(smtpd, rcpt: str) -> list:
    return [email.message_from_bytes(m.content, policy=email.policy.default)
            for m in smtpd.messages if m.rcpt_tos == [rcpt]]


@pytest.mark.realdump
def test_real_dump_through_slurm(realdump, site, smtpd):
    conf = site["real"]
    queued = queue(conf, "slurm1", real_dump(realdump, "qemu-elf"), "-e", "slurm1@example.com")
    slurm = queued["slurm"]
    assert queued["state"] == "queued" and slurm["partition"] == site["cluster"].partition
    assert isinstance(slurm["job_id"], int) and queued["workdir"]
    sj = slurm_job(slurm["job_id"])
    assert sj["JobName"] == "cas-slurm1" and sj["WorkDir"] == queued["workdir"]
    assert sj["StdOut"] == os.path.join(queued["workdir"], f"slurm-{slurm['job_id']}.out")
    done = wait_for(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        job(conf, queued["job_id"])), "the Slurm job to end", 1200)
    assert done["state"] == "done" and done["error"] is None, done
    assert done["kernel"] == realdump["kernel"]["release"]
    assert done["panic"] == "sysrq triggered crash"
    assert done["slurm"]["state"] == "COMPLETED" and done["slurm"]["node"] == site["cluster"].node
    with open(os.path.join(done["workdir"], f"slurm-{slurm['job_id']}.out")) as fh:
        out = fh.read()
    for step in ("cas-extract", "cas-crash", "cas-triage", "cas-mail"):
        assert f"{step} done" in out, out[-3000:]
    for step in ("cas-unpack", "cas-ident", "cas-dmesg", "cas-findkernel"):
        assert f"{step} done" not in out  # the head ran on the submit host
    with open(os.path.join(done["workdir"], "head.json")) as fh:
        assert '"debuginfo"' in fh.read()  # cas-findkernel's record, from the index here
    msgs = wait_for(lambda: messages_to(smtpd, "slurm1@example.com"), "the mail", 60)
    assert len(msgs) == 1 and msgs[0]["Subject"] == "CAS results for slurm1"
    assert "sysrq triggered crash" in msgs[0].get_body(("plain",)).get_content()


@pytest.mark.realdump
def test_no_partition_for_the_architecture(site, tmp_path):
    from test_ident_arch import CASES, build_core

    case = next(c for c in CASES if c[0].startswith("aarch64"))
    core = tmp_path / "vmcore.arm"
    build_core(str(core), case)
    before = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                            text=True, timeout=30).stdout.split()
    res = run("cas", "--config", site["real"], "--queue", "-i", "arm1", "-f", core)
    assert res.returncode == 1 and res.stdout == "", res
    assert "no Slurm partition for dumps of aarch64" in res.stderr, res
    assert f"the cluster has: {site['cluster'].partition}" in res.stderr
    assert "not submitted" in res.stderr and "Traceback" not in res.stderr
    after = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                           text=True, timeout=30).stdout.split()
    assert after == before  # nothing reached Slurm
    listed = run("cas-jobs", "--config", site["real"], "--json", "-i", "arm1").records
    assert len(listed) == 1 and listed[0]["state"] == "failed"
    assert listed[0]["error"]["kind"] == "no-partition" and listed[0]["slurm"] is None


def crash_started(conf, job_id):
    j = job(conf, job_id)
    return j if j["state"] == "running" and os.path.exists(
        os.path.join(j["workdir"], "crash.in")) and processes_of(j["workdir"]) else None


@pytest.mark.realdump
def test_scancel_of_a_running_job(realdump, site):
    conf = site["sleepy"]
    queued = queue(conf, "slurmcancel", real_dump(realdump, "qemu-elf"))
    running = wait_for(lambda: crash_started(conf, queued["job_id"]), "crash to start", 600)
    assert running["slurm"]["state"] == "RUNNING"
    res = run("cas-jobs", "--config", conf, "--json", "--cancel", queued["job_id"])
    assert res.returncode == 0, res
    assert res.record["state"] == "cancelled" and res.record["was"] == "running"
    assert "scancel" in res.record["error"]["message"]
    sid = queued["slurm"]["job_id"]
    wait_for(lambda: slurm_job(sid).get("JobState") == "CANCELLED", "Slurm to cancel it", 60)
    wait_for(lambda: not processes_of(running["workdir"]), "the steps to stop", 60)
    assert job(conf, queued["job_id"])["state"] == "cancelled"


@pytest.mark.realdump
def test_time_limit_fails_the_job_with_the_reason(realdump, site, smtpd):
    conf = site["sleepy"]
    queued = queue(conf, "slurmtime", real_dump(realdump, "qemu-elf"), "-e", "slow@example.com")
    assert slurm_job(queued["slurm"]["job_id"])["TimeLimit"] == "00:01:00"
    ended = wait_for(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        job(conf, queued["job_id"])), "the time limit", 300)
    assert ended["state"] == "failed", ended
    err = ended["error"]
    assert err["step"] == "slurm" and err["kind"] == "timeout", err
    assert f"Slurm job {queued['slurm']['job_id']} ended TIMEOUT" in err["message"]
    assert "TimeLimit" in err["message"]
    assert ended["slurm"]["state"] == "TIMEOUT"
    wait_for(lambda: not processes_of(ended["workdir"]), "the steps to stop", 60)
    msgs = messages_to(smtpd, "slow@example.com")
    assert len(msgs) == 1, [m["Subject"] for m in msgs]
    assert msgs[0]["Subject"] == f"CAS job {queued['job_id']} failed: slurmtime (slurm)"
    body = msgs[0].get_content()
    assert "Reason:      " + err["message"] in body and "a step ran out of time" in body
    # a second look changes nothing and mails nobody again
    assert job(conf, queued["job_id"])["error"] == err
    assert len(messages_to(smtpd, "slow@example.com")) == 1
    assert glob.glob(os.path.join(ended["workdir"], "slurm-*.out"))


@pytest.mark.realdump
def test_not_a_dump_fails_on_the_submit_host(site, tmp_path, smtpd):
    """The head (unpack, ident) runs here: a file that is no dump fails before sbatch, and
    the requester gets the failure mail."""
    path = tmp_path / "vmcore.noise"
    path.write_bytes(os.urandom(65536))
    res = run("cas", "--config", site["real"], "--queue", "-i", "noise1", "-f", path,
              "-e", "noise@example.com")
    assert res.returncode == 1 and res.stdout == "", res
    assert "failed on this host: cas-ident:" in res.stderr and "Traceback" not in res.stderr
    listed = run("cas-jobs", "--config", site["real"], "--json", "-i", "noise1").records
    assert len(listed) == 1 and listed[0]["state"] == "failed" and listed[0]["slurm"] is None
    assert listed[0]["error"]["step"] == "cas-ident" and listed[0]["error"]["kind"] == "not-a-dump"
    msgs = wait_for(lambda: messages_to(smtpd, "noise@example.com"), "the failure mail", 60)
    assert msgs[0]["Subject"] == f"CAS job {listed[0]['job_id']} failed: noise1 (cas-ident)"


@pytest.mark.realdump
def test_no_debuginfo_goes_on_to_the_log_only_report(realdump, site, smtpd):
    """cas-findkernel's miss (in the head, on the submit host) is no failure: the Slurm job
    sends the log-only report, and the job is done with the reason."""
    conf = site["real"]
    queued = queue(conf, "slurmlog", real_dump(realdump, "makedumpfile-zlib"), "--release",
                   "0.0.0-1-bogus", "-e", "logonly@example.com")
    assert queued["slurm"]["job_id"]
    done = wait_for(lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
        job(conf, queued["job_id"])), "the Slurm job to end", 600)
    assert done["state"] == "done" and done["error"]["step"] == "cas-findkernel", done
    assert done["panic"] == "sysrq triggered crash"  # from the kernel log
    msgs = wait_for(lambda: messages_to(smtpd, "logonly@example.com"), "the mail", 60)
    assert len(msgs) == 1 and msgs[0]["Subject"] == "CAS results for slurmlog"
