"""A debuginfod client: a kernel's vmlinux by GNU build-id when the shelf has none.

Why: debuginfod is how the field serves debuginfo (elfutils, gdb, Fedora,
Debian, Ubuntu all run servers); a customer's errata kernel the shelf lacks
is often one ``GET <server>/buildid/<id>/debuginfo`` away.  The conventions
are elfutils' (debuginfod-client-config(7)): ``DEBUGINFOD_URLS`` (space
separated), ``DEBUGINFOD_TIMEOUT`` (seconds until a server answers and
between bytes, default 90), ``DEBUGINFOD_MAXSIZE`` (bytes; sent as the
``X-DEBUGINFOD-MAXSIZE`` header, a server answers 406 to a larger file, and
we count too), ``DEBUGINFOD_MAXTIME`` (seconds for a whole download).

``locate()`` (cas-findkernel) asks each server in turn: a HEAD first, and
where the server does not take HEAD (debuginfod 0.188 answers 400) a GET
whose headers are read and whose body is not.  Misses are remembered for
``MISS_SECONDS`` in the extraction cache, so a hundred jobs for the same
unknown kernel do not ask a hundred times.  ``download()`` (cas-extract)
streams the body into a file, with progress on a terminal, and refuses it
when its build-id note is not the one asked for.
"""

import hashlib
import os
import re
import time
import urllib.parse

from caslib.dumps import elfnote
from caslib.streams import fetch
from caslib import atomicfile, errors, logs
from caslib.progress import Progress
from caslib.records import StepError

DEFAULT_TIMEOUT = 90        # elfutils' default for DEBUGINFOD_TIMEOUT
DEFAULT_MAXTIME = 3600      # a whole vmlinux download; elfutils has no limit, we want one
MISS_SECONDS = 600          # elfutils' cache_miss_s default
CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{2,128}")
USER_AGENT = "cas-debuginfod"
log = logs.get()


class Limits:
    """DEBUGINFOD_TIMEOUT, DEBUGINFOD_MAXSIZE and DEBUGINFOD_MAXTIME from the environment."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        self.timeout = _number(env, "DEBUGINFOD_TIMEOUT", DEFAULT_TIMEOUT)
        self.maxsize = _number(env, "DEBUGINFOD_MAXSIZE", 0) or None
        self.maxtime = _number(env, "DEBUGINFOD_MAXTIME", 0) or DEFAULT_MAXTIME

    def headers(self) -> dict:
        out = {"User-Agent": USER_AGENT}
        if self.maxsize:
            out["X-DEBUGINFOD-MAXSIZE"] = str(self.maxsize)
        return out


def _number(env, name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        log.warning("%s=%r is not a number of %s; using %s", name, raw,
                    "bytes" if name.endswith("SIZE") else "seconds", default)
        return default
    return value


def check_build_id(value) -> str:
    """A build-id as lowercase hex (2 to 128 digits, even); StepError bad-record otherwise."""
    text = value.strip().lower() if isinstance(value, str) else None
    if not text or not _HEX.fullmatch(text) or len(text) % 2:
        raise StepError(f"bad build-id {value!r}: expected an even number of hex digits",
                        "bad-record")
    return text


def servers(cfg) -> list:
    """The configured servers (``debuginfodUrls``), http(s) only, without trailing slashes."""
    out = []
    for url in cfg.get("debuginfodUrls") or []:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            log.warning("debuginfodUrls: %s is not an http(s) URL; ignored", fetch.shown(url))
            continue
        out.append(url.rstrip("/"))
    return out


def buildid_url(server: str, build_id: str) -> str:
    return f"{server}/buildid/{build_id}/debuginfo"


def member_path(build_id: str) -> str:
    """Where the file goes in a job directory: the .build-id layout every distribution uses."""
    return f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


def check_url(url, cfg, build_id: str) -> str:
    """``url`` only if it is a configured server's URL for this build-id (records are input)."""
    for server in servers(cfg):
        if url == buildid_url(server, build_id):
            return url
    raise StepError(f"debuginfo url {fetch.shown(str(url))!r} is not {build_id}'s on a server "
                    "of debuginfodUrls: refused", "bad-record")


class Misses:
    """Recent misses per (server, build-id): files in ``<debugs>/.debuginfod``, by mtime."""

    def __init__(self, root: str | None, seconds: int = MISS_SECONDS):
        self.dir = os.path.join(root, ".debuginfod") if root else None
        self.seconds = seconds

    def _path(self, server: str, build_id: str) -> str:
        tag = hashlib.sha256(server.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return os.path.join(self.dir, f"{build_id}.{tag}")

    def recent(self, server: str, build_id: str) -> str | None:
        """Why the last ask failed, if it was less than ``seconds`` ago."""
        if self.dir is None:
            return None
        path = self._path(server, build_id)
        try:
            if time.time() - os.stat(path).st_mtime >= self.seconds:
                return None
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read(500).strip() or "a miss"
        except OSError:
            return None

    def note(self, server: str, build_id: str, why: str) -> None:
        if self.dir is None:
            return
        try:
            os.makedirs(self.dir, exist_ok=True)
            path = self._path(server, build_id)
            atomicfile.write_text(path, why + "\n")
            self._prune()
        except OSError as exc:  # remembering is an optimisation; the answer stays right
            log.debug("cannot remember the miss in %s: %s", self.dir, exc)


    def _prune(self) -> None:
        """Forget misses a day old: the directory stays small however many kernels pass."""
        now = time.time()
        with os.scandir(self.dir) as it:
            for entry in it:
                try:
                    if now - entry.stat().st_mtime > max(self.seconds, 86400):
                        os.unlink(entry.path)
                except OSError:
                    pass


def _ask(url: str, limits: Limits) -> dict:
    """Probe one URL: HEAD, else a GET whose body is left unread. Raises StepError."""
    for method in ("HEAD", "GET"):
        try:
            resp = fetch.Download(url, limits.timeout, limits.headers(), method)
        except StepError as exc:
            if method == "HEAD" and getattr(exc, "http_status", None) in (400, 405, 501):
                continue  # this server takes GET only
            raise
        try:
            size = resp.length
            given = resp.resp.headers.get("X-DEBUGINFOD-SIZE")
            if given and given.isdigit():
                size = int(given)
        finally:
            resp.close()  # a probe: the body stays on the server
        return {"size": size, "method": method}
    raise AssertionError("unreachable")


def locate(cfg, build_id: str, limits: Limits | None = None) -> tuple[dict | None, list]:
    """Ask every server for ``build_id``: (hit or None, one line per server that said no)."""
    limits = limits or Limits()
    misses = Misses(cfg.get("debugs"))
    said = []
    for server in servers(cfg):
        shown = fetch.shown(server)
        why = misses.recent(server, build_id)
        if why:
            said.append(f"{shown}: {why} (remembered for {misses.seconds} s)")
            continue
        url = buildid_url(server, build_id)
        try:
            got = _ask(url, limits)
        except StepError as exc:
            status = getattr(exc, "http_status", None)
            why = {404: "not found", 406: f"larger than DEBUGINFOD_MAXSIZE={limits.maxsize}"
                   }.get(status) or exc.message.removeprefix(f"{fetch.shown(url)}: ")
            said.append(f"{shown}: {why}")
            log.info("debuginfod %s: %s: %s", shown, build_id, why)
            if status != 406:  # a smaller limit next time may find it
                misses.note(server, build_id, why)
            continue
        if limits.maxsize and got["size"] and got["size"] > limits.maxsize:
            why = f"{got['size']:,} bytes, over DEBUGINFOD_MAXSIZE={limits.maxsize}"
            said.append(f"{shown}: {why}")
            continue
        log.info("debuginfod %s has %s (%s bytes, %s probe)", shown, build_id,
                 f"{got['size']:,}" if got["size"] else "?", got["method"])
        return {"url": url, "server": server, "size": got["size"]}, said
    return None, said


def download(url: str, dest: str, build_id: str, limits: Limits | None = None) -> int:
    """Stream ``url`` into the new file ``dest``; check size, time and build-id; bytes written.

    On any failure ``dest`` is removed and StepError raised.
    """
    limits = limits or Limits()
    shown = fetch.shown(url)
    deadline = time.monotonic() + limits.maxtime
    resp = fetch.Download(url, limits.timeout, limits.headers())
    ok = False
    try:
        if limits.maxsize and resp.length and resp.length > limits.maxsize:
            raise StepError(f"{shown}: {resp.length:,} bytes, over DEBUGINFOD_MAXSIZE="
                            f"{limits.maxsize}: refused", "too-large")
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out, Progress(f"debuginfod {build_id[:12]}",
                                                  resp.length) as progress:
            while True:
                data = resp.read(CHUNK)
                if not data:
                    break
                if limits.maxsize and resp.pos > limits.maxsize:
                    raise StepError(f"{shown}: more than DEBUGINFOD_MAXSIZE={limits.maxsize} "
                                    "bytes: refused", "too-large")
                if time.monotonic() > deadline:
                    raise StepError(f"{shown}: not done after {limits.maxtime} s "
                                    f"(DEBUGINFOD_MAXTIME), {resp.pos:,} bytes in", "timeout")
                out.write(data)
                progress.update(resp.pos)
        with open(dest, "rb") as fh:
            got = elfnote.build_id(fh)
        if got != build_id:
            raise StepError(f"{shown}: the file's build-id is {got or 'absent'}, not {build_id}: "
                            "refused", "mismatch")
        ok = True
        return resp.pos
    except OSError as exc:
        raise StepError(f"{dest}: {exc.strerror or exc} while writing {shown}",
                        errors.kind_of_oserror(exc)) from None
    finally:
        resp.close()
        if not ok:
            try:
                os.unlink(dest)
            except OSError:
                pass
