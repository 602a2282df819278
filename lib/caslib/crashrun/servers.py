"""The analysis servers: which machines can run crash for a core of another architecture.

Why: crash must run on the architecture the core came from.  As the original
CAS did, ``cas-admin --server`` takes the hosts the cas user's
``~/.ssh/known_hosts`` lists (``host``, ``[host]:port``; hashed entries cannot
be read back, and are counted) -- or the ``servers`` config list when set --
asks each over ``ssh -o BatchMode=yes -i <sshkey>`` for ``uname -m`` and
``command -v crash``, and stores the answers in the ``servers`` table
(host, port, arch, crash, status, checked).  cas-crash then picks an ``ok``
server of the core's architecture and runs the job's ``crash`` wrapper there
through ssh, in the same job directory (shared storage, as the original
assumed), under ``timeout`` so the remote side is bounded as well.

API:
  refresh(cfg, conn, stdout) -> int   (cas-admin --server: JSON lines on stdout, a
                                      summary in the log; 0 all usable, 1 some skipped)
  pick(conn, arch) -> dict | None     (a usable server for ``arch``)
  listing(conn) -> list[dict]         (every stored server, for messages)
  remote_argv(cfg, server, workdir, args, timeout) -> list   (the ssh command line)
  run_remote(cfg, server, workdir, args, out_path, timeout) -> bounded.Outcome
"""

import concurrent.futures
import json
import os
import shlex
import subprocess
import time

from caslib.crashrun import bounded
from caslib.packages import kernelrelease
from caslib import logs

CONNECT_TIMEOUT = 15     # seconds ssh may take to connect
PROBE_TIMEOUT = 60       # seconds for the whole probe of one host
REMOTE_GRACE = 60        # local limit = remote limit + this, so the remote side ends first
PROBE_COMMAND = ('echo "arch=$(uname -m)"; echo "crash=$(command -v crash)"; '
                 'echo "timeout=$(command -v timeout)"')


def family(machine: str | None) -> str | None:
    """Architectures crash treats as one: ``kernelrelease.machine_class`` (``i386``..``i686``
    -> ``i686``, ``arm64`` -> ``aarch64``)."""
    return kernelrelease.machine_class(machine)


def known_hosts_path() -> str:
    """The cas user's known_hosts (cas-admin has already switched to the cas user)."""
    return os.path.join(os.path.expanduser("~"), ".ssh", "known_hosts")


def split_host(text: str, default_port: int = 22) -> tuple:
    """``host``, ``host:port``, ``[host]:port``, ``[v6]`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unbalanced '['")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        port = rest[1:] if rest else str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not host or host.startswith("-"):
        raise ValueError(f"{text!r}: not a host name")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port {port!r}")
    return host, int(port)


def parse_known_hosts(lines) -> tuple:
    """(hosts, hashed, skipped) from known_hosts lines.

    ``hosts`` lists (host, port) once each, in file order; ``hashed`` counts
    ``|1|...`` entries (their names cannot be recovered); ``skipped`` holds
    patterns and revoked/CA entries, which name no single host.
    """
    hosts, hashed, skipped, seen = [], 0, [], set()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0].startswith("@"):
            skipped.append(f"{fields[0]} {fields[1] if len(fields) > 1 else ''}".strip())
            continue
        if len(fields) < 3:
            skipped.append(fields[0])
            continue
        for name in fields[0].split(","):
            if name.startswith("|"):
                hashed += 1
                continue
            if name.startswith("!") or any(c in name for c in "*?"):
                skipped.append(name)
                continue
            try:
                entry = split_host(name)
            except ValueError:
                skipped.append(name)
                continue
            if entry not in seen:
                seen.add(entry)
                hosts.append(entry)
    return hosts, hashed, skipped


def ssh_argv(cfg, host: str, port: int, command: str, known_hosts: str | None = None) -> list:
    """ssh in batch mode with the configured key; ``command`` is a constant or fully quoted."""
    known_hosts = known_hosts or known_hosts_path()
    return ["ssh", "-n", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-i", cfg.get("sshkey"), "-p", str(port), "--", host, command]


def ssh_failure(stderr: str, status: int) -> str:
    """One line saying why ssh failed, the way an administrator would put it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested" in text:
        return "host key mismatch: the key the host offers differs from known_hosts (Host key verification failed)"
    if "Permission denied" in text:
        why = next(line for line in lines if "Permission denied" in line)
        return f"Authentication Failed ({why})"
    if "No " in text and "host key is known for" in text:
        return "host key unknown: not in known_hosts (Host key verification failed)"
    useful = [line for line in lines if not line.startswith(("Warning: Permanently added", "@@@"))]
    return useful[-1] if useful else f"ssh exited with status {status}"


def probe(cfg, host: str, port: int, known_hosts: str | None = None) -> dict:
    """Ask one host for its architecture and crash path; never raises."""
    row = {"host": host, "port": port, "arch": None, "crash": None, "status": None,
           "checked": time.time()}
    try:
        proc = subprocess.run(ssh_argv(cfg, host, port, PROBE_COMMAND, known_hosts),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        row["status"] = f"no answer within {PROBE_TIMEOUT} s"
        return row
    except OSError as exc:
        row["status"] = f"cannot run ssh: {exc.strerror}"
        return row
    if proc.returncode != 0:
        row["status"] = ssh_failure(proc.stderr, proc.returncode)
        return row
    answers = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("arch", "crash", "timeout"):
            answers[key] = value.strip()
    row["arch"] = answers.get("arch") or None
    row["crash"] = answers.get("crash") or None
    if not row["arch"]:
        row["status"] = "no answer to uname -m"
    elif not row["crash"]:
        row["status"] = "crash is not installed (package crash)"
    elif not answers.get("timeout"):
        row["status"] = "timeout (coreutils) is not installed"
    else:
        row["status"] = "ok"
    return row


def _name(host: str, port: int) -> str:
    if port == 22:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def candidates(cfg) -> tuple:
    """The hosts to probe: the ``servers`` config list, else known_hosts; plus notes to print."""
    listed = cfg.get("servers") or []
    notes = []
    if listed:
        hosts = []
        for word in listed:
            try:
                entry = split_host(word)
            except ValueError as exc:
                notes.append(f"servers: {exc}; skipped")
                continue
            if entry not in hosts:
                hosts.append(entry)
        return hosts, notes, "the servers config key"
    path = known_hosts_path()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            hosts, hashed, skipped = parse_known_hosts(fh)
    except FileNotFoundError:
        notes.append(f"{path}: no such file; no servers to check (or set the servers config key)")
        return [], notes, path
    except OSError as exc:
        notes.append(f"{path}: cannot read: {exc.strerror}")
        return [], notes, path
    if hashed:
        notes.append(f"{path}: {hashed} hashed host name(s) cannot be listed "
                     "(HashKnownHosts); name those servers in the servers config key")
    for entry in skipped:
        notes.append(f"{path}: {entry}: names no single host; skipped")
    return hosts, notes, path


def store(conn, rows: list) -> None:
    """Make the servers table hold exactly ``rows`` (one transaction)."""
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM servers")
        conn.executemany(
            "INSERT INTO servers(host, port, arch, crash, status, checked) "
            "VALUES (:host, :port, :arch, :crash, :status, :checked)", rows)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def refresh(cfg, conn, stdout) -> int:
    """Rebuild the server list (cas-admin --server).

    stdout gets one JSON object per server (``server, host, port, arch, crash,
    status, checked``), as cas-admin's other outputs; the log (stderr) gets a
    line per server, the notes about known_hosts and a summary.
    """
    log = logs.get()
    hosts, notes, source = candidates(cfg)
    for note in notes:
        log.warning("%s", note)
    key = cfg.get("sshkey")
    if hosts and not (key and os.path.isfile(key)):
        log.error("sshkey %s: no such file; cannot log in to any server", key)
        return 1
    known = known_hosts_path()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, max(1, len(hosts)))) as pool:
        rows = list(pool.map(lambda hp: probe(cfg, hp[0], hp[1], known), hosts))
    store(conn, rows)
    for row in rows:
        name = _name(row["host"], row["port"])
        if row["status"] == "ok":
            log.info("%s: %s, crash %s", name, row["arch"], row["crash"])
        else:
            arch = f"{row['arch']}, " if row["arch"] else ""
            log.warning("%s: %s%s; skipped", name, arch, row["status"])
        stdout.write(json.dumps({"server": name, **row}) + "\n")
        stdout.flush()
    usable = [r for r in rows if r["status"] == "ok"]
    by_arch = {}
    for r in usable:
        by_arch[r["arch"]] = by_arch.get(r["arch"], 0) + 1
    archs = ", ".join(f"{a}: {n}" for a, n in sorted(by_arch.items()))
    log.info("%d server(s) from %s: %d usable%s, %d skipped", len(rows), source, len(usable),
             f" ({archs})" if archs else "", len(rows) - len(usable))
    return 0 if len(usable) == len(rows) else 1


def listing(conn) -> list:
    cur = conn.execute("SELECT host, port, arch, crash, status, checked FROM servers "
                       "ORDER BY host, port")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def pick(conn, arch: str) -> dict | None:
    """A usable server for ``arch`` (same family), the most recently checked first."""
    want = family(arch)
    rows = [r for r in listing(conn) if r["status"] == "ok" and r["crash"]
            and family(r["arch"]) == want]
    rows.sort(key=lambda r: -(r["checked"] or 0))
    return rows[0] if rows else None


def describe(rows: list) -> str:
    """``a (x86_64), b:2222 (Authentication Failed ...)`` for error messages."""
    if not rows:
        return "no servers are registered (run cas-admin --server)"
    parts = []
    for r in rows:
        what = r["arch"] if r["status"] == "ok" else (r["status"] or "unchecked")
        parts.append(f"{_name(r['host'], r['port'])} ({what})")
    return "servers: " + ", ".join(parts)


def server_name(server: dict) -> str:
    return _name(server["host"], server["port"])


def remote_command(workdir: str, args: list, timeout: int) -> str:
    """The remote shell command: in the job directory, the wrapper under ``timeout``.

    Every value is quoted with shlex.quote; ``timeout`` puts the wrapper in its
    own process group and kills that group (SIGTERM, then SIGKILL after 10 s).
    """
    words = ["timeout", "-k", "10", str(int(timeout)), "./crash"] + [str(a) for a in args]
    return f"cd {shlex.quote(workdir)} && exec " + " ".join(shlex.quote(w) for w in words)


def remote_argv(cfg, server: dict, workdir: str, args: list, timeout: int) -> list:
    """The ssh command line that runs the job's wrapper on ``server``."""
    return ssh_argv(cfg, server["host"], server["port"], remote_command(workdir, args, timeout))


def run_remote(cfg, server: dict, workdir: str, args: list, out_path: str,
               timeout: int) -> bounded.Outcome:
    """Run the job's wrapper on ``server`` in ``workdir``; output into ``out_path``."""
    argv = remote_argv(cfg, server, workdir, args, timeout)
    outcome = bounded.run(argv, workdir, out_path, timeout + REMOTE_GRACE, "crash (remote)")
    # timeout(1) ended it on the server: 124 after SIGTERM, 137 when SIGKILL was needed
    if outcome.exit_status == 124 or (outcome.exit_status == 137 and outcome.seconds >= timeout):
        outcome = bounded.Outcome(None, True, outcome.seconds)
    return outcome
