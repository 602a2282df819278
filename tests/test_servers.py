"""The server list (caslib.crashrun.servers, behind cas-admin --server) and cas-crash on a server,
against a real sshd on a loopback port (tests/sshd_fixture.py).

known_hosts files are written by ssh-keyscan and ssh-keygen -H (real tools);
the few pattern lines written by hand are checked with ssh-keygen -F, which
reads them as ssh does.
"""

import getpass
import os
import platform
import subprocess

import pytest

from conftest import run
from sshd_fixture import free_port, keygen, sshd  # noqa: F401  (fixture)
from caslib import db
from caslib.crashrun import servers


def test_split_host():
    assert servers.split_host("a.example") == ("a.example", 22)
    assert servers.split_host("a.example:2222") == ("a.example", 2222)
    assert servers.split_host("[10.0.0.1]:2200") == ("10.0.0.1", 2200)
    assert servers.split_host("[fe80::1]") == ("fe80::1", 22)
    assert servers.split_host("2001:db8::7") == ("2001:db8::7", 22)
    for bad in ("-oProxyCommand=x", "a:0", "a:99999", "[a", "[a]x", ":22"):
        with pytest.raises(ValueError):
            servers.split_host(bad)


def test_family():
    assert servers.family("i386") == servers.family("i686") == "i686"
    assert servers.family("arm64") == servers.family("aarch64")
    assert servers.family("ppc64le") != servers.family("ppc64")
    assert servers.family(None) is None
    # one normaliser with the index's: package arches and crash's spellings join too
    assert servers.family("x86-64") == servers.family("amd64") == servers.family("x86_64")
    assert servers.family("athlon") == servers.family("x86") == "i686"


def test_known_hosts_parsing(tmp_path, sshd):  # noqa: F811
    good = sshd.known_hosts_line()
    keytype, key = good.split()[1:3]
    hashed = tmp_path / "hashed"
    hashed.write_text(f"secret.example {keytype} {key}\n[hidden.example]:2200 {keytype} {key}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True,
                   capture_output=True)
    hashed_lines = hashed.read_text().splitlines()
    assert all(line.startswith("|1|") for line in hashed_lines)
    text = "\n".join([
        "# the cas user's known hosts",
        good,
        f"a.example,192.0.2.7 {keytype} {key}",
        f"a.example {keytype} {key} a second key type for the same host",
        *hashed_lines,
        f"*.lab.example,!bad.lab.example {keytype} {key}",
        f"@cert-authority *.example {keytype} {key}",
        f"@revoked old.example {keytype} {key}",
        "", ])
    path = tmp_path / "known_hosts"
    path.write_text(text)
    for name in (f"[127.0.0.1]:{sshd.port}", "a.example", "192.0.2.7", "secret.example"):
        assert subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)],
                              capture_output=True).returncode == 0, name
    hosts, nhashed, skipped = servers.parse_known_hosts(text.splitlines())
    assert hosts == [("127.0.0.1", sshd.port), ("a.example", 22), ("192.0.2.7", 22)]
    assert nhashed == 2
    assert skipped == ["*.lab.example", "!bad.lab.example", "@cert-authority *.example",
                       "@revoked old.example"]


def test_refresh_against_real_sshd(tmp_path, sshd, casenv, config_file):  # noqa: F811
    """cas-admin --server: one reachable server, one closed port, one whose host key changed,
    one hashed entry."""
    ssh_dir = os.path.join(casenv["HOME"], ".ssh")
    os.makedirs(ssh_dir)
    closed = free_port()
    other_key = keygen(tmp_path / "other_host_key").split()
    hashed = tmp_path / "hashed"
    hashed.write_text(f"hidden.example {other_key[0]} {other_key[1]}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    known_hosts = os.path.join(ssh_dir, "known_hosts")
    with open(known_hosts, "w") as fh:
        fh.write("\n".join([
            sshd.known_hosts_line(),
            sshd.known_hosts_line(port=closed),
            f"[localhost]:{sshd.port} {other_key[0]} {other_key[1]}",
            hashed.read_text().strip(), ""]))
    cfg = config_file(sshkey=sshd.user_key)
    res = run("cas-admin", "--server", "--config", cfg, env=casenv, timeout=300)
    assert res.returncode == 1, res
    rows = {(r["host"], r["port"]): r for r in res.records}
    assert [r["server"] for r in res.records] == [
        f"127.0.0.1:{sshd.port}", f"127.0.0.1:{closed}", f"localhost:{sshd.port}"]
    ok = rows[("127.0.0.1", sshd.port)]
    assert (ok["arch"], ok["crash"], ok["status"]) == (platform.machine(), "/usr/bin/crash", "ok")
    refused = rows[("127.0.0.1", closed)]
    assert refused["arch"] is None
    assert refused["status"] == f"ssh: connect to host 127.0.0.1 port {closed}: Connection refused"
    changed = rows[("localhost", sshd.port)]
    assert changed["status"].startswith("host key mismatch")
    err = res.stderr
    assert "1 hashed host name(s) cannot be listed" in err
    assert f"cas-admin: 127.0.0.1:{sshd.port}: {platform.machine()}, crash /usr/bin/crash\n" in err
    assert f"cas-admin: 127.0.0.1:{closed}: ssh: connect to host 127.0.0.1 port {closed}: " \
           "Connection refused; skipped\n" in err
    assert f"cas-admin: 3 server(s) from {known_hosts}: 1 usable ({platform.machine()}: 1), " \
           "2 skipped\n" in err
    assert "Traceback" not in err
    conn = db.connect(str(tmp_path / "cas.db"))
    stored = {(r["host"], r["port"]): r for r in servers.listing(conn)}
    assert stored.keys() == rows.keys()
    assert servers.pick(conn, platform.machine())["port"] == sshd.port
    assert servers.pick(conn, "s390x") is None
    conn.close()

    # a key the server does not accept: "Authentication Failed", and the list is rebuilt
    stranger = str(tmp_path / "stranger")
    keygen(stranger)
    cfg = config_file(sshkey=stranger, servers=f"127.0.0.1:{sshd.port}")
    res = run("cas-admin", "--server", "--config", cfg, env=casenv, timeout=300)
    assert res.returncode == 1, res
    assert res.record["status"] == \
        f"Authentication Failed ({getpass.getuser()}@127.0.0.1: Permission denied (publickey).)"
    assert f"1 server(s) from the servers config key: 0 usable, 1 skipped" in res.stderr
    conn = db.connect(str(tmp_path / "cas.db"))
    assert [(r["host"], r["port"]) for r in servers.listing(conn)] == [("127.0.0.1", sshd.port)]
    assert servers.pick(conn, platform.machine()) is None
    conn.close()


def test_refresh_without_key_or_hosts(tmp_path, casenv, config_file):
    res = run("cas-admin", "--server", "--config", config_file(), env=casenv)
    assert res.returncode == 0 and res.records == []
    assert f"{casenv['HOME']}/.ssh/known_hosts: no such file" in res.stderr
    cfg = config_file(sshkey=str(tmp_path / "id_rsa"), servers="a.example")
    res = run("cas-admin", "--server", "--config", cfg, env=casenv)
    assert res.returncode == 1 and res.records == []
    assert f"cas-admin: sshkey {tmp_path}/id_rsa: no such file; cannot log in to any server" \
        in res.stderr


def test_remote_command_quotes_everything():
    cmd = servers.remote_command("/cores/it's here", ["-i", "crash.in"], 1800)
    assert cmd == "cd '/cores/it'\"'\"'s here' && exec timeout -k 10 1800 ./crash -i crash.in"


# -- cas-crash on a server ------------------------------------------------------------------

@pytest.fixture
def registered(tmp_path, sshd, casenv, config_file):  # noqa: F811
    """A config, known_hosts and server list where 127.0.0.1:<port> serves s390x.

    The loopback server is this x86_64 machine; its row is relabelled s390x so that a
    core needs a server, which is the path under test.
    """
    home = casenv["HOME"]
    os.makedirs(os.path.join(home, ".ssh"), exist_ok=True)
    with open(os.path.join(home, ".ssh", "known_hosts"), "w") as fh:
        fh.write(sshd.known_hosts_line() + "\n")
    cfg_path = config_file(sshkey=sshd.user_key, workDirectory=str(tmp_path / "work 1"))

    def register(arch="s390x", crash="/usr/bin/crash", port=None, timeout_s=None):
        if timeout_s:
            with open(cfg_path, "a") as fh:
                fh.write(f"crashTimeout = {timeout_s}\n")
        conn = db.connect(str(tmp_path / "cas.db"))
        servers.store(conn, [{"host": "127.0.0.1", "port": port or sshd.port, "arch": arch,
                              "crash": crash, "status": "ok", "checked": 1.0}])
        conn.close()
        return cfg_path

    return register


def _job(tmp_path):
    # a blank in the path (the workDirectory's): quoting all the way through ssh
    work = tmp_path / "work 1" / "j1" / "2026.01.02.03.04.05"
    work.mkdir(parents=True)
    (work / "vmcore").write_bytes(b"")
    (work / "vmlinux").write_bytes(b"")
    return {"job": "j1", "workdir": str(work), "core": str(work / "vmcore"),
            "vmlinux": str(work / "vmlinux"),
            "kernel": {"release": "6.1.0-56-s390x", "machine": "s390x"}}


def test_remote_timeout_kills_the_remote_side(tmp_path, registered, casenv, sshd):  # noqa: F811
    """The server's crash hangs (a test script): the remote timeout(1) ends it."""
    hang = tmp_path / "hanging crash"
    pidfile = tmp_path / "remote.pid"
    hang.write_text(f"#!/bin/sh\necho 'crash 0.0-test'\necho $$ > '{pidfile}'\nsleep 600\n")
    hang.chmod(0o755)
    cfg = registered(crash=str(hang), timeout_s=2)
    job = _job(tmp_path)
    res = run("cas-crash", "--config", cfg, input=job, env=casenv, timeout=120)
    assert res.returncode == 0, res
    c = res.record["crash"]
    assert c["server"] == f"127.0.0.1:{sshd.port}"
    assert c["timed_out"] is True and c["note"].startswith("timed out after 2 s")
    assert c["command"].startswith("ssh -n -o BatchMode=yes")
    assert "timeout -k 10 2 ./crash -i crash.in" in c["command"]
    with open(c["output"]) as fh:
        assert "crash 0.0-test" in fh.read()
    with open(os.path.join(job["workdir"], "crash")) as fh:
        assert f"exec '{hang}'" in fh.read()
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "State:\tZ" in open(f"/proc/{pid}/status").read()


def test_unreachable_server_is_an_error(tmp_path, registered, casenv):
    closed = free_port()
    cfg = registered(port=closed)
    res = run("cas-crash", "--config", cfg, input=_job(tmp_path), env=casenv, timeout=120)
    assert res.returncode == 1
    err = res.record["error"]
    assert err["kind"] == "ssh"
    assert err["message"] == (f"ssh to 127.0.0.1:{closed} failed: ssh: connect to host "
                              f"127.0.0.1 port {closed}: Connection refused")
    assert res.record["crash"]["server"] == f"127.0.0.1:{closed}"


@pytest.mark.realdump
def test_remote_crash_on_a_real_dump(tmp_path, registered, casenv, sshd, realdump):  # noqa: F811
    """The real crash, run through ssh on the loopback "server", in the same job directory."""
    by = {d["variant"]: d for d in realdump["dumps"]}
    dump = by.get("makedumpfile-lzo") or by.get("makedumpfile-zlib") or by["qemu-elf"]
    cfg = registered()
    work = tmp_path / "work 1" / "r1" / "2026.01.02.03.04.05"  # blanks in the path
    work.mkdir(parents=True)
    os.link(dump["path"], work / "vmcore")  # a record's files lie in its job directory
    os.link(realdump["vmlinux"], work / "vmlinux")
    record = {"job": "r1", "workdir": str(work), "core": str(work / "vmcore"),
              "vmlinux": str(work / "vmlinux"),
              "kernel": {"release": realdump["kernel"]["release"], "machine": "s390x"}}
    res = run("cas-crash", "--config", cfg, input=record, env=casenv, timeout=1200)
    assert res.returncode == 0, res
    c = res.record["crash"]
    assert c["server"] == f"127.0.0.1:{sshd.port}"
    assert c["command"].startswith("ssh -n -o BatchMode=yes")
    assert c["exit_status"] == 0 and not c["timed_out"] and not c["degraded"]
    assert c["version"] and c["panic"]["message"] == realdump["kernel"]["panic"]
    with open(c["files"]["traceback"]) as fh:
        assert "sysrq_handle_crash" in fh.read()
    with open(c["files"]["log"]) as fh:
        assert "sysrq: Trigger a crash" in fh.read()
    assert "Accepted publickey" in sshd.log.read_text()
