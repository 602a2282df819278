"""Fuzz every filter with hostile records: random JSON of wrong types, odd strings, paths
that lead out, deep nesting and lines that are not JSON at all.

Each filter reads all the cases as one stream of lines (records after a bad one must still
come through) and must answer every line with one record, exit 0 or 1, never print a
traceback or an ``internal`` error, and never create, change or remove anything outside
the work directory's job directories (the trees are listed before and after).  The record
checks themselves (``pathsafety.check_record``) and the line reader
(``records.read_records``) are fuzzed in-process with the same generator.

    CAS_FUZZ_CASES=10000 .venv/bin/python -m pytest -q tests/test_record_fuzz.py

runs the long campaign (``make fuzz``; default: 300 cases, split over the filters);
CAS_FUZZ_SEED picks the seed (default: random, printed on failure).
"""

import io
import json
import os
import random

import pytest

from conftest import run
from caslib import jobdir, pathsafety, records
from caslib.records import StepError

CASES = int(os.environ.get("CAS_FUZZ_CASES", "300"))
SEED = int(os.environ.get("CAS_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
FILTERS = ("cas-unpack", "cas-ident", "cas-findkernel", "cas-extract", "cas-crash", "cas-mail")
KEYS = ("id", "job", "workdir", "source", "core", "vmlinux", "modules", "kernel", "debuginfo",
        "crash", "mail", "email", "strip", "ident", "format", "layers", "core_bytes", "zz")
SUBKEYS = {"kernel": ("release", "machine", "build_id"),
           "debuginfo": ("rpm", "vmlinux", "modules_prefix", "name", "match"),
           "crash": ("output", "files", "panic", "server"),
           "mail": ("file", "to", "sent")}
STAMP = "2026.01.02.03.04.05"


class Gen:
    """Random values that look enough like records to reach the code behind the checks."""

    def __init__(self, rng: random.Random, paths: list):
        self.rng, self.paths = rng, paths

    def text(self) -> str:
        r = self.rng
        pick = r.randrange(12)
        if pick < 4:
            return r.choice(self.paths)
        if pick == 4:
            return r.choice(self.paths) + r.choice(["/..", "/../..", "\n", "\0", "/x", "//"])
        if pick == 5:
            return "".join(r.choice("ab./-_\\\n\r\0 é€\U0001F600") for _ in range(r.randrange(20)))
        if pick == 6:
            return "x" * r.choice([0, 1, 64, 65, 4096, 100000])
        if pick == 7:
            return r.choice(["7", "-rf", ".hidden", "../outside", "a b", "CON", "7.log",
                             "mail.eml", "crash.out", "http://127.0.0.1:1/vmcore.gz",
                             "ftp://[::1", "a@b.c", "a@b.c\r\nBcc: x@y.z"])
        return "".join(r.choice("abcdefghij0123456789._-") for _ in range(1 + r.randrange(12)))

    def scalar(self):
        r = self.rng
        return r.choice([None, True, False, 0, -1, 2, 1 << 70, -(1 << 63), 1.5, 1e308, -0.0,
                         float("nan"), self.text(), self.text()])

    def value(self, depth: int = 0):
        r = self.rng
        pick = r.randrange(10)
        if depth > 3 or pick < 5:
            return self.scalar()
        if pick == 5:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        if pick == 6:
            deep = self.scalar()
            for _ in range(r.choice([10, 63, 64, 65, 500])):
                deep = [deep] if r.random() < 0.5 else {"a": deep}
            return deep
        return {r.choice(KEYS + ("rpm", "output", "file", "release")): self.value(depth + 1)
                for _ in range(r.randrange(4))}

    def record(self) -> dict:
        r = self.rng
        rec = {}
        for key in r.sample(KEYS, r.randrange(1, 8)):
            if key in SUBKEYS and r.random() < 0.6:
                rec[key] = {sub: (self.text() if r.random() < 0.6 else self.value(1))
                            for sub in r.sample(SUBKEYS[key], r.randrange(1, len(SUBKEYS[key]) + 1))}
            elif key == "modules" and r.random() < 0.5:
                rec[key] = [self.text() for _ in range(r.randrange(3))]
            else:
                rec[key] = self.text() if r.random() < 0.5 else self.value()
        if r.random() < 0.05:
            rec["error"] = self.value() if r.random() < 0.5 else {"step": "x", "message": "m",
                                                                  "kind": "k"}
        return rec

    def line(self) -> str:
        r = self.rng
        pick = r.randrange(20)
        if pick == 0:
            return r.choice(["[" * r.choice([100, 1000, 100000]), "{", "nul", "1e999", "NaN",
                             '"text"', "[1, 2]", "null", "{}", '{"a": }', "\x00\x01",
                             '{"id": "7"} trailing', "\ufeff{}"])
        if pick == 1:
            return '{"a": ' * 70 + "1" + "}" * 70
        return json.dumps(self.record(), ensure_ascii=r.random() < 0.5)


def tree(path) -> list:
    out = []
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            out.append((os.path.relpath(p, path), st.st_mode, st.st_size, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture
def fuzzsite(tmp_path, casenv, config_file):
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret", "crash.out", "7.log", "vmcore"):
        (outside / name).write_text("precious\n")
    job = tmp_path / "work" / "7" / STAMP
    job.mkdir(parents=True)
    (job / "vmcore").write_bytes(b"KDUMP   " + b"\0" * 4096)
    (job / "vmlinux").write_bytes(b"\x7fELF" + b"\0" * 100)
    conf = config_file(crashCommand=str(tmp_path / "no-crash-here"),
                       downloadTimeout="2", transferDeadline="5")
    paths = [str(job), str(job / "vmcore"), str(job / "vmlinux"), str(outside),
             str(outside / "secret"), str(tmp_path / "work"), str(tmp_path / "work" / "7"),
             str(tmp_path / "kernels" / "k.rpm"), "/etc/passwd", "/etc", "/", "vmcore",
             "relative/path", str(job / ".." / ".." / ".." / "outside" / "secret")]
    return tmp_path, outside, conf, casenv, paths


def _work_is_only_job_directories(work: str) -> None:
    for job in os.listdir(work):
        assert jobdir.is_valid_name(job), job
        for stamp in os.listdir(os.path.join(work, job)):
            assert jobdir.parse_stamp(stamp) is not None, (job, stamp)


def test_every_filter_survives_hostile_records(fuzzsite):
    tmp_path, outside, conf, env, paths = fuzzsite
    rng = random.Random(SEED)
    gen = Gen(rng, paths)
    before = tree(outside)
    per = max(20, CASES // len(FILTERS))
    for name in FILTERS:
        lines = [gen.line() for _ in range(per)]
        res = run(name, "--config", conf, input="".join(line + "\n" for line in lines),
                  env=env, timeout=1800)
        where = f"seed {SEED}, {name}"
        assert res.returncode in (0, 1), (where, res)
        assert "Traceback" not in res.stderr, (where, res.stderr[-3000:])
        assert len(res.records) == len([line for line in lines if line.strip()]), where
        for rec, line in zip(res.records, lines):
            err = rec.get("error")
            assert not (isinstance(err, dict) and err.get("kind") == "internal"), (where, line, rec)
        assert all(line.startswith(f"{name}: ") for line in res.stderr.splitlines()), where
        assert tree(outside) == before, where
        _work_is_only_job_directories(str(tmp_path / "work"))


def test_record_checks_and_reader_in_process(fuzzsite):
    tmp_path, outside, conf, env, paths = fuzzsite
    from caslib import config

    pathsafety.configure(config.load(conf, env))
    rng = random.Random(SEED + 1)
    gen = Gen(rng, paths)
    n = max(300, CASES)
    text = "".join(gen.line() + "\n" for _ in range(n))
    got = list(records.read_records(io.StringIO(text), "fuzz"))
    assert len(got) == len([line for line in text.split("\n") if line.strip()])
    job = str(tmp_path / "work" / "7" / STAMP)
    for rec in got:
        if "error" in rec:
            continue
        for trusted in (False, True):
            try:
                pathsafety.check_record(rec, trusted)
            except StepError as exc:
                assert exc.kind == "bad-record" and "\n" not in exc.message, (SEED, rec)
                continue
            if trusted:
                continue
            # what passed is sound: names valid, every path of the record inside its place
            for key in ("id", "job"):
                if rec.get(key) is not None:
                    assert jobdir.is_valid_name(str(rec[key])), (SEED, rec)
            if rec.get("workdir") is not None:
                assert os.path.realpath(rec["workdir"]) == job, (SEED, rec)
            for key in ("core", "vmlinux"):
                if rec.get(key) is not None:
                    assert pathsafety.within(rec["workdir"], rec[key]), (SEED, rec)
