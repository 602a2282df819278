"""cas-crash's retries (--zero_excluded before --minimal) and the crash time from sys DATE."""

import os
import shlex
import shutil

from caslib import crashdate
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
