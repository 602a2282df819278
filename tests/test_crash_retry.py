"""cas-crash's retries (--zero_excluded before --minimal) and the crash time from sys DATE."""

import os
import shlex
import shutil

from caslib.crashrun import crashdate
from test_crash_real import _crash, _dump, _read, _record


def test_date_parse():
    assert crashdate.parse(["      KERNEL: x\n", "        DATE: Thu Dec  3 19:49:39 UTC 2026\n"]) \
        == ("Thu Dec  3 19:49:39 UTC 2026", "2026-12-03T19:49:39Z")
    # another zone cannot be turned into UTC without guessing: the text only
    assert crashdate.parse(["        DATE: Thu Dec  3 20:49:39 CET 2026"]) == (
        "Thu Dec  3 20:49:39 CET 2026", None)
    assert crashdate.parse(["no date here"]) == (None, None)


def test_zero_excluded_is_tried_before_minimal(realdump, tmp_path):
    """The failing start is a test script (it refuses unless --zero_excluded is given: the
    failure is what is simulated); with --zero_excluded it runs the real crash."""
    real = shutil.which("crash")
    refuse = tmp_path / "crash-that-needs-zero-excluded"
    refuse.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --zero_excluded ] && exec "
                      f"{shlex.quote(real)} \"$@\"; done\n"
                      "echo 'crash 8.0.2'\necho 'crash: page excluded: kernel virtual address:"
                      " ffffffff8e000000  type: \"init_task\"'\nexit 1\n")
    refuse.chmod(0o755)
    dump = _dump(realdump, "makedumpfile-zlib")
    record = _record(realdump, dump, tmp_path / "job")
    res = _crash(tmp_path, record, crashCommand=str(refuse))
    assert res.returncode == 0, res
    c = res.record["crash"]
    assert c["opened_with"] == "--zero_excluded" and c["degraded"] is False
    assert c["command"].endswith("crash --zero_excluded -i crash.in")
    assert "page excluded" in c["init_error"]
    assert c["panic"]["message"] == "sysrq triggered crash"
    assert "trying again with --zero_excluded" in res.stderr
    assert "--minimal" not in res.stderr
    # the dump has no crash time in its headers: crash's sys DATE gives it
    assert c["date"] and res.record["kernel"]["crash_time"].endswith("Z")
    assert c["crash_time_from"] == "crash sys DATE"
    assert "DATE:" in _read(c["files"]["sys"])


def test_crash_that_cannot_run_leaves_the_panic_of_vmcore_dmesg(realdump, tmp_path):
    """crash refuses every start (a test script: the failure is what is simulated); the
    kdump directory's real vmcore-dmesg.txt (makedumpfile --dump-dmesg) gives the panic,
    and cas-mail quotes it."""
    refuse = tmp_path / "crash-that-never-starts"
    refuse.write_text("#!/bin/sh\necho 'crash 8.0.2'\n"
                      "echo 'crash: cannot determine base kernel version'\nexit 1\n")
    refuse.chmod(0o755)
    dump = _dump(realdump, "makedumpfile-zlib")
    record = _record(realdump, dump, tmp_path / "job")
    os.makedirs(record["workdir"], exist_ok=True)
    dmesg = os.path.join(record["workdir"], "vmcore-dmesg.txt")
    shutil.copy(realdump["split"]["dmesg"], dmesg)
    record["vmcore_dmesg"] = dmesg
    res = _crash(tmp_path, record, crashCommand=str(refuse))
    assert res.returncode == 0, res
    c = res.record["crash"]
    assert c["degraded"] is True and c["opened_with"] is None
    assert "vmcore-dmesg.txt" in c["note"] and "cannot determine" in c["note"]
    assert c["panic"]["message"] == "sysrq triggered crash"
    from conftest import run
    mailed = run("cas-mail", "--config", str(tmp_path / "cas.conf"), input=res.record)
    assert mailed.returncode == 0, mailed
    with open(mailed.record["mail"]["file"]) as fh:
        body = fh.read()
    assert "From vmcore-dmesg.txt:" in body and "Kernel panic - not syncing: sysrq" in body
    assert "Panic:       sysrq triggered crash" in body
    assert "Note:        crash cannot open" in body
