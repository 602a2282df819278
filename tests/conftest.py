"""Shared test helpers: run the executables as a user would, through real pipes."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

# a login shell on Debian may set DEBUGINFOD_URLS (libdebuginfod-common): tests never ask
# a public server; the debuginfod tests set their own loopback servers
for _name in ("DEBUGINFOD_URLS", "DEBUGINFOD_TIMEOUT", "DEBUGINFOD_MAXSIZE", "DEBUGINFOD_MAXTIME"):
    os.environ.pop(_name, None)

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "packaging: builds, installs and purges the .deb (root; see test_packaging.py)")


pytest_plugins = ["realdump.fixture"] if os.path.exists(
    os.path.join(ROOT, "tests", "realdump", "fixture.py")) else []


def sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (dumps and vmlinux files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Result:
    """What a command did: exit status, stderr, and stdout parsed as JSON lines."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        except ValueError:  # a command printing text for a person (cas without --json)
            self.records = []

    @property
    def record(self) -> dict:
        assert len(self.records) == 1, self.stdout
        return self.records[0]

    def __repr__(self):
        return f"<Result rc={self.returncode} stdout={self.stdout[-2000:]!r} stderr={self.stderr[-2000:]!r}>"


def command(name: str) -> list:
    """argv prefix for one of our executables, run from this checkout with this Python."""
    return [sys.executable, os.path.join(BIN, name)]


def run(name: str, *args, input=None, env=None, timeout=600, cwd=None) -> Result:
    if isinstance(input, (list, tuple)):
        input = "".join(json.dumps(r) + "\n" for r in input)
    elif isinstance(input, dict):
        input = json.dumps(input) + "\n"
    # no input: stdin is /dev/null, never the test runner's (a filter would wait on it)
    stdin = {"stdin": subprocess.DEVNULL} if input is None else {}
    proc = subprocess.run(command(name) + [str(a) for a in args], input=input, text=True,
                          capture_output=True, env=env, timeout=timeout, cwd=cwd, **stdin)
    return Result(proc)


@pytest.fixture
def casenv(tmp_path, monkeypatch):
    """An environment with a private HOME/XDG so built-in defaults land in tmp_path."""
    env = dict(os.environ)
    env["HOME"] = str(tmp_path / "home")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("CAS_CONFIG", None)
    os.makedirs(env["HOME"], exist_ok=True)
    # the real-dump cache is shared by every test; keep it where it was
    env.setdefault("CAS_REALDUMP_DIR", os.environ.get("CAS_REALDUMP_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cas", "realdump"))
    return env


@pytest.fixture
def config_file(tmp_path):
    """Write a config file with the required keys pointing into tmp_path; extra keys as kwargs."""

    def make(extra: str = "", **settings) -> str:
        values = {
            "kernels": str(tmp_path / "kernels"),
            "workDirectory": str(tmp_path / "work"),
            "database": str(tmp_path / "cas.db"),
            "debugs": str(tmp_path / "debugs"),
        }
        values.update(settings)
        os.makedirs(values["kernels"], exist_ok=True)
        text = "[settings]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + extra
        path = tmp_path / "cas.conf"
        path.write_text(text)
        return str(path)

    return make


class SmtpCollector:
    """A real SMTP server (aiosmtpd) on a loopback port that keeps what it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.hostport = f"127.0.0.1:{free_port()}"
        host, port = self.hostport.split(":")
        self.controller = Controller(self, hostname=host, port=int(port))

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serial_panic_cpu(manifest: dict) -> int:
    """The CPU the real dump's guest panicked on, as its serial console said (QEMU's two
    vCPUs race: the build decides, so tests read it instead of assuming one)."""
    import re
    serial = next(f["path"] for f in manifest["files"] if f.get("role") == "serial-log")
    with open(serial, errors="replace") as fh:
        found = re.findall(r"CPU: (\d+) PID: 1 Comm: init", fh.read())
    assert found, f"{serial}: no 'CPU: N PID: 1 Comm: init' line"
    return int(found[-1])


def real_dump(manifest: dict, variant: str) -> str:
    """Path of the real dump ``variant`` (``makedumpfile-zlib``, ``qemu-elf``, ...)."""
    return next(d for d in manifest["dumps"] if d["variant"] == variant)["path"]


def real_shelf(manifest: dict, top) -> str:
    """``top/kernels``: a shelf holding the real debuginfo RPMs with a zstd payload, linked."""
    shelf = os.path.join(str(top), "kernels")
    os.mkdir(shelf)
    for rpm in manifest["rpms"]:
        if rpm["payload"] == "zstd":
            os.symlink(rpm["path"], os.path.join(shelf, os.path.basename(rpm["path"])))
    return shelf
