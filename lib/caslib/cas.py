"""cas: the whole pipeline, from a customer's dump to a mailed first analysis.

``cas -i ID -f FILE [-e EMAIL] [-m] [--strip] [--job JOB]`` runs the step
executables as a real pipeline of processes::

    cas-unpack | cas-ident | cas-findkernel | cas-extract [| strip] | cas-crash | cas-triage
    | cas-mail

Steps are connected by OS pipes; the driver only taps the first link to learn
the job directory (for the jobs table) and reads the last step's records.
Any step can be replaced by another command from the config's
``[pipeline]`` section.  The driver checks every child's exit status, says
which step failed and why, records the job (running, done, failed) in the
database, and on SIGINT/SIGTERM stops every child and marks the job failed.

``cas -f FILE --compress`` alone compresses a core for transfer
(``cas-unpack --compress``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import cli, jobdir, logs, records
from .mail import check_address
from .summary import triage_line
from .records import StepError, UsageError

PROG = "cas"
STEPS = ("unpack", "ident", "findkernel", "extract", "crash", "triage", "mail")


def step_command(step: str, cfg) -> list:
    """argv of one step: the config's replacement, else our sibling executable, else PATH."""
    if step in cfg.pipeline:
        return list(cfg.pipeline[step])
    if step == "strip":
        return [sys.executable, "-m", "caslib.strip"]
    name = f"cas-{step}"
    here = os.path.dirname(os.path.realpath(sys.argv[0] or __file__))
    sibling = os.path.join(here, name)
    if os.path.isfile(sibling):
        return [sys.executable, sibling]
    found = shutil.which(name)
    if found:
        return [found]
    raise UsageError(f"{PROG}: step command {name} not found next to {here} or on PATH")


class Jobs:
    """The jobs table.  Each call opens its own connection (the first link's relay
    thread starts the row, the main thread finishes it); a database that cannot
    be reached is a warning, never the job's failure."""

    def __init__(self, cfg):
        self.cfg, self.row = cfg, None

    def _execute(self, sql: str, params: tuple):
        from . import db

        try:
            conn = db.connect(self.cfg.database)
        except Exception as exc:  # the analysis matters more than its bookkeeping
            logs.get().warning("jobs database: %s", getattr(exc, "message", exc))
            return None
        try:
            with conn:
                return conn.execute(sql, params).lastrowid
        except Exception as exc:
            logs.get().warning("jobs database %s: %s", self.cfg.database, exc)
            return None
        finally:
            conn.close()

    def start(self, record: dict, source: str, email: str | None) -> None:
        if self.row is not None or not record.get("workdir"):
            return
        self.row = self._execute(
            "INSERT INTO jobs (job, identifier, workdir, source, state, started, email, pid) "
            "VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
            (record.get("job"), record.get("id"), record["workdir"], source, time.time(),
             email, os.getpid()))

    def finish(self, state: str, release: str | None, error: str | None) -> None:
        if self.row is not None:
            self._execute("UPDATE jobs SET state = ?, finished = ?, release = ?, error = ? "
                          "WHERE id = ?", (state, time.time(), release, error, self.row))


class Pipeline:
    """The running children, in order, with their names for messages."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.first_record: dict | None = None
        self.started = time.monotonic()

    def spawn(self, name, argv, stdin, env):
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            raise UsageError(f"{PROG}: cannot start {name} ({argv[0]}): {exc.strerror}") from None
        self.procs.append((name, proc))
        threading.Thread(target=self._report, args=(name, proc), daemon=True).start()
        return proc

    def _report(self, name, proc) -> None:
        """One progress line per step, when it ends."""
        code = proc.wait()
        took = time.monotonic() - self.started
        if code == 0:
            logs.get().info("%s done (%.1f s)", name, took)
        elif code == 1:
            logs.get().info("%s done, with an error record (%.1f s)", name, took)
        elif code > 0:
            logs.get().info("%s failed: exit status %d (%.1f s)", name, code, took)

    def stop(self, sig=signal.SIGTERM, grace: float = 10.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for _, proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _relay(src, dst, pipeline: Pipeline, on_first) -> None:
    """Copy the first link line by line, noting the first record (its workdir)."""
    try:
        for line in src:
            if pipeline.first_record is None:
                try:
                    pipeline.first_record = json.loads(line)
                    on_first(pipeline.first_record)
                except (ValueError, TypeError):
                    pipeline.first_record = {}
                except Exception as exc:
                    logs.get().warning("jobs database: %s", exc)
            dst.write(line)
            dst.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass
    finally:
        try:
            dst.close()
        except (BrokenPipeError, OSError):
            pass


def summary(record: dict) -> str:
    kernel = record.get("kernel") or {}
    crash = record.get("crash") or {}
    panic = crash.get("panic") or {}
    mail = record.get("mail") or {}
    lines = [
        f"Location: {record.get('workdir')}",
        f"Server:   {crash.get('server') or 'localhost'}",
        f"Kernel:   {kernel.get('release') or 'unknown'} ({kernel.get('machine') or '?'})",
        f"Panic:    {panic.get('message') or 'unknown'}",
    ]
    if panic.get("task"):
        lines.append(f"Task:     {panic['task']} (pid {panic.get('pid')}, cpu {panic.get('cpu')})")
    if isinstance(record.get("triage"), dict):
        lines.append(f"Triage:   {triage_line(record['triage'])}")
    strip = record.get("strip")
    if strip:
        lines.append(f"Strip:    saved {strip['saved_bytes']:,} bytes" if strip.get("replaced")
                     else f"Strip:    core kept ({strip.get('reason')})")
    if mail:
        where = f"sent to {mail.get('to')}" if mail.get("sent") else f"saved as {mail.get('file')}"
        lines.append(f"Mail:     {where}")
    if record.get("error"):
        err = record["error"]
        lines.append(f"Error:    {err.get('step')}: {err.get('message')}")
    return "\n".join(lines)


def run_pipeline(args, cfg) -> int:
    log = logs.get()
    names = ["unpack", "ident", "findkernel", "extract"] + (["strip"] if args.strip else []) + [
        "crash", "triage", "mail"]
    argvs = {n: step_command(n, cfg) for n in names}
    argvs["unpack"] += ["-i", args.identifier, "--job", args.job or args.identifier, args.file]
    if args.modules:
        argvs["extract"].append("-m")
    if args.email:
        argvs["mail"] += ["-e", args.email]
    env = dict(os.environ)
    if cfg.path:
        env["CAS_CONFIG"] = cfg.path
    log.info("pipeline: %s", " | ".join(f"cas-{n}" if n in STEPS else n for n in names))
    jobs = Jobs(cfg)
    pipeline = Pipeline()
    source = args.file
    final: list[dict] = []
    try:
        first = pipeline.spawn("cas-unpack", argvs["unpack"], subprocess.DEVNULL, env)
        second = pipeline.spawn(f"cas-{names[1]}", argvs[names[1]], subprocess.PIPE, env)
        relay = threading.Thread(target=_relay, daemon=True, args=(
            first.stdout, second.stdin, pipeline, lambda r: jobs.start(r, source, args.email)))
        relay.start()
        prev = second
        for name in names[2:]:
            label = f"cas-{name}" if name in STEPS else name
            proc = pipeline.spawn(label, argvs[name], prev.stdout, env)
            prev.stdout.close()  # the child holds it now; our copy would keep the pipe open
            prev = proc
        for line in prev.stdout:
            try:
                final.append(json.loads(line))
            except ValueError:
                log.error("last step printed a line that is not JSON: %.80s", line)
        relay.join()
        for _, proc in pipeline.procs:
            proc.wait()
    except KeyboardInterrupt:
        log.error("interrupted: stopping every step")
        pipeline.stop()
        jobs.finish("failed", None, "interrupted")
        raise
    status = records.EXIT_OK
    broken = [(n, p.returncode) for n, p in pipeline.procs if p.returncode not in (0, 1)]
    for name, code in broken:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        log.error("step %s failed: %s", name, why)
        status = records.EXIT_ERROR
    if not final:
        log.error("the pipeline produced no result record")
        jobs.finish("failed", None, "no result record")
        return records.EXIT_ERROR
    record = final[-1]
    err = record.get("error")
    if err:
        log.error("step %s failed: %s", err.get("step"), err.get("message"))
        status = records.EXIT_ERROR
    jobs.finish("failed" if status else "done", (record.get("kernel") or {}).get("release"),
                f"{err.get('step')}: {err.get('message')}" if err else
                (f"{broken[0][0]} exit {broken[0][1]}" if broken else None))
    if args.json:
        records.write_record(record, sys.stdout)
    else:
        print(summary(record), flush=True)
    return status


def compress_only(args) -> int:
    argv = step_command("unpack", cli.load_config(args)) + ["--compress", args.file]
    if args.config:
        argv += ["--config", args.config]
    return subprocess.call(argv)


def main(argv=None) -> int:
    def body() -> int:
        parser = records.argument_parser(
            PROG, "Run the whole CAS pipeline on a kernel crash dump.",
            "example: cas -i 12345 -f vmcore.12345.tar.xz -e engineer@example.com --job 1")
        parser.add_argument("-i", "--identifier", help="ticket identifier (1-64 of A-Za-z0-9._-)")
        parser.add_argument("-f", "--file", required=True, help="the dump: a path or an http(s)/ftp URL")
        parser.add_argument("-e", "--email", help="mail the results to this address")
        parser.add_argument("-m", "--modules", action="store_true",
                            help="also extract module debug files and load them in crash")
        parser.add_argument("--compress", action="store_true",
                            help="only compress FILE with xz for transfer (FILE.xz)")
        parser.add_argument("--strip", action="store_true",
                            help="shrink the core with makedumpfile -c -d 31 before crash")
        parser.add_argument("--job", help="file the run under this job name (default: the identifier)")
        parser.add_argument("--json", action="store_true", help="print the final record, not a summary")
        cli.add_config_option(parser)
        args = parser.parse_args(argv)
        if args.compress:
            if args.identifier or args.email or args.strip or args.modules:
                raise UsageError(f"{PROG}: --compress takes only -f FILE (and --config)")
            return compress_only(args)
        if not args.identifier:
            raise UsageError(f"{PROG}: -i/--identifier is required (or --compress)")
        try:
            jobdir.check_name(args.identifier, "identifier")
            if args.job:
                jobdir.check_name(args.job, "job name")
            if args.email:
                check_address(args.email)
        except StepError as exc:
            raise UsageError(f"{PROG}: {exc.message}") from None
        cfg = cli.load_config(args)
        return run_pipeline(args, cfg)

    return records.main_wrapper(PROG, body)
