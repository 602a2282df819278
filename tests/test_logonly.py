"""A job whose kernel is not on the shelf still answers: the log-only report.

Real dumps, a real SMTP server on loopback, the real pipeline with an empty shelf
and no debuginfod; plus cas-mail on error records of extract and crash, and the
panic summary parsed from logs (logpanic.py).
"""

import email
import email.policy
import json
import os
import sqlite3

import pytest

from caslib.diagnosis import logpanic
from conftest import SmtpCollector, run, serial_panic_cpu


@pytest.fixture
def smtpd():
    with SmtpCollector() as server:
        yield server


def dump(manifest, variant):
    return next(d for d in manifest["dumps"] if d["variant"] == variant)


@pytest.mark.realdump
@pytest.mark.parametrize("variant", ["qemu-elf", "makedumpfile-lzo"])
def test_empty_shelf_gives_a_log_only_job_and_mail(realdump, variant, config_file, casenv,
                                                   smtpd, tmp_path):
    casenv.pop("DEBUGINFOD_URLS", None)
    cfg = config_file(smtphost=smtpd.hostport, mailFrom="cas@example.org")
    assert run("cas-admin", "--config", cfg, env=casenv).returncode == 0
    res = run("cas", "--config", cfg, "-i", "4711", "-f", dump(realdump, variant)["path"],
              "-e", "engineer@example.com", "--json", env=casenv)
    assert res.returncode == 3, res  # completed with a partial analysis
    rec = res.record
    assert "error" not in rec and rec["analysis"] == "log-only"
    assert rec["analysis_error"]["step"] == "cas-findkernel"
    assert rec["missing"]["release"] == realdump["kernel"]["release"]
    assert rec["missing"]["nearest"] == []
    assert rec["dmesg"]["panic"]["message"] == realdump["kernel"]["panic"]
    assert rec["mail"]["sent"] is True
    with open(os.path.join(rec["workdir"], "dmesg")) as fh:
        log = fh.read().splitlines()
    body = email.message_from_bytes(smtpd.messages[-1].content,
                                    policy=email.policy.default).get_body(("plain",)).get_content()
    assert "sysrq triggered crash" in body
    assert "log-only" in body and realdump["kernel"]["release"] in body
    assert "Nearest:     none on the shelf" in body
    assert f"Task:        init (pid 1, cpu {serial_panic_cpu(realdump)})" in body
    assert "    ? _printk+0x68/0x83" in body
    shown = body.splitlines()
    tail = shown[shown.index("==> tail of the kernel log <==") + 1:]
    assert tail == log[-len(tail):] and len(tail) == 60
    assert "---[ end Kernel panic - not syncing: sysrq triggered crash ]---" in tail[-1]
    conn = sqlite3.connect(tmp_path / "cas.db")
    state, error = conn.execute(
        "SELECT state, error FROM jobs WHERE identifier = '4711'").fetchone()
    conn.close()
    assert state == "done" and error.startswith("log-only: cas-findkernel")
    summary = run("cas", "--config", cfg, "-i", "4712", "-f", dump(realdump, variant)["path"],
                  env=casenv)
    assert summary.returncode == 3
    assert "Analysis: log-only" in summary.stdout
    assert "Panic:    sysrq triggered crash" in summary.stdout


@pytest.mark.parametrize("step", ["cas-extract", "cas-crash"])
def test_mail_turns_an_analysis_error_with_a_log_into_a_log_only_report(
        step, config_file, casenv, tmp_path):
    workdir = tmp_path / "work" / "1" / "2026.12.03.12.00.00"
    workdir.mkdir(parents=True)
    lines = [f"[    0.{i:06d}] boot line {i}" for i in range(100)] + [
        "[    1.000000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    1.000001] Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "[    1.000002] CPU: 3 PID: 812 Comm: modprobe Tainted: G           OE      6.1.0 #1",
        "[    1.000003] RIP: 0010:dummy_init+0x12/0x30 [dummy]",
        "[    1.000004] Call Trace:",
        "[    1.000004]  <TASK>",
        "[    1.000004]  do_one_initcall+0x44/0x220",
        "[    1.000004]  ? kmalloc_trace+0x26/0x90",
        "[    1.000004]  do_init_module+0x4a/0x1f0 [dummy]",
        "[    1.000004]  </TASK>",
    ]
    (workdir / "dmesg").write_text("\n".join(lines) + "\n")
    summary = logpanic.summary(lines)
    rec = {"id": "1", "job": "1", "workdir": str(workdir), "kernel": {"release": "6.1.0"},
           "dmesg": {"file": str(workdir / "dmesg"), "lines": len(lines), "panic": summary},
           "error": {"step": step, "message": "it broke", "kind": "failed"}}
    other = {"job": "2", "error": {"step": "cas-ident", "message": "x", "kind": "corrupt"}}
    res = run("cas-mail", "--config", config_file(), input=json.dumps(rec) + "\n"
              + json.dumps(other) + "\n", env=casenv)
    assert res.returncode == 1  # the second record still carries its error
    out, passed = res.records
    assert passed == other  # no log, not an analysis step: untouched
    assert out["analysis"] == "log-only" and out["analysis_error"]["step"] == step
    with open(out["mail"]["file"], "rb") as fh:
        body = email.message_from_binary_file(fh, policy=email.policy.default).get_body(("plain",)).get_content()
    assert "Panic:       BUG: kernel NULL pointer dereference, address: 0000000000000000" in body
    assert "RIP:         0010:dummy_init+0x12/0x30 [dummy]" in body
    assert "    ? kmalloc_trace+0x26/0x90" in body and "do_init_module+0x4a/0x1f0 [dummy]" in body
    assert "Missing:" not in body and f"Why:         {step}: it broke" in body


def test_log_panic_summary_of_an_oops():
    lines = ["[    5.000000] BUG: unable to handle page fault for address: ffffffffc0000000",
             "[    5.000001] CPU: 0 UID: 0 PID: 77 Comm: kworker/0:1 Not tainted 6.12.0 #1",
             "[    5.000002] RIP: 0010:memcpy_orig+0x10/0x120",
             "[    5.000003] Call Trace:",
             "[    5.000003]  <IRQ>",
             "[    5.000003]  ? show_regs+0x6c/0x80",
             "[    5.000003]  e1000_clean+0x3a/0x4f0 [e1000]",
             "[    5.000003]  </IRQ>",
             "[    5.000004] Modules linked in: e1000"]
    s = logpanic.summary(lines)
    assert s["message"] == "BUG: unable to handle page fault for address: ffffffffc0000000"
    assert (s["task"], s["pid"], s["cpu"]) == ("kworker/0:1", 77, 0)
    assert s["rip"] == "0010:memcpy_orig+0x10/0x120"
    assert s["backtrace"] == ["? show_regs+0x6c/0x80", "e1000_clean+0x3a/0x4f0 [e1000]"]
    assert s["frames"][1] == {"function": "e1000_clean+0x3a/0x4f0", "module": "e1000",
                              "reliable": True}
    assert logpanic.summary(["[    0.000000] Linux version 6.1.0"])["message"] is None
