"""The record contract (caslib.records), exercised through a real filter: cas-unpack."""

import json
import os
import signal
import subprocess

import pytest

from caslib import records
from conftest import command, run
from unpack_fixtures import compress_with, dumpish


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()
    data = dumpish(tmp_path / "vmcore.1", 1 << 20)
    gz = compress_with(["gzip", "-c"], data, tmp_path / "vmcore.1.gz")

    def unpack(*args, input=None):
        return run("cas-unpack", "--config", conf, *args, input=input, env=casenv)

    unpack.tmp, unpack.conf, unpack.env, unpack.gz = tmp_path, conf, casenv, gz
    return unpack


def test_not_json_and_not_object_become_error_records(setup):
    text = "this is not json\n[1, 2]\n\n" + json.dumps({"id": "5", "source": setup.gz}) + "\n"
    res = setup(input=text)
    assert res.returncode == 1
    bad1, bad2, good = res.records
    assert bad1["error"]["kind"] == "bad-record" and "line 1" in bad1["error"]["message"]
    assert bad1["input"] == "this is not json"
    assert bad2["error"]["kind"] == "bad-record" and "not a JSON object" in bad2["error"]["message"]
    assert "error" not in good and good["layers"] == ["gzip"]  # later records still processed


def test_error_records_pass_untouched_and_unknown_keys_keep_order(setup):
    failed = {"z": 1, "id": "5", "error": {"step": "cas-ident", "message": "m", "kind": "k"},
              "a": None}
    ok = {"z": 2, "id": "6", "source": setup.gz, "nested": {"x": [1, "ü"]}, "a": True}
    res = setup(input=[failed, ok])
    assert res.returncode == 1
    assert res.records[0] == failed and list(res.records[0]) == list(failed)
    out = res.records[1]
    assert list(out)[:5] == ["z", "id", "source", "nested", "a"]
    assert out["nested"] == {"x": [1, "ü"]}
    assert res.stdout.count("\n") == 2  # one line per record


def test_exit_status(setup):
    assert setup("-i", "1", setup.gz).returncode == 0
    assert setup("-i", "1", setup.tmp / "missing").returncode == 1
    res = setup("--no-such-flag")
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "--no-such-flag" in res.stderr
    res = run("cas-unpack", "--config", setup.tmp / "nope.conf", "-i", "1", setup.gz,
              env=setup.env)
    assert res.returncode == 2 and res.stdout == "" and "nope.conf" in res.stderr


def test_flushes_each_record_before_reading_the_next(setup):
    """A real pipe: the first answer arrives while stdin is still open."""
    proc = subprocess.Popen(command("cas-unpack") + ["--config", setup.conf],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=setup.env)
    try:
        proc.stdin.write(json.dumps({"id": "1", "source": setup.gz}) + "\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first["layers"] == ["gzip"]
        proc.stdin.write(json.dumps({"id": "2", "source": setup.gz}) + "\n")
        proc.stdin.close()
        second = json.loads(proc.stdout.readline())
        assert second["id"] == "2"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_broken_pipe_is_quiet(setup):
    """The reader goes away: exit 141 like cat, no traceback."""
    r, w = os.pipe()
    os.close(r)  # nobody will ever read
    lines = "".join(json.dumps({"id": str(i), "source": setup.gz}) + "\n" for i in range(3))
    proc = subprocess.run(command("cas-unpack") + ["--config", setup.conf], input=lines,
                          stdout=w, stderr=subprocess.PIPE, text=True, env=setup.env,
                          preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN))
    os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr


def test_help_exits_zero():
    proc = subprocess.run(command("cas-unpack") + ["-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: cas-unpack")


def test_error_record_is_one_line():
    rec = records.error_record({"id": "1"}, "cas-x", "two\nlines\tand  spaces", "k")
    assert rec == {"id": "1", "error": {"step": "cas-x", "message": "two lines and spaces",
                                        "kind": "k"}}
    assert records.StepError("a\nb").message == "a b"


def test_run_in_process_streams():
    import io

    out = io.StringIO()
    status = records.run("cas-x", lambda r: dict(r, seen=True),
                         stdin=io.StringIO('{"a": 1}\n{"b": 2}\n'), stdout=out)
    assert status == 0
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"a": 1, "seen": True}, {"b": 2, "seen": True}]

    def boom(record):
        raise ValueError("bad\nthing")

    out = io.StringIO()
    assert records.run("cas-x", boom, initial=[{"a": 1}], stdout=out) == 1
    err = json.loads(out.getvalue())["error"]
    assert err["kind"] == "internal" and err["message"] == "internal error: ValueError: bad thing"
