"""A real OpenSSH server on a loopback port, with its own host key and one user key.

Used by the server tests: it plays the analysis servers of cas-admin --server
and cas-crash (the "shared storage" is this machine's own file system).
Everything it writes stays in its temporary directory, except sshd's
privilege-separation directory /run/sshd, which sshd insists on when run as
root and which is created if missing.
"""

import getpass
import os
import shutil
import socket
import subprocess
import time

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cas-test",
                    "-f", str(path)], check=True)
    with open(f"{path}.pub") as fh:
        return fh.read().strip()


class Sshd:
    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.host_pub = keygen(root / "host_key")
        self.user_key = str(root / "user_key")
        user_pub = keygen(self.user_key)
        (root / "authorized_keys").write_text(user_pub + "\n")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {getpass.getuser()}\nLogLevel VERBOSE\n")
        self.log = root / "sshd.log"
        self.proc = None

    def known_hosts_line(self, host="127.0.0.1", port=None) -> str:
        """The host key as ssh-keyscan sees it, under the name [host]:port."""
        out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(self.port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=30).stdout
        line = next(l for l in out.splitlines() if l and not l.startswith("#"))
        _, keytype, key = line.split()[:3]
        return f"[{host}]:{port or self.port} {keytype} {key}"

    def start(self):
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.logfh = open(self.log, "w")
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-e"],
                                     stdout=self.logfh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfh.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("needs openssh-server and openssh-client")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()
