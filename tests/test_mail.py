"""cas-mail against a real SMTP server (aiosmtpd) on loopback."""

import email
import email.policy
import os

import pytest

from conftest import SmtpCollector, free_port, run


@pytest.fixture
def smtpd():
    with SmtpCollector() as server:
        yield server


@pytest.fixture
def job(tmp_path):
    workdir = tmp_path / "work" / "1" / "2026.11.26.12.00.00"
    workdir.mkdir(parents=True)
    (workdir / "crash.out").write_text("crash> sys\n      PANIC: \"sysrq triggered crash\"\n")
    return {
        "id": "12345", "job": "1", "workdir": str(workdir), "source": "vmcore.12345",
        "kernel": {"release": "6.1.0-56-cloud-amd64", "machine": "x86_64", "hostname": "casdemo",
                   "crash_time": "2026-11-26T12:00:00Z"},
        "crash": {"server": None, "output": str(workdir / "crash.out"),
                  "panic": {"message": "sysrq triggered crash", "task": "sh", "pid": 1, "cpu": 0,
                            "backtrace": ["#0 machine_kexec", "#1 __crash_kexec"]}},
        "extra_key": [1, 2],
    }


def test_mail_is_delivered_and_saved(smtpd, job, config_file, casenv):
    cfg = config_file(smtphost=smtpd.hostport, mailFrom="cas@example.org")
    res = run("cas-mail", "--config", cfg, "-e", "engineer@example.com", input=job, env=casenv)
    assert res.returncode == 0, res
    out = res.record
    assert list(out)[: len(job)] == list(job)  # keys passed through, in order
    assert out["extra_key"] == [1, 2]
    assert out["mail"]["sent"] is True and out["mail"]["to"] == "engineer@example.com"
    assert len(smtpd.messages) == 1
    envelope = smtpd.messages[0]
    assert envelope.rcpt_tos == ["engineer@example.com"]
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert msg["Subject"] == "CAS results for 1"
    assert msg["From"] == "cas@example.org"
    assert msg["Message-ID"] == out["mail"]["message_id"]
    assert msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()  # the same report as report.html
    assert "sysrq triggered crash" in page and "<script" not in page
    with open(os.path.join(job["workdir"], "report.html")) as fh:
        assert fh.read() == page.replace("\r\n", "\n")  # SMTP's line ends in the mail
    assert "Kernel:      6.1.0-56-cloud-amd64 (x86_64)" in text
    assert "Panic:       sysrq triggered crash" in text
    assert f"Location: {job['workdir']}" in text
    assert "Server: localhost" in text
    assert "Output data:" in text and 'PANIC: "sysrq triggered crash"' in text
    saved = os.path.join(job["workdir"], "mail.eml")
    assert out["mail"]["file"] == saved and os.path.exists(saved)


def test_without_smtphost_the_message_is_only_saved(job, config_file, casenv):
    res = run("cas-mail", "--config", config_file(), "-e", "engineer@example.com", input=job, env=casenv)
    assert res.returncode == 0, res
    mail = res.record["mail"]
    assert mail["sent"] is False and "no smtphost" in mail["reason"]
    with open(mail["file"], "rb") as fh:
        msg = email.message_from_binary_file(fh, policy=email.policy.default)
    assert msg["To"] == "engineer@example.com"


def test_smtp_failure_keeps_results_and_resend_sends_later(smtpd, job, config_file, casenv):
    dead = f"127.0.0.1:{free_port()}"
    res = run("cas-mail", "--config", config_file(smtphost=dead), "-e", "a@example.com",
              input=job, env=casenv)
    assert res.returncode == 1
    out = res.record
    assert out["error"]["step"] == "cas-mail" and out["error"]["kind"] == "smtp"
    assert out["mail"]["sent"] is False and dead in out["mail"]["reason"]
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert os.path.exists(os.path.join(job["workdir"], "mail.eml"))
    again = run("cas-mail", "--config", config_file(smtphost=smtpd.hostport), "--resend",
                job["workdir"], env=casenv)
    assert again.returncode == 0, again
    assert again.record["mail"]["sent"] is True
    assert smtpd.messages[0].rcpt_tos == ["a@example.com"]


@pytest.mark.parametrize("address", ["a@b.com\nBcc: x@y.com", "not-an-address", "a@@b", "a b@c.d"])
def test_bad_addresses_are_refused(address, job, config_file, casenv):
    res = run("cas-mail", "--config", config_file(), "-e", address, input=job, env=casenv)
    assert res.returncode == 2 and "bad email address" in res.stderr
    job["email"] = address
    res = run("cas-mail", "--config", config_file(), input=job, env=casenv)
    assert res.returncode == 1 and res.record["error"]["kind"] == "usage"
    assert not os.path.exists(os.path.join(job["workdir"], "mail.eml"))


def test_error_records_pass_through_untouched(config_file, casenv):
    rec = {"id": "x", "error": {"step": "cas-ident", "message": "boom", "kind": "corrupt"}}
    res = run("cas-mail", "--config", config_file(), input=[rec, "not json"], env=casenv)
    assert res.returncode == 1
    assert res.records[0] == rec
    assert res.records[1]["error"]["kind"] == "bad-record"
