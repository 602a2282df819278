"""cas-admin: index the kernels shelf, list the index, purge old jobs, refresh the server list.

  cas-admin [--config F]            index ``kernels`` into ``database`` (and purge
                                    when ``autoPurge = Yes``)
  cas-admin --list                  the indexed kernels as JSON lines on stdout:
                                    release, machine, flavour, package, build_id, ...
  cas-admin --purge [--dry-run]     remove job directories older than ``purgeLimit`` days
  cas-admin --server                refresh the crash server list (caslib.crashrun.servers)

Messages and the summary line go to stderr; data (``--list``, purge lists)
to stdout.  Only one cas-admin changes a database at a time: a second one
waits up to ``--wait`` seconds for the first, then gives up with a message.
Exit status: 0 ok, 1 when a package, a job or the database could not be
handled, 2 for usage errors.
"""

import errno
import fcntl
import json
import os
import sqlite3
import sys
import time

from caslib import cli, db, logs, records
from caslib.shelf import index, purge
from caslib.queue import jobsreap
from caslib.progress import Progress
from caslib.records import StepError, UsageError

PROG = "cas-admin"
log = logs.get()


class AdminLock:
    """An flock beside the database: one cas-admin changes it at a time."""

    def __init__(self, database: str, wait: float):
        self.path = database + ".admin-lock"
        self.wait = wait
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        announced = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            holder = self._holder()
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise StepError(f"{self.path}: another cas-admin{holder} is working on this "
                                f"database; gave up after {self.wait:g} s (try again later or "
                                "raise --wait)", "busy")
            if not announced:
                log.info("waiting for another cas-admin%s (up to %g s)", holder, self.wait)
                announced = True
            time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def _holder(self) -> str:
        try:
            with open(self.path) as fh:
                pid = fh.read().strip()
            return f" (pid {pid})" if pid.isdigit() else ""
        except OSError:
            return ""

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def list_kernels(conn, stdout) -> int:
    """Print one JSON line per indexed kernel image, ordered by release."""
    rows = conn.execute(
        "SELECT k.release, k.machine, k.flavour, p.path, k.build_id, p.name, p.version,"
        " p.release, p.arch, k.vmlinux, k.modules_prefix, k.modules, p.format, p.payload"
        " FROM kernels k JOIN packages p ON p.id = k.package"
        " ORDER BY k.release, k.machine, p.path")
    for (release, machine, flavour, path, build_id, name, version, prel, arch, vmlinux,
         prefix, modules, fmt, payload) in rows:
        stdout.write(json.dumps({
            "release": release, "machine": machine, "flavour": flavour or None,
            "package": path, "build_id": build_id, "name": name, "version": version,
            "package_release": prel, "arch": arch, "format": fmt, "payload": payload,
            "vmlinux": vmlinux, "modules_prefix": prefix, "modules": modules,
        }) + "\n")
    stdout.flush()
    return records.EXIT_OK


def run_purge(cfg, conn, dry_run: bool, stdout) -> int:
    def emit(entry):
        stdout.write(json.dumps(entry) + "\n")
        stdout.flush()

    count, uploads, errors = purge.purge(cfg, conn, dry_run=dry_run, emit=emit)
    verb = "would purge" if dry_run else "purged"
    (log.error if errors else log.info)(
        "%s %d job director%s%s older than %s days under %s%s", verb, count,
        "y" if count == 1 else "ies",
        f" and {uploads} upload{'' if uploads == 1 else 's'}" if uploads else "",
        cfg.purgeLimit, cfg.workDirectory, f", {errors} failed" if errors else "")
    return records.EXIT_ERROR if errors else records.EXIT_OK


def run_server(cfg, conn, stdout) -> int:
    try:
        from caslib.crashrun import servers
    except ImportError:
        log.error("--server: the server list module (caslib.crashrun.servers) is not installed")
        return records.EXIT_ERROR
    return servers.refresh(cfg, conn, stdout)


def run_index(cfg, conn) -> int:
    summary = index.update(cfg, conn, Progress("indexing", unit="packages"))
    (log.error if summary.errors else log.info)("%s", summary.line())
    return records.EXIT_ERROR if summary.errors else records.EXIT_OK


def admin(args, cfg, stdout=None) -> int:
    stdout = stdout or sys.stdout
    if args.list and not os.path.exists(cfg.database):
        log.info("no index yet at %s: run cas-admin to index %s", cfg.database, cfg.kernels)
        return records.EXIT_OK
    conn = db.connect(cfg.database, args.wait)
    try:
        if args.list:
            return list_kernels(conn, stdout)
        if args.purge and args.dry_run:
            return run_purge(cfg, conn, True, stdout)
        status = records.EXIT_OK
        with AdminLock(cfg.database, args.wait):
            if args.server:
                status = max(status, run_server(cfg, conn, stdout))
            if not args.server and not args.purge:
                status = max(status, run_index(cfg, conn))
            if args.purge or cfg.get("autoPurge"):
                status = max(status, run_purge(cfg, conn, False, stdout))
        return status
    finally:
        conn.close()


def main(argv=None) -> int:
    """cas-admin's command line (man cas-admin)."""
    return records.main_wrapper(PROG, run_command, argv)


def parse_args(argv):
    parser = cli.argument_parser(
        PROG, "Index the kernels shelf, list the index, purge old jobs, refresh the server list.",
        quiet="print nothing on success (for cron and timers); errors still")
    parser.add_argument("-l", "--list", action="store_true",
                        help="print the indexed kernels as JSON lines and change nothing")
    parser.add_argument("-p", "--purge", action="store_true",
                        help="remove job directories older than purgeLimit days (no indexing)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="with --purge: list what would be removed, remove nothing")
    parser.add_argument("-s", "--server", action="store_true",
                        help="refresh the crash server list (ssh reachability, arch)")
    parser.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for another cas-admin or a locked database "
                             "(default 30)")
    args = parser.parse_args(argv)
    if args.dry_run and not args.purge:
        raise UsageError(f"{PROG}: --dry-run goes with --purge")
    if args.list and (args.purge or args.server):
        raise UsageError(f"{PROG}: --list changes nothing; do not combine it with "
                         "--purge or --server")
    if args.wait < 0:
        raise UsageError(f"{PROG}: --wait must be >= 0")
    return args


def run_command(argv) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)  # -q: only errors from here on
    if not args.list and not args.dry_run:
        jobsreap.reap(cfg)  # rows of cas runs that were killed
    try:
        if args.quiet and not args.list:  # the purge listing too: cron mails any output
            with open(os.devnull, "w") as devnull:
                return admin(args, cfg, devnull)
        return admin(args, cfg)
    except StepError as exc:
        log.error("%s", exc.message)
        return records.EXIT_ERROR
    except sqlite3.Error as exc:
        log.error("%s", db.friendly(exc, cfg.database, args.wait).message)
        return records.EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("%s%s", where, exc.strerror or exc)
        return records.EXIT_ERROR

