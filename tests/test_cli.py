"""The shared command-line vocabulary (caslib.cli), through the executables."""

import os
import pty
import subprocess

import pytest

from conftest import BIN, command, run
from unpack_fixtures import dumpish

COMMANDS = sorted(os.listdir(BIN))
# the filters: with no arguments they read records on stdin
FILTERS = ("cas-unpack", "cas-ident", "cas-dmesg", "cas-findkernel", "cas-extract", "cas-crash",
           "cas-triage", "cas-mail")


@pytest.mark.parametrize("name", COMMANDS)
def test_short_version_and_shared_options(name):
    res = run(name, "-V")
    assert res.returncode == 0 and res.stdout.startswith(f"{name} "), res
    helptext = run(name, "-h").stdout
    for option in ("-c FILE, --config FILE", "-q, --quiet", "-v, --verbose", "-V, --version"):
        assert option in helptext, (name, option)
    assert helptext.splitlines()[0].startswith(f"usage: {name} ")
    first = helptext.split("\n\n")[1].strip()  # the -h first line: one imperative sentence
    assert first[0].isupper() and first.endswith("."), (name, first)


@pytest.mark.parametrize("name", FILTERS)
def test_filter_on_a_terminal_prints_its_usage(name, casenv):
    """Started by hand with no arguments, a filter says what it wants instead of waiting."""
    main, tty = pty.openpty()
    try:
        proc = subprocess.run(command(name), stdin=tty, capture_output=True, text=True,
                              timeout=60, env=casenv)
    finally:
        os.close(tty)
        os.close(main)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"usage: {name} ")
    assert "stdin, which is a terminal" in proc.stderr


def test_old_spelling_still_works_unlisted(tmp_path, casenv, config_file):
    conf = config_file()
    data = dumpish(tmp_path / "vmcore.7")
    assert "--id" not in run("cas-unpack", "-h").stdout.replace("--identifier", "")
    old = run("cas-unpack", "-c", conf, "--id", "T1", "--job", "old", str(data), env=casenv)
    new = run("cas-unpack", "-c", conf, "--identifier", "T1", "-j", "new", str(data), env=casenv)
    assert old.returncode == new.returncode == 0, (old, new)
    assert (old.record["id"], old.record["job"]) == ("T1", "old")
    assert (new.record["id"], new.record["job"]) == ("T1", "new")
    # cas-worker's -j N (now --jobs N): still read, as --jobs
    res = run("cas-worker", "-c", conf, "-j", "0", env=casenv)
    assert res.returncode == 2 and "--jobs must be at least 1" in res.stderr, res


def test_quiet_and_verbose_override_debug_level(tmp_path, casenv, config_file):
    data = dumpish(tmp_path / "vmcore.8")
    conf = config_file(debugLevel="WARNING")
    quiet = run("cas-unpack", "-c", conf, "-i", "Q", str(data), env=casenv)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet
    loud = run("cas-unpack", "-c", conf, "-v", "-i", "V", str(data), env=casenv)
    assert loud.returncode == 0 and "cas-unpack: core " in loud.stderr, loud
    conf = config_file()  # debugLevel INFO
    res = run("cas-unpack", "-c", conf, "-q", "-i", "Q2", str(data), env=casenv)
    assert res.returncode == 0 and res.stderr == "", res
    res = run("cas-unpack", "-c", conf, "-q", "-i", "Q3", str(tmp_path / "missing"), env=casenv)
    assert res.returncode == 1 and "missing" in res.stderr, res  # errors still


def test_admin_quiet_prints_nothing_on_success(casenv, config_file):
    conf = config_file()
    for argv in ([], ["--purge"], ["--purge", "--dry-run"]):
        res = run("cas-admin", "-c", conf, "-q", *argv, env=casenv)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), (argv, res)
    res = run("cas-admin", "-c", conf, env=casenv)
    assert res.returncode == 0 and res.stderr, res  # without -q: the summary line


def test_one_size_parser():
    from caslib import config

    assert config.parse_size("67108864") == 64 << 20
    for text in ("64M", "64m", "64MB", "64MiB", " 64 M "):
        assert config.parse_size(text) == 64 << 20, text
    assert config.parse_size("2G") == 2 << 30 and config.parse_size("1t") == 1 << 40
    for bad in ("", "0", "-1", "1.5G", "64X", "M"):
        with pytest.raises(ValueError):
            config.parse_size(bad)


def test_defaults_live_in_config_only():
    """No caller writes a default of its own (cfg.get(key, default))."""
    import re

    lib = os.path.join(os.path.dirname(BIN), "lib", "caslib")
    found = []
    for top, _dirs, files in os.walk(lib):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(top, name)) as fh:
                    text = fh.read()
                found += [(name, m) for m in re.findall(r"cfg\.get\(\"\w+\", [^)]+\)", text)]
    assert found == []
