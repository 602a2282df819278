"""The vendored rpmfile: used when no rpmfile is installed, and it reads a real RPM."""

import glob
import importlib
import os
import subprocess
import sys

from conftest import ROOT

PROBE = """
import sys
sys.modules["rpmfile"] = None  # as on a machine where rpmfile is not installed
sys.path.insert(0, {lib!r})
from caslib.packages import rpm
print(rpm.rpmfile.__name__)
from caslib._vendor import load_rpmfile  # still a function once the copy is imported
print(load_rpmfile().__name__)
"""


def test_vendored_copy_used_when_rpmfile_absent():
    out = subprocess.run([sys.executable, "-c", PROBE.format(lib=os.path.join(ROOT, "lib"))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["caslib._vendor.rpmfile"] * 2, out.stdout


def test_vendored_copy_carries_its_licence():
    text = open(os.path.join(ROOT, "lib", "caslib", "_vendor", "rpmfile", "LICENSE")).read()
    assert "MIT License" in text


def test_vendored_copy_reads_an_rpm(tmp_path):
    mod = importlib.import_module("caslib._vendor.rpmfile")
    rpms = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "**", "*.rpm"), recursive=True))
    if not rpms:
        spec = tmp_path / "t.spec"
        spec.write_text("Name: t\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\n"
                        "BuildArch: noarch\n%description\nt\n%files\n")
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {tmp_path}", str(spec)],
                       check=True, capture_output=True, timeout=120)
        rpms = glob.glob(str(tmp_path / "RPMS" / "*" / "*.rpm"))
    with mod.open(rpms[0]) as rpm:
        assert rpm.headers.get("name")
