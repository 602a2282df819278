"""Job names and job directories (caslib.jobdir), through cas-unpack and directly."""

import os
import re
import threading
import time

import pytest

from caslib import jobdir
from caslib.records import StepError
from conftest import run
from unpack_fixtures import compress_with, dumpish

STAMP = re.compile(r"\d{4}\.\d\d\.\d\d\.\d\d\.\d\d\.\d\d(-\d+)?")


@pytest.fixture
def gz(tmp_path):
    data = dumpish(tmp_path / "vmcore.1", 1 << 20)
    return compress_with(["gzip", "-c"], data, tmp_path / "vmcore.1.gz")


def test_layout_and_same_second(tmp_path, casenv, config_file, gz):
    """<workDirectory>/<job>/<YYYY.MM.DD.HH.MM.SS>; records in the same second get their own."""
    conf = config_file()
    before = time.time()
    res = run("cas-unpack", "--config", conf, "--job", "case-7",
              input=[{"id": "7", "source": gz}] * 4, env=casenv)
    assert res.returncode == 0, res
    dirs = [r["workdir"] for r in res.records]
    assert len(set(dirs)) == 4
    for d in dirs:
        parent, stamp = os.path.split(d)
        assert parent == str(tmp_path / "work" / "case-7")
        assert STAMP.fullmatch(stamp), stamp
        when = jobdir.parse_stamp(stamp)
        assert before - 1 <= when <= time.time() + 1
        assert sorted(os.listdir(d)) == ["case-7.log", "vmcore.1"]


def test_create_same_second_and_concurrently(tmp_path):
    now = time.time()
    a = jobdir.create(str(tmp_path), "j", now)
    b = jobdir.create(str(tmp_path), "j", now)
    assert b == a + "-2"
    made, errors = [], []

    def make():
        try:
            made.append(jobdir.create(str(tmp_path), "k", now))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 20


@pytest.mark.parametrize("name,ok", [
    ("12345", True), ("a" * 64, True), ("a" * 65, False), ("case_1.x-y", True),
    (".hidden", False), ("-rf", False), ("../../etc", False), ("a/b", False), ("", False),
    ("ümlaut", False), ("a b", False), ("_x", True), (None, False), (7, False),
])
def test_check_name(name, ok):
    if ok:
        assert jobdir.check_name(name) == name and jobdir.is_valid_name(name)
    else:
        with pytest.raises(StepError) as info:
            jobdir.check_name(name)
        assert info.value.kind == "usage"
        assert not jobdir.is_valid_name(name)


def test_create_refuses_bad_job(tmp_path):
    with pytest.raises(StepError):
        jobdir.create(str(tmp_path), "../escape")
    assert os.listdir(tmp_path) == []


def test_inside(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "f").write_text("x")
    os.symlink("/etc", tmp_path / "job" / "out")
    assert jobdir.inside(str(tmp_path / "job"), str(tmp_path / "job" / "f"))
    assert not jobdir.inside(str(tmp_path / "job"), str(tmp_path / "job" / "out" / "passwd"))
    assert not jobdir.inside(str(tmp_path / "job"), str(tmp_path / "jobber"))


def test_parse_stamp():
    assert jobdir.parse_stamp("2024.05.01.10.00.00") == time.mktime(
        time.strptime("2024.05.01.10.00.00", jobdir.STAMP_FORMAT))
    assert jobdir.parse_stamp("2024.05.01.10.00.00-3") is not None
    assert jobdir.parse_stamp("2024.13.01.10.00.00") is None
    assert jobdir.parse_stamp("core") is None


def test_integer_id_from_json(tmp_path, casenv, config_file, gz):
    """A JSON number as id (a ticket number) is accepted as its decimal string."""
    res = run("cas-unpack", "--config", config_file(), input={"id": 12345, "source": gz},
              env=casenv)
    assert res.returncode == 0, res
    assert res.record["id"] == "12345" and "/12345/" in res.record["workdir"]
