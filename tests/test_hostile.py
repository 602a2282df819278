"""Untrusted input cannot hurt (issue 12): hostile records, hostile archives, hostile peers.

Every case asserts the exit status, one line on stderr, an error record naming what is
wrong, no traceback, nothing created/changed/removed outside the job directory (the tree
is listed before and after), and that the records after a bad one still come through.
Where memory is the point, peak RSS is read with getrusage(RUSAGE_CHILDREN) in a fresh
interpreter that runs only the filter.
"""

import gzip
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from conftest import ROOT, command, run, sha256

FILTERS = ("cas-unpack", "cas-ident", "cas-findkernel", "cas-extract", "cas-crash", "cas-mail")
STAMP = "2026.01.02.03.04.05"


# ---------------------------------------------------------------- helpers

def tree(path) -> list:
    """Every entry under ``path`` with its type, size and mtime: what must not change."""
    out = []
    for top, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            p = os.path.join(top, name)
            st = os.lstat(p)
            out.append((os.path.relpath(p, path), st.st_mode, st.st_size, st.st_mtime_ns))
    return sorted(out)


def clean_error(res, kind: str, *words, status: int = 1, index: int = 0) -> dict:
    """Exit ``status``, one stderr line, no traceback, an error record of ``kind``."""
    assert res.returncode == status, res
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res
    rec = res.records[index]
    assert rec["error"]["kind"] == kind, res
    for word in words:
        assert word in rec["error"]["message"] and word in lines[0], (word, res)
    return rec


@pytest.fixture
def site(tmp_path, casenv, config_file):
    """A config, a real job directory under workDirectory, and an outside tree to watch."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("crash.out", "crash.in", "traceback", "sys", "secret"):
        (outside / name).write_text(f"precious {name}\n")
    job = tmp_path / "work" / "7" / STAMP
    job.mkdir(parents=True)
    (job / "vmcore").write_bytes(b"\0" * 4096)
    conf = config_file(crashCommand=str(tmp_path / "no-crash-here"))

    class Site:
        pass

    s = Site()
    s.tmp, s.outside, s.job, s.conf, s.env = tmp_path, outside, job, conf, casenv
    s.ok = {"id": "7", "job": "7", "workdir": str(job), "core": str(job / "vmcore")}
    s.before = tree(outside)

    def filt(name, *args, input=None, **kw):
        return run(name, "--config", conf, *args, input=input, env=casenv, **kw)

    s.run = filt
    yield s
    assert tree(outside) == s.before  # nothing outside the job directory, in any test


def peak_rss(argv, stdin_path, env) -> tuple[int, subprocess.CompletedProcess]:
    """Run ``argv`` from a fresh interpreter; (its peak RSS in KiB, the completed process)."""
    probe = ("import resource, subprocess, sys, json\n"
             "with open(sys.argv[1], 'rb') as fh:\n"
             "    p = subprocess.run(sys.argv[2:], stdin=fh, capture_output=True)\n"
             "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
             " p.returncode, p.stdout.decode(), p.stderr.decode()]))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(stdin_path)] + argv,
                         capture_output=True, text=True, env=env, timeout=600)
    rss, code, stdout, stderr = json.loads(out.stdout)
    return rss, subprocess.CompletedProcess(argv, code, stdout, stderr)


# ---------------------------------------------------------------- records are input

@pytest.mark.parametrize("name", FILTERS)
def test_outside_workdir_is_refused_and_later_records_come_through(site, name):
    rec = dict(site.ok, workdir=str(site.outside), core=str(site.outside / "secret"),
               vmlinux=str(site.outside / "secret"), source=str(site.outside / "secret"),
               kernel={"release": "6.1.0-1-amd64", "machine": "x86_64"},
               debuginfo={"rpm": "/nope.rpm", "vmlinux": "/usr/lib/debug/vmlinux"},
               crash={"output": str(site.outside / "secret")})
    after = {"id": "8", "error": {"step": "cas-ident", "message": "earlier", "kind": "corrupt"}}
    res = site.run(name, input=[rec, after])
    clean_error(res, "bad-record", "workdir")
    assert res.records[1] == after and len(res.records) == 2
    assert not (site.outside / "7.log").exists()


def test_extract_with_workdir_etc_writes_nothing_there(site):
    before = tree("/etc") if os.access("/etc", os.W_OK) else None
    rec = dict(site.ok, workdir="/etc", debuginfo={"rpm": "/nope.rpm", "vmlinux": "/x"})
    res = site.run("cas-extract", input=rec)
    clean_error(res, "bad-record", "'workdir'", "/etc")
    assert not os.path.exists("/etc/7.log") and not os.path.exists("/etc/usr/lib/debug")
    if before is not None:
        assert tree("/etc") == before


def test_crash_output_outside_never_reaches_the_mail_body(site):
    rec = dict(site.ok, crash={"output": str(site.outside / "secret"),
                               "panic": {"message": "x"}})
    res = site.run("cas-mail", input=rec)
    clean_error(res, "bad-record", "crash.output", str(site.outside / "secret"))
    assert not (site.job / "mail.eml").exists()


@pytest.mark.parametrize("name,cases,keys", [
    ("cas-mail", [{"crash": {"files": {"sys": "/etc/passwd"}}},
                  {"mail": {"file": "OUTSIDE/secret"}}], ["crash.files.sys", "mail.file"]),
    ("cas-crash", [{"modules": ["JOB/vmcore", "/etc/passwd"]},
                   {"vmlinux": "JOB/../../../outside/secret"},
                   {"core": "JOB/vmcore\n"}], ["modules", "vmlinux", "core"]),
    ("cas-ident", [{"core": "JOB/../../../outside/secret"}], ["core"]),
])
def test_files_a_step_opens_must_be_in_the_job(site, name, cases, keys):
    def place(value):
        if isinstance(value, str):
            return value.replace("JOB", str(site.job)).replace("OUTSIDE", str(site.outside))
        if isinstance(value, list):
            return [place(v) for v in value]
        return {k: place(v) for k, v in value.items()}

    recs = [dict(site.ok, **place(case)) for case in cases]
    res = site.run(name, input=recs)
    assert res.returncode == 1 and len(res.records) == len(recs)
    assert [r["error"]["kind"] for r in res.records] == ["bad-record"] * len(recs)
    assert len(res.stderr.splitlines()) == len(recs) and "Traceback" not in res.stderr
    for key, rec in zip(keys, res.records):
        assert f"'{key}'" in rec["error"]["message"], rec


def test_a_record_core_without_workdir_is_not_read(site):
    res = site.run("cas-ident", input={"core": str(site.outside / "secret")})
    clean_error(res, "bad-record", "'core'", "no workdir")


def test_symlinked_job_directory_cannot_lead_out(site):
    link = site.tmp / "work" / "7" / "2026.01.02.03.04.06"
    os.symlink(site.outside, link)
    res = site.run("cas-crash", input=dict(site.ok, workdir=str(link), core=str(link / "secret")))
    clean_error(res, "bad-record", "workdir")


@pytest.mark.parametrize("job", ["../outside2", {"a": 1}, "a\r\nb", "x" * 65, ".hidden", 7.5])
@pytest.mark.parametrize("name", ["cas-extract", "cas-crash", "cas-mail", "cas-unpack"])
def test_bad_job_names_never_name_a_log_file(site, name, job):
    rec = dict(site.ok, job=job, source=str(site.job / "vmcore"))
    res = site.run(name, input=rec)
    clean_error(res, "bad-record", "'job'")
    assert sorted(os.listdir(site.job)) == ["vmcore"]
    assert not os.path.exists(site.tmp / "work" / "outside2.log")


@pytest.mark.parametrize("rec,key", [
    ({"workdir": ["/tmp"]}, "workdir"),
    ({"debuginfo": {"rpm": 2, "vmlinux": "/x"}}, "debuginfo.rpm"),
    ({"job": {"a": 1}}, "job"),
    ({"id": [1]}, "id"),
    ({"kernel": "6.1"}, "kernel"),
    ({"crash": [1]}, "crash"),
    ({"modules": "x"}, "modules"),
    ({"source": 3}, "source"),
    ({"email": ["a@b"]}, "email"),
])
@pytest.mark.parametrize("name", FILTERS)
def test_wrong_types_are_bad_records(site, name, rec, key):
    res = site.run(name, input=[dict(site.ok, **rec), site.ok])
    assert res.returncode == 1 and len(res.records) == 2  # the record after it is handled
    got = res.records[0]["error"]
    assert got["kind"] == "bad-record" and f"'{key}'" in got["message"], res
    # its one line comes first on stderr, before anything the next record logs
    assert res.stderr.splitlines()[0] == f"{name}: {got['message']}"
    assert "Traceback" not in res.stderr and "internal" not in res.stderr


def test_rpm_as_integer_never_closes_stderr(site):
    rec = dict(site.ok, debuginfo={"rpm": 2, "vmlinux": "/x"})
    res = site.run("cas-extract", input=[rec, rec])
    assert [r["error"]["kind"] for r in res.records] == ["bad-record", "bad-record"]
    assert len(res.stderr.splitlines()) == 2  # stderr still open for the second line


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file only root can read")
def test_a_forced_package_only_root_can_read_is_not_taken_from_a_record(site):
    # cas --package names a package off the shelf; a record saying so is still input
    secret = site.tmp / "rootonly.rpm"
    secret.write_bytes(b"root:*:19000:0:99999:7:::\n" * 100)
    os.chmod(secret, 0o600)
    rec = dict(site.ok, debuginfo={"rpm": str(secret), "vmlinux": "/x", "override": "package"})
    res = site.run("cas-extract", input=rec)
    clean_error(res, "bad-record", "'debuginfo.rpm'")
    assert "readable by everyone" in res.record["error"]["message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file only root can read")
def test_source_only_root_can_read_is_not_taken_from_a_record(site):
    secret = site.tmp / "rootonly"
    secret.write_bytes(b"root:*:19000:0:99999:7:::\n" * 100)
    os.chmod(secret, 0o600)
    res = site.run("cas-unpack", input={"id": "9", "source": str(secret)})
    clean_error(res, "bad-record", "'source'")
    assert not os.path.exists(site.tmp / "work" / "9")


def test_a_record_source_of_another_user_is_copied_not_linked(site):
    src = site.tmp / "vmcore.theirs"
    src.write_bytes(b"KDUMP   " + os.urandom(8000))
    os.chmod(src, 0o644)
    if os.geteuid() == 0:
        os.chown(src, 65534, 65534)
    res = site.run("cas-unpack", input={"id": "9", "source": str(src)})
    assert res.returncode == 0, res
    core = res.record["core"]
    assert sha256(core) == sha256(src)
    if os.geteuid() == 0:
        assert os.stat(core).st_ino != os.stat(src).st_ino and os.stat(src).st_nlink == 1


@pytest.mark.parametrize("name", FILTERS)
def test_deep_nesting_is_an_error_record_for_that_line(site, name, tmp_path):
    lines = ["[" * 100000 + "\n", '{"a": ' * 100 + "1" + "}" * 100 + "\n",
             json.dumps(dict(site.ok, error={"step": "x", "message": "m", "kind": "k"})) + "\n"]
    res = site.run(name, input="".join(lines))
    assert res.returncode == 1 and len(res.records) == 3, res
    assert res.records[0]["error"]["kind"] == "bad-record"
    assert "nested deeper" in res.records[0]["error"]["message"]
    assert res.records[1]["error"]["kind"] == "bad-record"
    assert res.records[2]["error"]["message"] == "m"  # the record after it came through
    assert len(res.stderr.splitlines()) == 2 and "Traceback" not in res.stderr


def test_a_100_mb_line_is_an_error_record_in_bounded_memory(site, tmp_path):
    big = tmp_path / "big.jsonl"
    with open(big, "w") as fh:
        for _ in range(100):
            fh.write("[" * (1 << 20))
        fh.write("\n" + json.dumps({"id": "after", "kernel": {"release": "r"}}) + "\n")
    rss, proc = peak_rss(command("cas-findkernel") + ["--config", site.conf], big, site.env)
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and len(out) == 2
    assert out[0]["error"]["kind"] == "bad-record" and "longer than" in out[0]["error"]["message"]
    assert out[1]["id"] == "after"  # delivered, with its own (not-found) result
    assert "Traceback" not in proc.stderr
    assert rss < 200 * 1024, f"peak RSS {rss} KiB for a 100 MB line"


def test_every_error_record_prints_one_line_and_no_info_before(site):
    res = site.run("cas-ident", input="not json\n{}\n[1]\n")
    assert res.returncode == 1 and len(res.records) == 3
    lines = res.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("cas-ident: ") for line in lines)
    assert "not JSON" in lines[0] and "no core" in lines[1] and "not a JSON object" in lines[2]


# ---------------------------------------------------------------- small archives stay cheap

def _tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _header(name: str, typeflag: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = typeflag, 0
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT)[:512])
    block[124:136] = b"%011o\0" % size if size < 8 ** 11 else b"\x80" + size.to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _zstd(data: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor().compress(data)


def test_gnu_longname_of_300_mib_is_unsafe_in_small_memory(site, tmp_path):
    # a header declaring a 300 MiB long name, then the 300 MiB of it (zeros: tiny compressed)
    stream = io.BytesIO()
    cctx = __import__("zstandard").ZstdCompressor()
    with cctx.stream_writer(stream, closefd=False) as w:
        w.write(_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 300 << 20))
        zero = b"\0" * (1 << 20)
        for _ in range(300):
            w.write(zero)
    path = tmp_path / "vmcore.tar.zst"
    path.write_bytes(stream.getvalue())
    assert path.stat().st_size < 64 * 1024
    rss, proc = peak_rss(command("cas-unpack") + ["--config", site.conf, "-i", "7", str(path)],
                         "/dev/null", site.env)
    rec = json.loads(proc.stdout)
    assert proc.returncode == 1 and rec["error"]["kind"] == "unsafe", proc
    assert "GNU long name" in rec["error"]["message"] and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1  # the error, no narrative before it
    assert rss < 200 * 1024, f"peak RSS {rss} KiB"


def test_pax_header_over_the_cap_is_unsafe(site, tmp_path):
    data = _header("pax", tarfile.XHDTYPE, 2 << 20) + b"\0" * (2 << 20) + b"\0" * 1024
    path = tmp_path / "vmcore.tar.gz"
    path.write_bytes(gzip.compress(data))
    res = site.run("cas-unpack", "-i", "7", path)
    assert res.returncode == 1 and res.record["error"]["kind"] == "unsafe", res
    assert "pax header" in res.record["error"]["message"] and "Traceback" not in res.stderr


def test_pax_hdrcharset_quadratic_case_is_parsed_linearly(site, tmp_path):
    # CVE-2024-6232: digits that never become a record; Python 3.11.7's regex is quadratic
    payload = b"0" * 200000 + b"\n"
    data = _header("pax", tarfile.XHDTYPE, len(payload)) + payload
    data += b"\0" * (-len(data) % 512) + _header("vmcore", tarfile.REGTYPE, 0) + b"\0" * 1024
    path = tmp_path / "vmcore.tar.gz"
    path.write_bytes(gzip.compress(data))
    res = site.run("cas-unpack", "-i", "7", path, timeout=60)
    assert res.returncode == 1 and res.record["error"]["kind"] == "corrupt", res
    assert "pax header" in res.record["error"]["message"] and "Traceback" not in res.stderr


def test_sparse_member_declaring_a_pebibyte_is_refused_before_work(site, tmp_path):
    info = tarfile.TarInfo("vmcore")
    info.size = 0
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[:512])
    block[156:157] = tarfile.GNUTYPE_SPARSE
    block[386:398] = b"\x80" + (1 << 50).to_bytes(11, "big")  # one map entry: offset 1 PiB
    block[398:410] = b"%011o\0" % 1                            # of 1 byte
    block[483:495] = b"\x80" + ((1 << 50) + 1).to_bytes(11, "big")  # realsize
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    data = bytes(block) + b"x" + b"\0" * 511 + b"\0" * 1024
    path = tmp_path / "vmcore.tar"
    path.write_bytes(data)
    res = site.run("cas-unpack", "-i", "7", path, timeout=120)
    assert res.returncode == 1 and res.record["error"]["kind"] == "unsafe", res
    assert "maxCoreSize" in res.record["error"]["message"] and "Traceback" not in res.stderr
    assert [f for f in os.listdir(res.record["workdir"]) if not f.endswith(".log")] == []


def test_core_growing_past_max_core_size_stops(site, tmp_path, config_file):
    conf = config_file(extra="[advanced]\nmaxCoreSize = 1M\n")
    path = tmp_path / "vmcore.gz"
    path.write_bytes(gzip.compress(b"KDUMP   " + b"\0" * (3 << 20)))
    res = run("cas-unpack", "--config", conf, "-i", "7", path, env=site.env)
    assert res.returncode == 1 and res.record["error"]["kind"] == "too-large", res
    assert [f for f in os.listdir(res.record["workdir"]) if not f.endswith(".log")] == []


def test_fifo_without_writer_and_dev_zero_are_bounded(site, tmp_path, config_file):
    conf = config_file(transferDeadline="2")
    fifo = tmp_path / "vmcore.fifo"
    os.mkfifo(fifo)
    res = run("cas-unpack", "--config", conf, "-i", "7", fifo, env=site.env, timeout=60)
    assert res.returncode == 1 and res.record["error"]["kind"] == "timeout", res
    assert "transferDeadline" in res.record["error"]["message"]
    res = run("cas-unpack", "--config", conf, "-i", "7", "/dev/zero", env=site.env, timeout=60)
    assert res.returncode == 1 and res.record["error"]["kind"] == "not-found", res
    assert "a device" in res.record["error"]["message"]


class Trickler:
    """A loopback TCP server that answers one byte every ``every`` seconds, for ever."""

    def __init__(self, first: bytes, every: float = 0.5):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.first, self.every, self.stop = first, every, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        with conn:
            try:
                conn.recv(65536)
                for byte in self.first:
                    conn.sendall(bytes([byte]))
                    if self.stop.wait(self.every):
                        return
                while not self.stop.wait(self.every):
                    conn.sendall(b"x")
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.sock.close()


def test_download_trickle_meets_the_deadline(site, config_file):
    srv = Trickler(b"HTTP/1.0 200 OK\r\nContent-Length: 100000000\r\n\r\n", every=0.01)
    try:
        conf = config_file(transferDeadline="3", downloadTimeout="2")
        res = run("cas-unpack", "--config", conf, "-i", "7",
                  f"http://127.0.0.1:{srv.port}/vmcore.gz", env=site.env, timeout=120)
    finally:
        srv.close()
    assert res.returncode == 1 and res.record["error"]["kind"] == "timeout", res
    assert "transferDeadline" in res.record["error"]["message"]


def test_smtp_trickle_meets_the_deadline(site, config_file):
    srv = Trickler(b"220 slow.example ESMTP\r\n" * 1000, every=0.5)
    try:
        conf = config_file(transferDeadline="3", smtphost=f"127.0.0.1:{srv.port}")
        res = run("cas-mail", "--config", conf, "-e", "a@example.com", input=site.ok,
                  env=site.env, timeout=120)
    finally:
        srv.close()
    assert res.returncode == 1 and res.record["error"]["kind"] == "smtp", res
    assert "not finished within 3 s" in res.record["error"]["message"]
    assert (site.job / "mail.eml").exists()  # the message is kept to send later


# ---------------------------------------------------------------- nothing of the user's is lost

@pytest.mark.parametrize("given", ["mail.eml.gz", "crash.failed.out.gz", "crash.in.xz",
                                   "7.log.gz", "sys.bz2", "mail.eml.part1.gz", "crash.gz"])
def test_core_is_never_named_like_a_cas_file(site, tmp_path, given):
    path = tmp_path / given
    path.write_bytes(gzip.compress(b"KDUMP   " + b"\1" * 10000))
    res = site.run("cas-unpack", "-i", "7", path)
    assert res.returncode == 0, res
    assert os.path.basename(res.record["core"]) == "vmcore"


def test_strip_never_modifies_the_users_original(site, realdump, tmp_path):
    by = {d["variant"]: d for d in realdump["dumps"]}
    dump = by.get("makedumpfile-lzo") or by["makedumpfile-zlib"]
    user = tmp_path / "customer" / "vmcore"
    user.parent.mkdir()
    with open(dump["path"], "rb") as fin, open(user, "wb") as fout:
        fout.write(fin.read())
    digest, inode = sha256(user), os.stat(user).st_ino
    res = site.run("cas-unpack", "-i", "7", "--job", "7", user)  # hard-links our own file
    rec = res.record
    assert os.stat(rec["core"]).st_ino == inode  # the core IS the user's file, linked
    strip = subprocess.run([sys.executable, "-m", "caslib.strip", "--config", site.conf],
                           input=json.dumps(rec) + "\n", capture_output=True, text=True,
                           env=dict(site.env, PYTHONPATH=os.path.join(ROOT, "lib")), timeout=600)
    out = json.loads(strip.stdout)
    assert "Traceback" not in strip.stderr
    assert sha256(user) == digest and os.stat(user).st_ino == inode
    if out["strip"]["replaced"]:
        assert os.stat(out["core"]).st_ino != inode and os.stat(user).st_nlink == 1


def _cas_db_state(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT state, error, pid FROM jobs").fetchall()
    finally:
        conn.close()


def test_sigkill_of_cas_leaves_no_orphans_and_no_running_row(site, tmp_path, config_file):
    pids = tmp_path / "pids"
    hang = tmp_path / "hanging-unpack"
    hang.write_text("#!/bin/sh\n"
                    f"echo $$ >> {pids}\n"
                    f"echo '{json.dumps(site.ok)}'\n"
                    "exec sleep 600\n")
    hang.chmod(0o755)
    conf = config_file(extra=f"[pipeline]\nunpack = {hang}\n")
    proc = subprocess.Popen(command("cas") + ["--config", conf, "-i", "7", "-f", "x"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=site.env)
    for _ in range(300):
        if pids.exists() and pids.read_text().strip() and _cas_db_state(tmp_path / "cas.db"):
            break
        time.sleep(0.1)
    step = int(pids.read_text().split()[0])
    assert _cas_db_state(tmp_path / "cas.db")[0][0] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        if not os.path.exists(f"/proc/{step}") or \
                " Z " in open(f"/proc/{step}/stat").read().rsplit(")", 1)[-1][:3]:
            break
        time.sleep(0.1)
    alive = os.path.exists(f"/proc/{step}") and \
        open(f"/proc/{step}/stat").read().rsplit(")", 1)[-1].split()[0] != "Z"
    if alive:
        os.kill(step, signal.SIGKILL)
    assert not alive, "a step outlived the SIGKILL'd cas"
    res = run("cas-admin", "--config", conf, env=site.env)  # any later cas-admin reaps
    state, error, _ = _cas_db_state(tmp_path / "cas.db")[0]
    # the queue's one lost-job rule: a plain cas run whose process is gone is failed
    assert state == "failed" and "is gone" in error, (state, error, res)


def test_killed_extraction_staging_is_reused_and_counted(tmp_path):
    from caslib.shelf import extcache
    cache = extcache.Cache(str(tmp_path / "debugs"), limit=1)
    key = "ab" * 16
    stale = tmp_path / "debugs" / ".tmp" / f"{key}.99999999.1"
    stale.mkdir()
    (stale / "vmlinux").write_bytes(os.urandom(100000))
    assert cache.staging_bytes() >= 100000
    with cache.locked([key]):
        fresh = cache.stage(key)
    assert not stale.exists() and os.path.isdir(fresh)


@pytest.mark.parametrize("line,key", [
    ("workDirectory = relative/work", "workDirectory"),
    ("mailFrom = a@example.com\n  Bcc: victim@example.com", "mailFrom"),
    ("kernels = /tmp/k2", "kernels"),            # set twice
    ("buffersize = 1", "buffersize"),
    ("buffersize = 900G", "buffersize"),
])
def test_config_errors_at_load(tmp_path, casenv, line, key):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[settings]\nkernels = {tmp_path}/k\nworkDirectory = {tmp_path}/w\n"
                    f"database = {tmp_path}/db\n"
                    + (line.replace("buffersize", "[advanced]\nbuffersize") if
                       line.startswith("buffersize") else line) + "\n")
    for argv in (["cas-ident", "/dev/null"], ["cas-admin", "--list"]):
        res = run(argv[0], "--config", conf, *argv[1:], env=casenv)
        assert res.returncode == 2 and res.stdout == "", res
        assert key in res.stderr and len(res.stderr.splitlines()) == 1, res
        assert "Traceback" not in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another user")
def test_no_magic_bytes_of_a_file_the_caller_does_not_own(site, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"root:*:1:" + b"x" * 5000)
    os.chown(other, 65534, 65534)
    os.chmod(other, 0o600)
    res = site.run("cas-ident", other)
    rec = clean_error(res, "not-a-dump")
    assert "72 6f 6f 74" not in res.stderr + json.dumps(rec) and "starts with" not in res.stderr
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"root:*:1:" + b"x" * 5000)
    res = site.run("cas-ident", mine)
    assert "72 6f 6f 74" in res.stderr  # the caller's own file: the magic helps


def test_findkernel_is_not_blocked_by_an_exclusive_writer(site, tmp_path):
    run("cas-admin", "--config", site.conf, env=site.env)  # create the index
    db = sqlite3.connect(tmp_path / "cas.db")
    db.execute("PRAGMA locking_mode = EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    db.execute("DELETE FROM servers")
    try:
        res = site.run("cas-findkernel", "--release", "6.1.0-1-amd64", timeout=25)
    finally:
        db.rollback()
        db.close()
    rec = clean_error(res, "busy", "locked")
    assert "cas-admin" in rec["error"]["message"]


def test_cas_file_named_like_an_option_is_a_file(site, tmp_path, config_file):
    weird = tmp_path / "-rf"
    weird.write_bytes(gzip.compress(b"not a dump at all " * 100))
    res = run("cas", "--config", site.conf, "-i", "7", "--file=-rf", "--json",
              env=site.env, cwd=tmp_path, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "unrecognized arguments" not in res.stderr and "-rf" in res.stdout
    assert weird.exists()
