"""cas-web's gate: the ``webUsers`` file (PBKDF2 hashes), HTTP basic auth, CSRF tokens.

Why a file of hashes and not accounts of the system: the page is for a team,
the file is the list of who may look and submit, made with ``cas-web
--add-user NAME``.  A line is ``name:pbkdf2_sha256$iterations$salt_hex$hash_hex``.
The CSRF token is an HMAC of the user name with a key made at start: a form
carries it, a state change without it (or from another server run) is refused.
"""

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import tempfile

from caslib.records import StepError

ITERATIONS = 200_000
MAX_FILE = 1 << 20
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def check_user_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS or name[0] in ".-":
        raise StepError(f"bad user name {name!r}: use 1-64 characters of A-Z a-z 0-9 . _ - @", "usage")
    return name


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256" or not 1000 <= int(iterations) <= 10_000_000:
            return False
        want = bytes.fromhex(digest)
        got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt),
                                  int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(want, got)


def load_users(path: str) -> dict:
    """name -> stored hash; a malformed line is an error naming the file and the line."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise StepError(f"webUsers {path}: {exc.strerror}", "config") from None
    if len(data) > MAX_FILE:
        raise StepError(f"webUsers {path}: larger than {MAX_FILE} bytes", "config")
    users = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or stored.count("$") != 3:
            raise StepError(f"webUsers {path}:{number}: expected name:pbkdf2_sha256$...", "config")
        users[name] = stored
    return users


def add_user(path: str, name: str, password: str) -> None:
    """Add or replace ``name`` in the file (written whole, then renamed; mode 0600)."""
    check_user_name(name)
    if not password:
        raise StepError("empty password", "usage")
    users = load_users(path) if os.path.exists(path) else {}
    users[name] = hash_password(password)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".webusers.", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{n}:{h}\n" for n, h in sorted(users.items()))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gate:
    """Who may use the server (None: everyone on loopback) and the CSRF key of this run."""

    def __init__(self, users: dict | None):
        self.users = users
        self.key = secrets.token_bytes(32)
        self._ok: dict = {}  # header -> name, so a right password costs PBKDF2 once

    def user(self, header: str | None) -> str | None:
        """The authenticated user name, '' when no authentication is needed, None when refused."""
        if self.users is None:
            return ""
        if not header or not header.startswith("Basic "):
            return None
        if header in self._ok:
            return self._ok[header]
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        stored = self.users.get(name)
        if stored is None or not verify_password(password, stored):
            return None
        if len(self._ok) < 1000:
            self._ok[header] = name
        return name

    def token(self, user: str) -> str:
        return hmac.new(self.key, b"csrf:" + user.encode("utf-8"), hashlib.sha256).hexdigest()

    def token_ok(self, user: str, value) -> bool:
        return isinstance(value, str) and hmac.compare_digest(self.token(user), value)
