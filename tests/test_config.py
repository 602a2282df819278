"""The config loader (caslib.config, caslib.cli), exercised through cas-unpack and directly."""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from caslib import config
from caslib.records import UsageError
from conftest import ROOT, command, run
from unpack_fixtures import compress_with, dumpish


@pytest.fixture
def gz(tmp_path):
    data = dumpish(tmp_path / "vmcore.1", 1 << 20)
    return compress_with(["gzip", "-c"], data, tmp_path / "vmcore.1.gz")


def write(path, text):
    path.write_text(text)
    return str(path)


def settings(tmp_path, work="work", extra=""):
    return (f"[settings]\nkernels = {tmp_path}/k\nworkDirectory = {tmp_path}/{work}\n"
            f"database = {tmp_path}/db\n{extra}")


def test_builtin_defaults_use_xdg(tmp_path, casenv, gz):
    if os.path.exists(config.SYSTEM_CONFIG):
        pytest.skip("/etc/cas.conf exists here")
    res = run("cas-unpack", "-i", "1", gz, env=casenv)
    assert res.returncode == 0, res
    assert res.record["workdir"].startswith(os.path.join(casenv["XDG_DATA_HOME"], "cas", "work"))


def test_lookup_order(tmp_path, casenv, gz):
    env_conf = write(tmp_path / "env.conf", settings(tmp_path, "from-env"))
    arg_conf = write(tmp_path / "arg.conf", settings(tmp_path, "from-arg"))
    env = dict(casenv, CAS_CONFIG=env_conf)
    res = run("cas-unpack", "-i", "1", gz, env=env)
    assert res.record["workdir"].startswith(str(tmp_path / "from-env") + os.sep), res
    res = run("cas-unpack", "--config", arg_conf, "-i", "1", gz, env=env)
    assert res.record["workdir"].startswith(str(tmp_path / "from-arg") + os.sep), res
    assert config.find_path(None, {}) in (None, config.SYSTEM_CONFIG)
    assert config.find_path(None, {"CAS_CONFIG": "x"}) == "x"
    assert config.find_path("y", {"CAS_CONFIG": "x"}) == "y"


@pytest.mark.parametrize("extra,words", [
    ("buffersize = lots\n", ["buffersize", "'lots'", "size"]),
    ("[maintenance]\npurgeLimit = -3\n", ["purgeLimit"]),
    ("[maintenance]\nautoPurge = maybe\n", ["autoPurge", "Yes or No"]),
    ("debugLevel = LOUD\n", ["debugLevel"]),
    ("regexType = perl\n", ["regexType"]),
])
def test_bad_value_is_one_line_naming_key_and_file(tmp_path, casenv, gz, extra, words):
    conf = write(tmp_path / "bad.conf", settings(tmp_path, extra=extra))
    res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and conf in lines[0], res.stderr
    for word in words:
        assert word in lines[0]
    assert not os.path.exists(tmp_path / "work")


def test_partial_file_overrides_defaults_key_by_key(tmp_path, casenv, gz):
    conf = write(tmp_path / "c.conf", f"[settings]\nworkDirectory = {tmp_path}/w\n")
    res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
    assert res.returncode == 0, res
    assert res.record["workdir"].startswith(str(tmp_path / "w") + os.sep)
    cfg = config.load(conf, environ={})
    assert cfg.workDirectory == str(tmp_path / "w")
    assert cfg.kernels == config._default("kernels") and cfg.database == config._default("database")
    assert cfg.crashTimeout == 1800


def test_not_an_ini_file(tmp_path, casenv, gz):
    conf = write(tmp_path / "c.conf", "# site\nworkDirectory = /tmp\n")  # no section header
    res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().endswith(f"{conf}: line 2: a setting before any section "
                                       "header (start the file with [settings])"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unknown_key_warns_and_keys_ignore_case(tmp_path, casenv, gz):
    text = (f"[settings]\nKERNELS = {tmp_path}/k\nworkdirectory = {tmp_path}/w\n"
            f"Database = {tmp_path}/db\nfrobnicate = yes\n")
    conf = write(tmp_path / "c.conf", text)
    res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
    assert res.returncode == 0, res
    assert res.record["workdir"].startswith(str(tmp_path / "w") + os.sep)
    assert "[settings] unknown key 'frobnicate', ignored" in res.stderr


def test_mistyped_key_suggests_the_known_one(tmp_path, casenv, gz):
    conf = write(tmp_path / "c.conf", settings(tmp_path, extra="kernal = /x\n"))
    res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
    assert res.returncode == 0, res
    assert "unknown key 'kernal' (did you mean 'kernels'?)" in res.stderr
    cfg = config.load(conf, environ={})
    assert cfg.warnings == [f"{conf}: [settings] unknown key 'kernal' (did you mean 'kernels'?), "
                            "ignored"]


def test_debug_level(tmp_path, casenv, gz):
    quiet = write(tmp_path / "i.conf", settings(tmp_path, extra="debugLevel = INFO\n"))
    loud = write(tmp_path / "d.conf", settings(tmp_path, extra="debugLevel = DEBUG\n"))
    res = run("cas-unpack", "--config", quiet, "-i", "1", gz, env=casenv)
    assert res.returncode == 0 and "bytes free" not in res.stderr
    res = run("cas-unpack", "--config", loud, "-i", "1", gz, env=casenv)
    assert res.returncode == 0 and "bytes free" in res.stderr


def test_seed_examples_load_unchanged():
    full = config.load(os.path.join(ROOT, "etc", "cas.conf.example"), environ={})
    assert full.casuser == "cas" and full.workDirectory == "/cores/processed"
    assert full.buffersize == 64 * 1024 * 1024 and full.autoPurge is False
    assert full.purgeLimit == 90 and full.regexExcludeDir == ["*/old/*", "*/.snapshot/*"]
    assert full.smtphost == "mail.example.com:25" and full.crash_32 == "/usr/local/bin/crash32"
    assert full.warnings == []
    minimal = config.load(os.path.join(ROOT, "etc", "cas.conf.minimal"), environ={})
    assert minimal.workDirectory == "/srv/cas/jobs" and minimal.debugLevel == "INFO"


def test_load_errors_directly(tmp_path):
    with pytest.raises(UsageError) as info:
        config.load(str(tmp_path / "absent.conf"))
    assert "absent.conf" in str(info.value)


def test_casuser_switch_as_root(tmp_path, casenv):
    """As root with casuser = nobody, the job is written by nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = tempfile.mkdtemp(prefix="cas-casuser-")
    try:
        os.chmod(top, 0o755)
        os.mkdir(os.path.join(top, "work"))
        os.chmod(os.path.join(top, "work"), 0o777)
        src = dumpish(os.path.join(top, "vmcore.1"), 1 << 20)
        gz = compress_with(["gzip", "-c"], src, os.path.join(top, "vmcore.1.gz"))
        os.chmod(gz, 0o644)
        conf = os.path.join(top, "cas.conf")
        with open(conf, "w") as fh:
            fh.write(f"[settings]\ncasuser = nobody\nkernels = {top}/k\n"
                     f"workDirectory = {top}/work\ndatabase = {top}/db\n")
        os.chmod(conf, 0o644)
        res = run("cas-unpack", "--config", conf, "-i", "1", gz, env=casenv)
        assert res.returncode == 0, res
        nobody = pwd.getpwnam("nobody").pw_uid
        assert os.stat(res.record["core"]).st_uid == nobody
        assert os.stat(res.record["workdir"]).st_uid == nobody
    finally:
        shutil.rmtree(top)


def test_other_user_is_refused(tmp_path, casenv, gz):
    """Run as nobody with casuser = root: one line, exit 2 (needs a Python nobody can run)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    nobody = pwd.getpwnam("nobody")

    def become():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    try:
        usable = subprocess.run(command("cas-unpack")[:1] + ["-c", "import caslib"],
                                preexec_fn=become, capture_output=True, cwd="/").returncode == 0
    except PermissionError:
        usable = False
    if not usable:
        pytest.skip("this Python is not usable by nobody (installed under a private home)")
    top = tempfile.mkdtemp(prefix="cas-refuse-")
    try:
        os.chmod(top, 0o755)
        conf = os.path.join(top, "cas.conf")
        with open(conf, "w") as fh:
            fh.write(f"[settings]\ncasuser = root\nkernels = {top}/k\n"
                     f"workDirectory = {top}/work\ndatabase = {top}/db\n")
        os.chmod(conf, 0o644)
        proc = subprocess.run(command("cas-unpack") + ["--config", conf, "-i", "1", gz],
                              preexec_fn=become, capture_output=True, text=True, cwd="/")
        assert proc.returncode == 2 and proc.stdout == ""
        assert "casuser 'root'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    finally:
        shutil.rmtree(top)


def test_xdg_config_for_a_user_other_than_root(tmp_path, monkeypatch):
    mine = tmp_path / "xdg" / "cas" / "cas.conf"
    mine.parent.mkdir(parents=True)
    mine.write_text("[settings]\ncrashTimeout = 60\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert config.find_path(None, env) == str(mine)
    assert config.find_path(None, dict(env, CAS_CONFIG="e")) == "e"
    assert config.find_path("a", env) == "a"
    assert config.load(None, env).crashTimeout == 60
    # without XDG_CONFIG_HOME: ~/.config
    assert config.user_config({"HOME": str(tmp_path)}) == str(tmp_path / ".config/cas/cas.conf")
    # root never reads a per-user file: /etc/cas.conf, else the defaults
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.find_path(None, env) in (None, config.SYSTEM_CONFIG)


def test_xdg_config_through_the_executable(tmp_path, casenv, gz):
    """As a user other than root, the per-user file is found by the real executable.

    As root the command runs as nobody (with the system Python, which nobody can
    execute), since root never reads a per-user file."""
    if os.geteuid() != 0:
        xdg = tmp_path / "cfg"
        (xdg / "cas").mkdir(parents=True)
        (xdg / "cas" / "cas.conf").write_text(f"[settings]\nworkDirectory = {tmp_path}/xw\n")
        res = run("cas-unpack", "-i", "1", gz, env=dict(casenv, XDG_CONFIG_HOME=str(xdg)))
        assert res.returncode == 0 and res.record["workdir"].startswith(str(tmp_path / "xw")), res
        return
    top = tempfile.mkdtemp(prefix="cas-xdg-")
    try:
        os.chmod(top, 0o777)
        xdg = os.path.join(top, "cfg", "cas")
        os.makedirs(xdg)
        with open(os.path.join(xdg, "cas.conf"), "w") as fh:
            fh.write(f"[settings]\nworkDirectory = {top}/xw\n")
        for d in (os.path.join(top, "cfg"), xdg):
            os.chmod(d, 0o755)
        shutil.copy(gz, os.path.join(top, "vmcore.1.gz"))
        os.chmod(os.path.join(top, "vmcore.1.gz"), 0o644)
        env = {"PATH": "/usr/bin:/bin", "HOME": top, "XDG_CONFIG_HOME": os.path.join(top, "cfg"),
               "XDG_DATA_HOME": os.path.join(top, "data"), "XDG_CACHE_HOME": os.path.join(top, "c")}
        runuser = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin")
        proc = subprocess.run([runuser, "-u", "nobody", "--", "/usr/bin/python3",
                               os.path.join(ROOT, "bin", "cas-unpack"), "-i", "1",
                               os.path.join(top, "vmcore.1.gz")],
                              env=env, cwd="/", capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f'"workdir": "{top}/xw/1/' in proc.stdout, proc.stdout
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("value,expected", [
    ("rsa", "~/.ssh/id_rsa"), ("DSS", "~/.ssh/id_dsa"), ("ed25519", "~/.ssh/id_ed25519"),
    ("ecdsa", "~/.ssh/id_ecdsa"), ("~/keys/cas", "~/keys/cas"), ("/etc/cas/key", "/etc/cas/key"),
])
def test_sshkey_names_a_key_type_or_a_path(tmp_path, value, expected):
    conf = write(tmp_path / "c.conf", f"[settings]\nsshkey = {value}\n")
    assert config.load(conf, environ={}).sshkey == os.path.expanduser(expected)


@pytest.mark.parametrize("value", ["None", "none", ""])
def test_buffersize_none_or_empty_is_the_default(tmp_path, value):
    conf = write(tmp_path / "c.conf", f"[advanced]\nbuffersize = {value}\n")
    assert config.load(conf, environ={}).buffersize == 64 * 1024 ** 2
    conf = write(tmp_path / "d.conf", "[advanced]\nbuffersize = 8M\n")
    assert config.load(conf, environ={}).buffersize == 8 * 1024 ** 2


def test_rpm_filter_comma_separated_names_ignore_case(tmp_path):
    from caslib.shelf import walk
    conf = write(tmp_path / "c.conf",
                 "[settings]\nrpmFilter = Kernel-Debuginfo, kernel-PAE-debuginfo\n")
    rpm, _ = walk.filters(config.load(conf, environ={}))
    assert rpm("/s/kernel-debuginfo-2.6.18-8.el5.x86_64.rpm")
    assert rpm("/s/KERNEL-PAE-DEBUGINFO-2.6.18-8.el5.i686.rpm")
    assert not rpm("/s/kernel-2.6.18-8.el5.x86_64.rpm")
    assert not rpm("/s/kernel-debuginfo-2.6.18.x86_64.rpm.txt")
    # a regex keeps find -regex semantics (case-sensitive, whole path)
    conf = write(tmp_path / "r.conf", "[settings]\nrpmFilter = .*kernel-debuginfo-[0-9].*\\.rpm\n")
    rpm, _ = walk.filters(config.load(conf, environ={}))
    assert rpm("/s/kernel-debuginfo-2.6.18.x86_64.rpm")
    assert not rpm("/s/KERNEL-debuginfo-2.6.18.x86_64.rpm")
    assert not rpm("/s/kernel-debuginfo-common-2.6.18.x86_64.rpm")


def test_sshkey_type_is_in_casusers_home_when_root_runs(tmp_path, monkeypatch):
    """Root becomes casuser before ssh runs: a key type names casuser's ~/.ssh/id_<type>."""
    nobody = pwd.getpwnam("nobody")
    conf = write(tmp_path / "c.conf", "[settings]\nsshkey = ed25519\ncasuser = nobody\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.load(conf, environ={}).sshkey == os.path.join(nobody.pw_dir, ".ssh",
                                                                "id_ed25519")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert config.load(conf, environ={}).sshkey == os.path.expanduser("~/.ssh/id_ed25519")
