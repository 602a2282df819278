"""caslib.atomicfile: the target is whole or untouched, the temporary name never stays."""

import os
import stat

import pytest

from caslib import atomicfile, pathsafety


def test_replaces_whole(tmp_path):
    target = tmp_path / "mail.eml"
    target.write_text("old")
    with atomicfile.replacing(str(target)) as fh:
        fh.write(b"new")
        assert target.read_text() == "old"          # not visible before the end
        [tmp] = [p for p in os.listdir(tmp_path) if p != "mail.eml"]
        assert pathsafety.cas_writes(tmp)            # a name CAS owns in a job
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["mail.eml"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "crash.in"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomicfile.replacing(str(target), binary=False) as fh:
            fh.write("half")
            raise RuntimeError("disk gone")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["crash.in"]


def test_failure_leaves_no_new_file(tmp_path):
    target = tmp_path / "vmlinux"
    with pytest.raises(KeyboardInterrupt):
        with atomicfile.renaming(str(target)) as tmp:
            open(tmp, "wb").write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_perm(tmp_path):
    old = os.umask(0o077)
    try:
        atomicfile.write_text(str(tmp_path / "crash"), "#!/bin/sh\n", perm=0o755)
        atomicfile.write_text(str(tmp_path / "plain"), "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "crash").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o600   # umask applies
