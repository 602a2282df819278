"""The real debuginfod (elfutils) on a loopback port, indexing real packages; and a slow peer.

``Debuginfod(root, rpm_dirs=..., deb_dirs=...)`` starts ``debuginfod -R``/``-U``
on a free port with its database and fdcache in ``root``, waits (with a
deadline) until the scan has indexed a given build-id, and is stopped by
pid.  debuginfod 0.188 has no listen-address option: it binds every
interface on that port; the tests only ever talk to 127.0.0.1.

``Peer(handler)`` is a small http.server on 127.0.0.1 in a thread, for the
behaviours a debuginfod server cannot be asked to show (too slow, a wrong
file, no Content-Length).
"""

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

DEBUGINFOD = shutil.which("debuginfod") or "/usr/bin/debuginfod"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_dir(root, name: str, files) -> str:
    """A directory of symlinks to ``files`` (debuginfod -L follows them)."""
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    for f in files:
        os.symlink(f, os.path.join(path, os.path.basename(f)))
    return path


class Debuginfod:
    def __init__(self, root, rpm_dirs=(), deb_dirs=()):
        self.root = str(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [DEBUGINFOD, "-p", str(self.port), "-d", os.path.join(self.root, "db.sqlite"),
                     "-L", "-t", "0", "-g", "0", "-c", "1"]
        for d in rpm_dirs:
            self.argv += ["-R", d]
        for d in deb_dirs:
            self.argv += ["-U", d]
        self.log = os.path.join(self.root, "debuginfod.log")
        self.proc = None

    def start(self, build_id: str, deadline_s: float = 900):
        """Start, and return once ``build_id`` is indexed (406 to a 1-byte MAXSIZE probe)."""
        self.logfh = open(self.log, "w")
        env = dict(os.environ, TMPDIR=self.root)
        self.proc = subprocess.Popen(["nice", "-n", "5"] + self.argv, stdout=self.logfh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        probe = urllib.request.Request(f"{self.url}/buildid/{build_id}/debuginfo",
                                       headers={"X-DEBUGINFOD-MAXSIZE": "1"})
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"debuginfod exited {self.proc.returncode}: {self.tail()}")
            try:
                urllib.request.urlopen(probe, timeout=10).close()
                return self  # small enough?  never for a vmlinux, but indexed all the same
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 406:  # known, larger than 1 byte: the scan has it
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"debuginfod did not index {build_id} in {deadline_s} s: {self.tail()}")

    def tail(self) -> str:
        with open(self.log, errors="replace") as fh:
            return fh.read()[-3000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfh.close()


class Peer:
    """http.server on 127.0.0.1 answering every GET with ``handler(request_handler)``."""

    def __init__(self, respond):
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                peer.requests.append(self.path)
                respond(self)

            def log_message(self, *args):
                pass

        self.requests = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def need_debuginfod():
    if not os.path.exists(DEBUGINFOD):
        pytest.fail("debuginfod is not installed (Debian package debuginfod; see tests/install-deps)")
    if not shutil.which("bsdtar"):
        pytest.fail("bsdtar is not installed (Debian package libarchive-tools): debuginfod -U "
                    "needs it to read .deb files")
