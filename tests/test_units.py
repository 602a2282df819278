"""The systemd units in etc/systemd/ are valid (systemd-analyze verify) and run as the packages'
system user ``cas`` (the ``casuser`` of the packaged /etc/cas.conf)."""

import glob
import re
import os
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

UNITS = sorted(glob.glob(os.path.join(ROOT, "etc", "systemd", "*")))


def test_every_service_runs_as_casuser_and_quietly():
    names = {os.path.basename(u) for u in UNITS}
    assert {"cas-worker.service", "cas-admin-index.service", "cas-admin-index.timer",
            "cas-admin-purge.service", "cas-admin-purge.timer"} <= names
    for unit in UNITS:
        with open(unit) as fh:
            text = fh.read()
        if unit.endswith(".service"):
            assert "\nUser=cas\nGroup=cas\n" in text, unit
            if "cas-admin" in unit:
                assert " -q" in text, unit


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    # the units name the installed /usr/bin paths; point them at this checkout to verify
    for unit in UNITS:
        with open(unit) as fh:
            text = fh.read().replace("/usr/bin/", BIN + "/")
        (tmp_path / os.path.basename(unit)).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=120)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if not re.search(r"(?i)(user|group).*\bcas\b", line)]  # need not exist here
    assert res.returncode == 0 or not problems, res.stdout + res.stderr
    assert not problems, problems
