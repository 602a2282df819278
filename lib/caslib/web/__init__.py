"""cas-web: the job list, each job's report and a submit form, over HTTP (standard library).

``cas-web [--listen HOST:PORT]`` serves ``/`` (jobs), ``/jobs/<job>/<stamp>/`` (the
report and the job directory's files), ``/job/<id>`` (any job, queued ones too),
``/submit``, ``/api/jobs``, ``/api/jobs/<job>/<stamp>``, ``POST /api/jobs``.
``cas-web --add-user NAME`` adds a user to the ``webUsers`` file.

Why so careful: it faces a network.  It listens on loopback unless told otherwise and
refuses any other address without ``webUsers``; a state change is a POST with the CSRF
token; a path is resolved inside the job directories; every byte from a dump is escaped;
a slow client times out on its own thread and never holds up another request.
"""

import getpass
import http.server
import json
import os
import shutil
import socket
import socketserver
import sys
import time
import urllib.parse

from caslib import cli, jobdir, logs, pathsafety, records
from caslib.messages import htmlreport
from caslib.web import webauth
from caslib.records import StepError, UsageError

PROG = "cas-web"
CLIENT_TIMEOUT = 60.0   # seconds a client may stay silent mid-request
MAX_RECORD = 16 << 20   # bytes of record.json read
LIST_LIMIT = 500


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{PROG}: --listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


class Site:
    """What a request needs: the config, the gate, the jobs (queue.py), the job directories."""

    def __init__(self, cfg, gate: webauth.Gate):
        self.cfg, self.gate = cfg, gate
        self.work = os.path.abspath(cfg.workDirectory)

    def queue(self, write: bool = False):
        from caslib.queue import open_queue

        return open_queue(self.cfg, readonly=not write)

    def jobs(self, state=None) -> list:
        if not os.path.exists(self.cfg.database):
            return []
        q = self.queue()
        try:
            jobs = q.list(state)[-LIST_LIMIT:][::-1]   # newest first
        finally:
            q.close()
        for job in jobs:
            job["record"] = self.record(job.get("workdir"))
        return jobs

    def job_dir(self, job: str, stamp: str) -> str | None:
        """The job directory named by the URL, only if it is one: no '..', no symlink out."""
        if not jobdir.is_valid_name(job) or jobdir.parse_stamp(stamp) is None:
            return None
        path = os.path.join(self.work, job, stamp)
        if os.path.islink(path) or not os.path.isdir(path) or not pathsafety.within(self.work, path):
            return None
        return path

    def file_in(self, workdir: str, rel: str) -> str | None:
        parts = rel.split("/")
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            return None
        path = os.path.join(workdir, *parts)
        if not os.path.isfile(path) or not pathsafety.within(workdir, path):
            return None
        return path

    def record(self, workdir) -> dict | None:
        """The job's final record (record.json), or None; the record is input like any."""
        if not isinstance(workdir, str) or not workdir:
            return None
        got = htmlreport.read_inside(workdir, os.path.join(workdir, "record.json"), MAX_RECORD)
        if not got or got[1]:
            return None
        try:
            record = json.loads(got[0])
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def job_for(self, workdir: str) -> dict | None:
        if not os.path.exists(self.cfg.database):
            return None
        q = self.queue()
        try:
            real = os.path.realpath(workdir)
            return next((j for j in q.list() if j.get("workdir") and
                         os.path.realpath(j["workdir"]) == real), None)
        finally:
            q.close()

    def get_job(self, job_id: int) -> dict | None:
        if not os.path.exists(self.cfg.database):
            return None
        q = self.queue()
        try:
            return q.get(job_id)
        finally:
            q.close()

    def submit(self, identifier: str, email: str | None, source: str) -> dict:
        """Queue a job exactly as ``cas --queue`` does (submit.py's checks)."""
        from caslib.mail import check_address
        from caslib.queue.submit import check_input

        jobdir.check_name(identifier)
        if email:
            check_address(email)
        options = {"identifier": identifier, "file": source, "email": email or None,
                   "modules": False, "strip": False, "job": None,
                   "release": None, "vmlinux": None, "package": None}
        check_input(source, self.cfg)
        q = self.queue(write=True)
        try:
            return q.submit(options)
        finally:
            q.close()

    def upload_target(self, filename: str):
        """A new directory under <workDirectory>/.uploads (never a job name) for one upload."""
        from caslib.web import webupload
        import secrets

        top = os.path.join(self.work, ".uploads")
        os.makedirs(top, mode=0o750, exist_ok=True)
        where = os.path.join(top, time.strftime("%Y%m%d%H%M%S-") + secrets.token_hex(6))
        os.mkdir(where, 0o750)
        path = os.path.join(where, webupload.safe_filename(filename))
        return path, open(path, "xb")


def serve(site: Site, host: str, port: int):
    from caslib.web.webhandler import Handler

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def handle_error(self, request, client_address):
            exc = sys.exc_info()[1]  # a client that stalls or hangs up: one line, no traceback
            logs.get().info("client %s: %s", client_address[0], exc or "error")

    handler = type("BoundHandler", (Handler,), {"site": site, "timeout": CLIENT_TIMEOUT})
    return Server((host, port), handler)


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise UsageError(f"{PROG}: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(argv=None) -> int:
    """cas-web's command line (man cas-web)."""
    return records.main_wrapper(PROG, run_command, argv)


def parse_args(argv):
    parser = cli.argument_parser(
        PROG, "Serve the job list, the jobs' reports and a submit form over HTTP.",
        "examples: cas-web;  cas-web --listen 0.0.0.0:8080 (needs webUsers);  "
        "cas-web --add-user alice")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address to listen on (default: the webListen key, 127.0.0.1:8080)")
    parser.add_argument("--add-user", metavar="NAME",
                        help="add NAME to the webUsers file (password from the terminal or "
                             "one line of stdin) and exit")
    return parser.parse_args(argv)


def add_user(users_file: str | None, name: str) -> int:
    """``cas-web --add-user NAME``."""
    if not users_file:
        raise UsageError(f"{PROG}: set webUsers in the config to the file of users first")
    try:
        webauth.add_user(users_file, name, read_password())
    except StepError as exc:
        raise UsageError(f"{PROG}: {exc.message}") from None
    print(f"{PROG}: {name} added to {users_file}", file=sys.stderr)
    return records.EXIT_OK


def gate(users_file: str | None, host: str):
    """Who may use the site: everyone on loopback, else only the webUsers."""
    if users_file:
        try:
            return webauth.Gate(webauth.load_users(users_file))
        except StepError as exc:
            raise UsageError(f"{PROG}: {exc.message}") from None
    if not webauth.is_loopback(host):
        raise UsageError(f"{PROG}: refusing to listen on {host} without webUsers (HTTP basic "
                         "auth): set webUsers and add users with cas-web --add-user NAME")
    return webauth.Gate(None)


def run_command(argv) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    if args.add_user is not None:
        return add_user(cfg.webUsers, args.add_user)
    host, port = parse_listen(args.listen or cfg.webListen)
    site = Site(cfg, gate(cfg.webUsers, host))
    try:
        server = serve(site, host, port)
    except OSError as exc:
        raise UsageError(f"{PROG}: cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = server.server_address
    print(f"{PROG}: serving http://{host}:{bound[1]}/ (jobs in {site.work})",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return records.EXIT_OK


def copy_file(path: str, out) -> None:
    """A download, streamed in 64 KiB chunks."""
    with open(path, "rb") as fh:
        shutil.copyfileobj(fh, out, 1 << 16)


def query(path: str) -> tuple[str, dict]:
    """(path, {name: last value}) of a request target."""
    parsed = urllib.parse.urlsplit(path)
    return parsed.path, {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
