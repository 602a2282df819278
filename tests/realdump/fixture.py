"""pytest plugin: the session fixture ``realdump``, the parsed manifest.json of the real-dump
test bed (tests/realdump/build.py: a Debian kernel panicked under QEMU, its dumps in every
format we handle, and kernel-debuginfo RPMs).

The first use in a session runs build.py, which reuses a complete cache in well under a
second and otherwise builds it (about 4-7 minutes on 2 cores, 2.5 GB of disk). A failing
build fails the test with the tail of the builder's stderr: it is never skipped.

Load it from the root conftest.py with ``pytest_plugins = ["realdump.fixture"]`` (tests/ on
sys.path). Tests that use it may be marked ``@pytest.mark.realdump``.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from realdump import build

BUILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build.py")
TIMEOUT = int(os.environ.get("CAS_REALDUMP_TIMEOUT", "3600"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realdump: uses the real-dump test bed (built on first use, minutes cold)")


def pytest_collection_modifyitems(config, items):
    """Every test that uses the test bed, directly or through another fixture, is marked
    realdump, so ``-m realdump`` (or ``-m "not realdump"``) selects all of them."""
    for item in items:
        if "realdump" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdump)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build_manifest(timeout: int = TIMEOUT) -> dict:
    """Run build.py; return its manifest, or raise RuntimeError with the builder's stderr tail."""
    with tempfile.TemporaryFile(mode="w+") as err:
        # own session: on a timeout the whole group (rpmbuild, crash, qemu) is ended
        proc = subprocess.Popen([sys.executable, BUILD], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            err.seek(0)
            raise RuntimeError(f"tests/realdump/build.py timed out after {timeout}s:\n"
                               f"{_tail(err.read())}")
        err.seek(0)
        stderr = err.read()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"tests/realdump/build.py exited {proc.returncode}:\n{_tail(stderr)}")
    try:
        with open(lines[-1]) as fh:
            manifest = json.load(fh)
        # caches built before the manifest recorded the decoys: the same rule, from build.py
        manifest.setdefault("decoys", build.decoys(manifest["kernel"]["release"]))
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"tests/realdump/build.py printed {lines[-1]!r}, not a readable "
                           f"manifest ({exc}):\n{_tail(stderr)}") from exc


@pytest.fixture(scope="session")
def realdump(request) -> dict:
    """The real-dump manifest (see tests/realdump/README.md for its keys)."""
    root = build.cache_root(None)
    if not build.cached_manifest(root, None):  # cold: say why the run stops for minutes
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"\nrealdump: building the real-dump test bed in {root} "
                                f"(a Debian kernel panicked under QEMU: minutes, ~2 GB; "
                                f"done once)", bold=True)
    try:
        return build_manifest()
    except RuntimeError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback
