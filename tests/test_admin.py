"""cas-admin through the executable: indexing real packages (rpmbuild, dpkg-deb), bad input, purge."""

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

import kernelshelf
from conftest import command, run
from caslib import db
from caslib.packages import deb, read


@pytest.fixture(scope="module")
def shelf():
    return kernelshelf.build()


@pytest.fixture
def own_shelf(shelf, tmp_path):
    """A private copy of the test shelf that a test may change."""
    dest = tmp_path / "kernels"
    shutil.copytree(shelf["dir"], dest)
    return dest


def _list(conf, env):
    res = run("cas-admin", "--config", conf, "--list", env=env)
    assert res.returncode == 0, res
    return res.records


def _rpm_qpl(path):
    return subprocess.run(["rpm", "-qpl", "--nosignature", "--nodigest", path], capture_output=True,
                          text=True, check=True).stdout.split()


def test_index_every_layout(shelf, config_file, casenv):
    conf = config_file(kernels=shelf["dir"])
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    assert "18 packages seen, 18 indexed, 0 unchanged, 1 skipped (no kernel image), 0 errors" \
        in res.stderr
    assert res.stdout == ""
    kernels = _list(conf, casenv)
    got = {(k["release"], k["machine"]) for k in kernels}
    assert got == {
        ("2.6.9-78.18.EL", "i686"), ("2.6.9-78.18.ELsmp", "i686"), ("2.6.9-78.18.ELhugemem", "i686"),
        ("2.6.9-78.18.EL", "x86_64"), ("2.6.9-78.18.ELsmp", "x86_64"),
        ("2.6.9-78.18.ELlargesmp", "x86_64"), ("2.6.18-194.el5xen", "x86_64"),
        ("2.6.18-194.el5", "x86_64"), ("3.10.0-1160.el7.x86_64", "x86_64"),
        ("3.10.0-1160.el7.x86_64.debug", "x86_64"), ("5.14.0-362.8.1.el9_3.x86_64", "x86_64"),
        ("5.14.0-362.8.1.el9_3.x86_64+debug", "x86_64"), ("5.14.0-362.8.1.el9_3.x86_64+rt", "x86_64"),
        ("5.14.0-362.8.1.el9_3.aarch64+64k", "aarch64"), ("5.14.0-362.8.1.el9_3.aarch64", "aarch64"),
        ("5.14.21-150500.55.28-default", "x86_64"), ("6.5.6-300.fc39.x86_64", "x86_64"),
        ("5.14.0-362.24.1.el9_3.x86_64", "x86_64"), ("6.1.0-18-cloud-amd64", "x86_64"),
        ("6.1.0-18-amd64", "x86_64"), ("5.15.0-91-generic", "x86_64")}
    by_release = {(k["release"], k["machine"]): k for k in kernels}
    # every vmlinux member is one rpm -qpl lists
    for k in kernels:
        if k["format"] == "rpm":
            assert k["vmlinux"] in _rpm_qpl(k["package"]), k
    suse = by_release[("5.14.21-150500.55.28-default", "x86_64")]
    assert suse["vmlinux"] == "/usr/lib/debug/boot/vmlinux-5.14.21-150500.55.28-default.debug"
    assert suse["payload"] == "bzip2" and suse["flavour"] == "default"
    assert suse["modules_prefix"] == "/usr/lib/debug/lib/modules/5.14.21-150500.55.28-default/"
    el4 = by_release[("2.6.9-78.18.ELsmp", "i686")]
    assert el4["modules"] == 2 and el4["flavour"] == "smp" and el4["name"] == "kernel-debuginfo"
    assert by_release[("2.6.18-194.el5", "x86_64")]["modules_prefix"] is None
    assert by_release[("3.10.0-1160.el7.x86_64", "x86_64")]["build_id"] == \
        "3c0ffee0000000000000000000000000000000ab"
    assert by_release[("6.5.6-300.fc39.x86_64", "x86_64")]["build_id"] == \
        "9a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
    assert by_release[("5.14.0-362.8.1.el9_3.x86_64", "x86_64")]["payload"] == "zstd"
    odd = by_release[("5.14.0-362.24.1.el9_3.x86_64", "x86_64")]
    assert odd["package"].endswith("odd/kernel-debuginfo-9.9.9-1.x86_64.rpm")
    for rel in ("6.1.0-18-cloud-amd64", "6.1.0-18-amd64", "5.15.0-91-generic"):
        deb = by_release[(rel, "x86_64")]
        assert deb["format"] == "deb"
        assert deb["vmlinux"] == f"/usr/lib/debug/boot/vmlinux-{rel}"
        assert deb["build_id"] == shelf["elf_build_id"]  # what readelf -n says
        assert deb["modules"] == 2
        listing = subprocess.run(["dpkg-deb", "-c", deb["package"]], capture_output=True,
                                 text=True, check=True).stdout
        assert "." + deb["vmlinux"] in listing
    assert by_release[("5.15.0-91-generic", "x86_64")]["payload"] == "zstd"
    assert by_release[("6.1.0-18-amd64", "x86_64")]["payload"] == "gzip"
    assert not any("xen-syms" in k["vmlinux"] for k in kernels)


def test_incremental_reindex(own_shelf, config_file, casenv):
    conf = config_file(kernels=str(own_shelf))
    assert run("cas-admin", "--config", conf, env=casenv).returncode == 0
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    assert "18 packages seen, 0 indexed, 18 unchanged" in res.stderr
    # a changed package is reopened, a removed one dropped
    changed = own_shelf / "kernel-debuginfo-6.5.6-300.fc39.x86_64.rpm"
    os.utime(changed, (time.time() + 5, time.time() + 5))
    os.unlink(own_shelf / "kernel-rt-debuginfo-5.14.0-362.8.1.el9_3.x86_64.rpm")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    assert "17 packages seen, 1 indexed, 16 unchanged" in res.stderr
    assert "1 dropped" in res.stderr
    releases = {k["release"] for k in _list(conf, casenv)}
    assert "5.14.0-362.8.1.el9_3.x86_64+rt" not in releases
    assert "6.5.6-300.fc39.x86_64" in releases


def test_symlinks_followed_loops_and_excludes(shelf, tmp_path, config_file, casenv):
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    os.symlink(shelf["dir"], kernels / "nfs")
    os.symlink(kernels, kernels / "loop")
    conf = config_file(kernels=str(kernels), regexExcludeDir="debian odd",
                       regexExcludeFile="*common*")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    assert "13 packages seen" in res.stderr
    assert "symbolic link loop" in res.stderr
    kernels_listed = _list(conf, casenv)
    assert all(k["package"].startswith(str(kernels / "nfs") + "/") for k in kernels_listed)
    assert not any(k["format"] == "deb" for k in kernels_listed)


def test_rpm_filter_posix_basic(shelf, config_file, casenv):
    conf = config_file(kernels=shelf["dir"], regexType="posix-basic",
                       rpmFilter=r".*/kernel-debuginfo-\(2\|3\)\..*\.rpm",
                       debFilter=r".*-dbgsym_.*\.ddeb")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    names = sorted({os.path.basename(k["package"]) for k in _list(conf, casenv)})
    assert names == ["kernel-debuginfo-2.6.18-194.el5.x86_64.rpm",
                     "kernel-debuginfo-2.6.9-78.18.EL.i686.rpm",
                     "kernel-debuginfo-2.6.9-78.18.EL.x86_64.rpm",
                     "kernel-debuginfo-3.10.0-1160.el7.x86_64.rpm",
                     "linux-image-unsigned-5.15.0-91-generic-dbgsym_5.15.0-91.101_amd64.ddeb"]


def test_bad_filter_is_one_line(config_file, casenv):
    conf = config_file(regexType="posix-basic", rpmFilter=r".*\(kernel.*\.rpm")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 1
    assert "rpmFilter" in res.stderr and "unmatched" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_corrupt_truncated_and_foreign_packages(shelf, own_shelf, config_file, casenv):
    good = shelf["rpms"][4]
    data = open(good, "rb").read()
    (own_shelf / "kernel-debuginfo-trunc-1-1.x86_64.rpm").write_bytes(data[: len(data) - 100])
    (own_shelf / "kernel-debuginfo-header-1-1.x86_64.rpm").write_bytes(data[:2000])
    (own_shelf / "kernel-debuginfo-garbage-1-1.x86_64.rpm").write_bytes(os.urandom(5000))
    (own_shelf / "kernel-debuginfo-empty-1-1.x86_64.rpm").write_bytes(b"")
    deb = open(shelf["debs"][0], "rb").read()
    (own_shelf / "linux-image-9-cut-dbg_1_amd64.deb").write_bytes(deb[: len(deb) // 2])
    conf = config_file(kernels=str(own_shelf))
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 1, res
    assert "23 packages seen, 18 indexed" in res.stderr and "5 errors" in res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    for name, why in [("-trunc-1-1", "truncated RPM"), ("-header-1-1", "truncated RPM"),
                      ("-garbage-1-1", "not an RPM"), ("-empty-1-1", "empty file"),
                      ("-9-cut-dbg", "truncated Debian package")]:
        hit = [line for line in lines if name in line]
        assert hit and why in hit[0], (name, lines)
    assert len(_list(conf, casenv)) == 21
    # unchanged bad packages are not reopened but still reported
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 1
    assert "0 indexed, 23 unchanged" in res.stderr and "5 errors" in res.stderr


def test_member_paths_climbing_out_are_ignored(tmp_path):
    """A .deb whose data.tar holds ../ names (written by tarfile, listed by GNU tar)."""
    import io
    import tarfile
    root = tmp_path / "pkg"
    root.mkdir()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tf:
        for name in ("./usr/lib/debug/boot/vmlinux-6.1.0-9-amd64",
                     "./usr/lib/debug/../../../../etc/evil"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, io.BytesIO(b"\x7fELF"))
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as tf:
        text = b"Package: linux-image-6.1.0-9-amd64-dbg\nVersion: 6.1.1-1\nArchitecture: amd64\n"
        info = tarfile.TarInfo("./control")
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    (root / "debian-binary").write_bytes(b"2.0\n")
    (root / "control.tar.gz").write_bytes(control.getvalue())
    (root / "data.tar.gz").write_bytes(data.getvalue())
    deb_path = tmp_path / "x.deb"
    subprocess.run(["ar", "rc", str(deb_path), "debian-binary", "control.tar.gz", "data.tar.gz"],
                   cwd=root, check=True)
    listing = subprocess.run(["dpkg-deb", "-c", str(deb_path)], capture_output=True, text=True).stdout
    assert "../../../../etc/evil" in listing  # the independent witness
    pkg = deb.read(str(deb_path))
    assert [m.path for m in pkg.members] == ["/usr/lib/debug/boot/vmlinux-6.1.0-9-amd64"]
    assert any("climbs out" in w for w in pkg.warnings)


def test_missing_kernels_directory(tmp_path, config_file, casenv):
    conf = config_file()
    shutil.rmtree(tmp_path / "kernels")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 1
    assert f"kernels directory {tmp_path / 'kernels'} does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_database_that_is_not_sqlite(tmp_path, config_file, casenv):
    bad = tmp_path / "cas.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    conf = config_file()
    for args in ([], ["--list"]):
        res = run("cas-admin", "--config", conf, *args, env=casenv)
        assert res.returncode == 1, res
        assert f"{bad}: not an SQLite database" in res.stderr
        assert "Traceback" not in res.stderr
    assert bad.read_bytes().startswith(b"this is not")


def test_another_cas_admin_waits_then_gives_up(tmp_path, config_file, casenv):
    conf = config_file()
    db.connect(str(tmp_path / "cas.db")).close()
    with open(str(tmp_path / "cas.db") + ".admin-lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("4242\n")
        fh.flush()
        start = time.monotonic()
        res = run("cas-admin", "--config", conf, "--wait", "1", env=casenv)
        waited = time.monotonic() - start
    assert res.returncode == 1
    assert "another cas-admin (pid 4242)" in res.stderr and "gave up after 1 s" in res.stderr
    assert waited >= 1


def test_locked_database_is_a_clear_message(tmp_path, config_file, casenv):
    conf = config_file()
    path = str(tmp_path / "cas.db")
    holder = db.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        res = run("cas-admin", "--config", conf, "--wait", "0.5", env=casenv)
    finally:
        holder.rollback()
        holder.close()
    assert res.returncode == 1
    assert f"{path}: database is locked by another process" in res.stderr
    assert "Traceback" not in res.stderr


def test_schema_from_a_newer_cas_is_refused(tmp_path):
    path = str(tmp_path / "cas.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(db.DatabaseError, match="schema version 99 is newer"):
        db.connect(path)


def test_connect_creates_schema_and_wal(tmp_path):
    path = tmp_path / "sub" / "cas.db"
    conn = db.connect(str(path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"packages", "kernels", "jobs", "servers"} <= tables
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO jobs(job, workdir, state, started) VALUES ('j', '/w', 'odd', 1)")


def test_list_on_empty_index_prints_nothing(config_file, casenv):
    res = run("cas-admin", "--config", config_file(), "--list", env=casenv)
    assert res.returncode == 0 and res.stdout == ""


def test_usage_errors_exit_2(config_file, casenv):
    for args in (["--dry-run"], ["--list", "--purge"], ["--bogus"]):
        res = run("cas-admin", "--config", config_file(), *args, env=casenv)
        assert res.returncode == 2, (args, res)
        assert len(res.stderr.strip().splitlines()) == 1


def test_server_flag_is_wired(config_file, casenv):
    """--server hands over to caslib.crashrun.servers (the cas-crash engineer's); no traceback either way."""
    proc = subprocess.run(command("cas-admin") + ["--config", config_file(), "--server"],
                          capture_output=True, text=True, env=casenv, timeout=120)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 1)
    assert "packages seen" not in proc.stderr  # --server does not index


# --- purge -----------------------------------------------------------------------------------

def _job(work, job, stamp):
    path = work / job / stamp
    path.mkdir(parents=True)
    (path / "vmcore").write_bytes(b"x" * 100)
    return path


@pytest.fixture
def jobs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    made = {
        "old_by_name": _job(work, "case1", "2020.01.02.03.04.05"),
        "old_by_name_2": _job(work, "case1", "2020.01.02.03.04.05-2"),
        "recent": _job(work, "case2", time.strftime("%Y.%m.%d.%H.%M.%S")),
        "old_by_row": _job(work, "case3", time.strftime("%Y.%m.%d.%H.%M.%S")),
        "young_by_row": _job(work, "case4", "2019.05.05.05.05.05"),
        "running": _job(work, "case5", "2018.01.01.00.00.00"),
        "stale_running": _job(work, "case6", "2018.01.01.00.00.00"),
        "not_a_job": _job(work, "case7", "notes"),
    }
    outside = tmp_path / "outside" / "2001.01.01.00.00.00"
    outside.mkdir(parents=True)
    (outside / "precious").write_text("keep")
    (work / "case8").mkdir()
    os.symlink(outside, work / "case8" / "2001.01.01.00.00.00")
    os.symlink(tmp_path / "outside", work / "linkjob")
    conn = db.connect(str(tmp_path / "cas.db"))
    old = time.time() - 400 * 86400
    with conn:
        for key, started, state, pid in [("old_by_row", old, "done", None),
                                         ("young_by_row", time.time() - 3600, "failed", None),
                                         ("running", old, "running", os.getpid()),
                                         ("stale_running", old, "running", 2 ** 22 + 7)]:
            conn.execute("INSERT INTO jobs(job, workdir, state, started, pid) VALUES (?,?,?,?,?)",
                         (key, str(made[key]), state, started, pid))
        conn.execute("INSERT INTO jobs(job, workdir, state, started) VALUES (?,?,?,?)",
                     ("gone", str(work / "gone" / "2019.01.01.00.00.00"), "done", old))
    conn.close()
    return made, outside


def test_purge_dry_run_lists_exactly_what_would_go(jobs, config_file, casenv):
    made, outside = jobs
    conf = config_file(extra="[maintenance]\npurgeLimit = 30\n")
    res = run("cas-admin", "--config", conf, "--purge", "--dry-run", env=casenv)
    assert res.returncode == 0, res
    listed = [r["workdir"] for r in res.records]
    assert all(r["action"] == "would-purge" for r in res.records)
    expected = {str(made[k]) for k in ("old_by_name", "old_by_name_2", "old_by_row", "stale_running")}
    assert set(listed) == expected and len(listed) == 4
    assert all(p.exists() for p in made.values())
    assert "would purge 4 job directories" in res.stderr


def test_purge_removes_old_jobs_and_rows_only(jobs, tmp_path, config_file, casenv):
    made, outside = jobs
    conf = config_file(extra="[maintenance]\npurgeLimit = 30\n")
    res = run("cas-admin", "--config", conf, "--purge", env=casenv)
    assert res.returncode == 0, res
    gone = {"old_by_name", "old_by_name_2", "old_by_row", "stale_running"}
    for key, path in made.items():
        assert path.exists() == (key not in gone), key
    assert not (tmp_path / "work" / "case1").exists()  # emptied job directory removed too
    assert (outside / "precious").read_text() == "keep"
    assert os.path.islink(tmp_path / "work" / "case8" / "2001.01.01.00.00.00")
    conn = sqlite3.connect(str(tmp_path / "cas.db"))
    rows = {r[0] for r in conn.execute("SELECT job FROM jobs")}
    assert rows == {"young_by_row", "running"}
    assert "purged 4 job directories" in res.stderr


def test_purge_removes_old_uploads_no_job_waits_for(jobs, tmp_path, config_file, casenv):
    # cas-web streams an upload into workDirectory/.uploads/<time-random>/ and queues a
    # job on it; the job directory is made from it, so the upload is cas-admin's to purge
    up = tmp_path / "work" / ".uploads"

    def upload(name, days):
        where = up / name
        where.mkdir(parents=True)
        (where / "vmcore.xz").write_bytes(b"not really xz")
        then = time.time() - days * 86400
        os.utime(where, (then, then))
        return where

    old = upload("20200101000000-aaaaaaaaaaaa", 400)
    young = upload(time.strftime("%Y%m%d%H%M%S-") + "bbbbbbbbbbbb", 0)
    waiting = upload("20200101000000-cccccccccccc", 400)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep")
    os.symlink(elsewhere, up / "20200101000000-dddddddddddd")
    conn = db.connect(str(tmp_path / "cas.db"))
    with conn:
        conn.execute("INSERT INTO jobs(job, identifier, source, state, submitted) "
                     "VALUES (?, ?, ?, 'queued', ?)",
                     ("q", "q", str(waiting / "vmcore.xz"), time.time() - 400 * 86400))
        # a job cancelled while queued: a row without a job directory, also old
        conn.execute("INSERT INTO jobs(job, identifier, source, state, submitted) "
                     "VALUES ('c', 'c', '/nowhere', 'cancelled', ?)", (time.time() - 400 * 86400,))
    conn.close()
    conf = config_file(extra="[maintenance]\npurgeLimit = 30\n")
    res = run("cas-admin", "--config", conf, "--purge", "--dry-run", env=casenv)
    assert res.returncode == 0, res
    listed = [r for r in res.records if "upload" in r]
    assert [r["upload"] for r in listed] == [str(old)]
    assert listed[0]["action"] == "would-purge" and listed[0]["age_from"] == "modification time"
    assert old.exists() and "would purge 4 job directories and 1 upload older" in res.stderr
    res = run("cas-admin", "--config", conf, "--purge", env=casenv)
    assert res.returncode == 0, res
    assert not old.exists() and young.exists() and waiting.exists()
    assert os.path.islink(up / "20200101000000-dddddddddddd")
    assert (elsewhere / "precious").read_text() == "keep"
    assert "purged 4 job directories and 1 upload older" in res.stderr
    conn = sqlite3.connect(str(tmp_path / "cas.db"))
    assert {r[0] for r in conn.execute("SELECT job FROM jobs")} == {"young_by_row", "running", "q"}


def test_auto_purge_on_index_run(jobs, config_file, casenv):
    made, _ = jobs
    conf = config_file(extra="[maintenance]\npurgeLimit = 30\nautoPurge = Yes\n")
    res = run("cas-admin", "--config", conf, env=casenv)
    assert res.returncode == 0, res
    assert "packages seen" in res.stderr and "purged 4 job directories" in res.stderr
    assert not made["old_by_name"].exists() and made["recent"].exists()


def test_unreadable_directory_keeps_what_was_indexed(own_shelf, tmp_path, monkeypatch):
    """A directory that cannot be read (NFS hiccup, permissions) is reported and its packages kept.

    Run in process: as root, chmod cannot make a directory unreadable, so os.scandir is made
    to fail for that one directory, the way it fails with EACCES.
    """
    from caslib import config
    from caslib.shelf import index as index_mod, walk as shelf_mod
    conf = tmp_path / "c.conf"
    conf.write_text(f"[settings]\nkernels = {own_shelf}\nworkDirectory = {tmp_path / 'w'}\n"
                    f"database = {tmp_path / 'c.db'}\n")
    cfg = config.load(str(conf))
    conn = db.connect(cfg.database)
    first = index_mod.update(cfg, conn)
    assert first.indexed == 18
    real_scandir = os.scandir
    blocked = str(own_shelf / "debian")

    def scandir(path):
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(shelf_mod.os, "scandir", scandir)
    os.unlink(own_shelf / "odd" / "kernel-debuginfo-9.9.9-1.x86_64.rpm")
    second = index_mod.update(cfg, conn)
    assert (second.seen, second.dropped) == (14, 1)
    kept = {r[0] for r in conn.execute("SELECT path FROM packages")}
    assert {p for p in kept if p.startswith(blocked + "/")} == {
        os.path.join(blocked, os.path.basename(p)) for p in shelf_mod_debs(own_shelf)}


def shelf_mod_debs(root):
    return [p for p in os.listdir(root / "debian")]


def test_reader_bug_is_counted_not_fatal(own_shelf, tmp_path, monkeypatch):
    from caslib import config
    from caslib.shelf import index as index_mod
    conf = tmp_path / "c.conf"
    conf.write_text(f"[settings]\nkernels = {own_shelf}\nworkDirectory = {tmp_path / 'w'}\n"
                    f"database = {tmp_path / 'c.db'}\n")
    cfg = config.load(str(conf))
    real = read.read_package

    def flaky(path):
        if path.endswith(".ddeb"):
            raise RuntimeError("boom")
        return real(path)

    monkeypatch.setattr(index_mod.read, "read_package", flaky)
    summary = index_mod.update(cfg, db.connect(cfg.database))
    assert (summary.seen, summary.errors, summary.indexed) == (18, 1, 17)


def test_schema_migrates_forward_keeping_rows(tmp_path):
    path = str(tmp_path / "cas.db")
    conn = sqlite3.connect(path)
    for statement in db.MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO jobs(job, workdir, state, started) VALUES ('j', '/w/j/1', 'done', 1)")
    conn.commit()
    conn.close()
    conn = db.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == max(db.MIGRATIONS)
    assert conn.execute("SELECT job FROM jobs").fetchall() == [("j",)]
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"kernels_base", "signatures_signature"} <= indexes


def test_progress_only_on_a_terminal(shelf, config_file, casenv):
    import pty
    conf = config_file(kernels=shelf["dir"])
    master, slave = pty.openpty()
    proc = subprocess.Popen(command("cas-admin") + ["--config", conf], stdout=subprocess.PIPE,
                            stderr=slave, env=casenv)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    tty_text = b"".join(chunks).decode()
    assert "indexing: " in tty_text and "packages seen" in tty_text
    piped = run("cas-admin", "--config", conf, env=casenv)
    assert "indexing: " not in piped.stderr and "\r" not in piped.stderr
