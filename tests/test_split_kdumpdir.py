"""Real split dumps (makedumpfile --split, zlib and lzo) and real kdump directories through
the whole pipeline (cas): every part kept and given to crash, vmcore-dmesg.txt kept, the
other files named in the job log.  The parts and vmcore-dmesg.txt come from the real-dump
builder's "split" step (makedumpfile --split / --dump-dmesg; crash opened each set)."""

import email
import email.policy
import os
import subprocess

import pytest

from conftest import SmtpCollector, run


@pytest.fixture(scope="module")
def smtpd():
    with SmtpCollector() as server:
        yield server


@pytest.fixture(scope="module")
def site(realdump, tmp_path_factory, smtpd):
    top = tmp_path_factory.mktemp("site")
    shelf = top / "kernels"
    shelf.mkdir()
    rpm = next(r for r in realdump["rpms"] if r["payload"] == "zstd" and not r.get("decoy"))
    os.symlink(rpm["path"], shelf / os.path.basename(rpm["path"]))
    conf = top / "cas.conf"
    conf.write_text(
        "[settings]\n"
        f"kernels = {shelf}\nworkDirectory = {top / 'work'}\ndatabase = {top / 'cas.db'}\n"
        f"debugs = {top / 'debugs'}\nsmtphost = {smtpd.hostport}\nmailFrom = cas@example.org\n")
    assert run("cas-admin", "--config", conf).returncode == 0
    return {"conf": str(conf), "top": top}


def kdump_directory(root, parts, dmesg, extra=None):
    """/var/crash/<host>-<date>/ as kdump leaves it, from the builder's real files."""
    d = root / "127.0.0.1-2026-12-03-19:49:39"
    d.mkdir()
    for p in parts:
        os.link(p, d / os.path.basename(p))
    os.link(dmesg, d / "vmcore-dmesg.txt")
    for name, text in (extra or {}).items():
        (d / name).write_text(text)
    return d


def check_split_job(res, realdump, count, smtpd, before):
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert "error" not in rec, rec["error"]
    assert rec["kernel"]["release"] == realdump["kernel"]["release"]
    assert len(rec["cores"]) == count and rec["split"]["count"] == count
    assert rec["split"]["complete"] is True
    for core in rec["cores"]:
        assert core.startswith(rec["workdir"] + os.sep) and core in rec["crash"]["command"] \
            or core in open(os.path.join(rec["workdir"], "crash")).read()
    with open(os.path.join(rec["workdir"], "crash")) as fh:
        wrapper = fh.read()
    assert all(os.path.basename(c) in wrapper for c in rec["cores"])
    with open(os.path.join(rec["workdir"], "crash.out")) as fh:
        assert fh.read().count("[PARTIAL DUMP]") == count  # crash opened every part
    with open(os.path.join(rec["workdir"], "traceback")) as fh:
        assert "sysrq_handle_crash" in fh.read()
    assert rec["crash"]["panic"]["message"] == realdump["kernel"]["panic"]
    # no CRASHTIME and a zero header time: the time comes from crash's sys DATE
    assert rec["kernel"]["crash_time"] and rec["crash"]["crash_time_from"] == "crash sys DATE"
    with open(os.path.join(rec["workdir"], f"{rec['job']}.log")) as fh:
        log = fh.read()
    assert f"split dump in {count} parts" in log
    msg = email.message_from_bytes(smtpd.messages[before].content, policy=email.policy.default)
    body = msg.get_body(("plain",)).get_content()
    assert f"split by makedumpfile --split into {count} parts" in body
    assert "Crash time:  unknown" not in body
    return rec, log


def test_split_lzo_kdump_directory_through_cas(realdump, site, smtpd, tmp_path):
    s = realdump["split"]["sets"]["split-lzo"]
    d = kdump_directory(tmp_path, s["paths"], realdump["split"]["dmesg"],
                        {"kexec-dmesg.log": "kdump: saving vmcore\n",
                         "vmcore.flat": "not a dump, whatever its name says\n"})
    before = len(smtpd.messages)
    res = run("cas", "--config", site["conf"], "-i", "dir1", "-f", str(d), "-e",
              "user@localhost", "--json")
    rec, log = check_split_job(res, realdump, len(s["paths"]), smtpd, before)
    assert rec["layers"] == ["directory"]
    assert sorted(rec["ignored"]) == ["kexec-dmesg.log", "vmcore.flat"]
    assert "not used: kexec-dmesg.log" in log and "not used: vmcore.flat" in log
    with open(rec["vmcore_dmesg"]) as fh:
        assert "sysrq triggered crash" in fh.read()
    assert os.path.dirname(rec["vmcore_dmesg"]) == rec["workdir"]


def test_split_zlib_parts_in_a_tarball_through_cas(realdump, site, smtpd, tmp_path):
    s = realdump["split"]["sets"]["split-zlib"]
    d = kdump_directory(tmp_path, s["paths"], realdump["split"]["dmesg"])
    tarball = tmp_path / "crash-dir.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tmp_path), d.name], check=True)
    before = len(smtpd.messages)
    res = run("cas", "--config", site["conf"], "-i", "tar1", "-f", str(tarball), "-e",
              "user@localhost", "--strip", "--json")
    rec, _log = check_split_job(res, realdump, len(s["paths"]), smtpd, before)
    assert rec["layers"] == ["gzip", "tar"]
    assert rec["strip"]["replaced"] is False and "split" in rec["strip"]["reason"]
    assert os.path.basename(rec["vmcore_dmesg"]) == "vmcore-dmesg.txt"


def test_kdump_directory_with_one_vmcore_chosen_by_format(realdump, site, tmp_path):
    dump = next(d for d in realdump["dumps"] if d["variant"] == "makedumpfile-lzo")
    d = tmp_path / "host-2026-12-03"
    d.mkdir()
    os.link(dump["path"], d / "dump.bin")              # the dump, under an odd name
    (d / "vmcore").write_text("an empty-looking note\n")  # the name lies
    os.link(realdump["split"]["dmesg"], d / "vmcore-dmesg.txt")
    res = run("cas-unpack", "--config", site["conf"], "-i", "dir2", str(d))
    assert res.returncode == 0, res.stderr
    rec = res.record
    assert os.path.basename(rec["core"]) == "dump.bin" and "cores" not in rec
    assert rec["ignored"] == ["vmcore"]
    res = run("cas-ident", "--config", site["conf"], input=[rec])
    assert res.record["kernel"]["release"] == realdump["kernel"]["release"]


def test_directory_without_a_dump_is_refused(site, tmp_path):
    d = tmp_path / "empty-crash"
    d.mkdir()
    (d / "vmcore-dmesg.txt").write_text("[ 1.0] hello\n")
    res = run("cas-unpack", "--config", site["conf"], "-i", "dir3", str(d))
    assert res.returncode == 1 and res.record["error"]["kind"] == "no-core"
    assert "Traceback" not in res.stderr and str(d) in res.record["error"]["message"]


def test_dump_cut_by_makedumpfile_is_named_and_incomplete(realdump):
    """makedumpfile stopped by a file size limit (a real cut dump): crash still reads its
    headers (--osrelease), cas-ident names the kernel and says incomplete."""
    cut = realdump["split"]["cut"]
    assert cut["makedumpfile_said"]  # makedumpfile itself said it could not write
    out = subprocess.run(["crash", "--osrelease", cut["path"]], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == realdump["kernel"]["release"], out
    res = run("cas-ident", cut["path"])
    assert res.returncode == 0, res.stderr
    assert res.record["kernel"]["release"] == realdump["kernel"]["release"]
    assert res.record["kernel"]["hostname"] == realdump["kernel"]["hostname"]
    assert res.record["ident"]["incomplete"] is True
    assert "never written" in res.record["ident"]["warnings"][0]


def test_real_split_parts_named_one_by_one_and_together(realdump):
    paths = realdump["split"]["sets"]["split-zlib"]["paths"]
    alone = run("cas-ident", paths[1]).record
    assert alone["kernel"]["release"] == realdump["kernel"]["release"]
    assert alone["split"]["index"] is None and alone["split"]["start_pfn"] > 0
    assert "incomplete" not in alone["ident"]
    together = run("cas-ident", *reversed(paths))
    assert together.returncode == 0 and len(together.records) == 1
    assert together.record["cores"] == paths and together.record["split"]["count"] == len(paths)
