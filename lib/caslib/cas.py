"""cas: the whole pipeline, from a customer's dump to a mailed first analysis.

``cas -i ID -f FILE [-e EMAIL] [-m] [--strip] [--job JOB]`` runs the step
executables as a real pipeline of processes::

    cas-unpack | cas-ident | cas-dmesg | cas-findkernel | cas-extract [| strip] | cas-crash
      | cas-triage | cas-mail

Steps are connected by OS pipes; the driver only taps the first link to learn
the job directory (for the jobs table) and reads the last step's records.
Any step can be replaced by another command from the config's
``[pipeline]`` section.  The driver checks every child's exit status, says
which step failed and why, records the job (running, done, failed) in the
database, and on SIGINT/SIGTERM stops every child and marks the job failed.

Exit status: 0 when the job completed with crash's analysis, 3 when it
completed with a partial analysis (``analysis: "log-only"``: no debuginfo,
or extraction or crash failed, and the mail carries the kernel log's panic
summary and tail instead), 1 when it failed, 2 for usage errors.

``cas -f FILE --compress`` alone compresses a core for transfer
(``cas-unpack --compress``).
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from caslib import cli, config, jobdir, lifeline, logs, records
from caslib.queue import jobsreap
from caslib.mail import check_address
from caslib.messages import htmlreport
from caslib.messages.runsummary import summary
from caslib.records import StepError, UsageError

PROG = "cas"
EXIT_PARTIAL = 3  # completed with a partial (log-only) analysis


def step_command(step: str, cfg) -> list:
    """argv of one step: the config's replacement, else our sibling executable, else PATH."""
    if step in cfg.pipeline:
        return list(cfg.pipeline[step])
    if step == "strip":  # this caslib's, not whichever one -m would find on sys.path
        lib = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                "from caslib.strip import main; sys.exit(main())", lib]
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

    def __init__(self, cfg, email: str | None = None):
        self.cfg, self.row, self.email = cfg, None, email

    def _execute(self, sql: str, params: tuple):
        from caslib import db

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
        from caslib.queue import this_host

        now = time.time()
        self.row = self._execute(
            "INSERT INTO jobs (job, identifier, workdir, source, state, submitted, started, email, "
            "pid, host) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
            (record.get("job"), record.get("id"), record["workdir"], source, now, now,
             email, os.getpid(), this_host()))

    def finish(self, state: str, release: str | None, error: str | None,
               record: dict | None = None) -> None:
        if self.row is not None:
            err = (record or {}).get("error") or {"step": None, "kind": None, "message": error}
            rec = record or {}
            panic = (((rec.get("crash") or {}).get("panic") or {}).get("message")
                     or ((rec.get("dmesg") or {}).get("panic") or {}).get("message"))
            self._execute("UPDATE jobs SET state = ?, finished = ?, release = ?, error = ?, "
                          "error_step = ?, error_kind = ?, error_message = ?, panic = ? "
                          "WHERE id = ?", (state, time.time(), release, error, err.get("step"),
                                           err.get("kind"), err.get("message") if error else None,
                                           panic, self.row))
        if state == "failed" and error != "interrupted":
            from caslib.messages import failmail

            failmail.notify(self.cfg, self.row, record, self.email)


class Pipeline:
    """The running children, in order, with their names for messages."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.first_record: dict | None = None
        self.started = time.monotonic()
        self.ended: dict[int, float] = {}  # step index -> when it exited
        self.noted: list[threading.Event] = []  # set once ended[index] is written

    def spawn(self, name, argv, stdin, env):
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, env=env,
                                    preexec_fn=lifeline.preexec())  # dies with cas
        except OSError as exc:
            raise UsageError(f"{PROG}: cannot start {name} ({argv[0]}): {exc.strerror}") from None
        self.procs.append((name, proc))
        self.noted.append(threading.Event())
        threading.Thread(target=self._report, args=(name, proc, len(self.procs) - 1),
                         daemon=True).start()
        return proc

    def _report(self, name, proc, index) -> None:
        """One progress line per step, when it ends, with the step's own time: all steps
        start together, but a step works from when its input ended (the step before it
        exited) until it exits."""
        code = proc.wait()
        now = time.monotonic()
        self.ended[index] = now
        self.noted[index].set()
        before = None
        # normally the step before has exited already (that ended our input) and its thread
        # notes when at once; a step that ended before its input did worked since the start
        if index > 0 and self.noted[index - 1].wait(1.0):
            before = self.ended[index - 1]
        took = max(0.0, now - before) if before is not None else now - self.started
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


def step_argvs(args, cfg) -> tuple[list, dict]:
    """The steps of this run, in order, and each one's argv (options passed to the step
    that applies them; -q/-v to our own steps, not to a [pipeline] replacement)."""
    names = list(config.PIPELINE_STEPS)
    if args.strip:  # the optional stage, between extract (its vmlinux) and crash
        names.insert(names.index("crash"), "strip")
    argvs = {n: step_command(n, cfg) for n in names}
    argvs["unpack"] += ["-i", args.identifier, "--job", args.job or args.identifier, "--",
                        args.file]  # after --: a file named -rf is a file
    for opt in ("release", "vmlinux", "package"):  # overrides: cas-findkernel applies them
        if getattr(args, opt):
            argvs["findkernel"].append(f"--{opt}={getattr(args, opt)}")
    if args.modules:
        argvs["extract"].append("-m")
    if args.email:
        argvs["mail"] += ["-e", args.email]
    if "dmesg" not in cfg.pipeline:
        argvs["dmesg"].append("--keep-going")  # an unreadable log never fails the job
    level = ["-q"] if getattr(args, "quiet", False) else ["-v"] * (getattr(args, "verbose", 0) or 0)
    for name in names:
        if level and name not in cfg.pipeline:
            argv = argvs[name]
            at = argv.index("--") if "--" in argv else len(argv)
            argv[at:at] = level
    return names, argvs


def start_steps(pipeline: Pipeline, names: list, argvs: dict, env: dict, on_first):
    """Spawn every step, each reading the one before; the first link is relayed by a
    thread that calls ``on_first(record)``.  Returns (relay thread, last step)."""
    first = pipeline.spawn("cas-unpack", argvs["unpack"], subprocess.DEVNULL, env)
    second = pipeline.spawn(f"cas-{names[1]}", argvs[names[1]], subprocess.PIPE, env)
    relay = threading.Thread(target=_relay, daemon=True,
                             args=(first.stdout, second.stdin, pipeline, on_first))
    relay.start()
    prev = second
    for name in names[2:]:
        label = f"cas-{name}" if name in config.PIPELINE_STEPS else name
        proc = pipeline.spawn(label, argvs[name], prev.stdout, env)
        prev.stdout.close()  # the child holds it now; our copy would keep the pipe open
        prev = proc
    return relay, prev


def collect(pipeline: Pipeline, relay, last) -> list[dict]:
    """The last step's records, once every step has exited."""
    final = []
    for line in last.stdout:
        try:
            final.append(json.loads(line))
        except ValueError:
            logs.get().error("last step printed a line that is not JSON: %.80s", line)
    relay.join()
    for _, proc in pipeline.procs:
        proc.wait()
    return final


def broken_steps(pipeline: Pipeline) -> list[tuple[str, int]]:
    """The steps that ended other than with status 0 or 1, each said on stderr."""
    broken = [(n, p.returncode) for n, p in pipeline.procs if p.returncode not in (0, 1)]
    for name, code in broken:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        logs.get().error("step %s failed: %s", name, why)
    return broken


def finish(pipeline: Pipeline, record: dict, jobs) -> int:
    """Say which step failed and why, record the job's end; the exit status."""
    log = logs.get()
    broken = broken_steps(pipeline)
    status = records.EXIT_ERROR if broken else records.EXIT_OK
    htmlreport.keep(record)  # record.json and report.html into the job directory
    err = record.get("error")
    if err:
        log.error("step %s failed: %s", err.get("step"), err.get("message"))
        status = records.EXIT_ERROR
    if status == records.EXIT_OK and record.get("analysis") == "log-only":
        status = EXIT_PARTIAL
        err = record.get("analysis_error") or {}
        log.warning("partial analysis (log-only): %s: %s", err.get("step"), err.get("message"))
    if err:
        why = f"{'log-only: ' if status == EXIT_PARTIAL else ''}{err.get('step')}: " \
              f"{err.get('message')}"
    else:
        why = f"{broken[0][0]} exit {broken[0][1]}" if broken else None
    jobs.finish("failed" if status == records.EXIT_ERROR else "done",
                (record.get("kernel") or {}).get("release"), why, record)
    return status


def run_pipeline(args, cfg, jobs=None) -> int:
    """Run one job in the foreground; ``jobs`` records it (default: a new row of the table)."""
    log = logs.get()
    names, argvs = step_argvs(args, cfg)
    env = dict(os.environ)
    if cfg.path:
        env["CAS_CONFIG"] = cfg.path
    log.info("pipeline: %s",
             " | ".join(f"cas-{n}" if n in config.PIPELINE_STEPS else n for n in names))
    jobs = jobs or Jobs(cfg, args.email)
    jobsreap.reap(cfg)  # rows of runs killed before they could say so
    pipeline = Pipeline()
    try:
        relay, last = start_steps(pipeline, names, argvs, env, functools.partial(
            jobs.start, source=args.file, email=args.email))
        final = collect(pipeline, relay, last)
    except KeyboardInterrupt:
        log.error("interrupted: stopping every step")
        pipeline.stop()
        jobs.finish("failed", None, "interrupted")
        raise
    if not final:
        broken_steps(pipeline)
        log.error("the pipeline produced no result record")
        jobs.finish("failed", None, "no result record")
        return records.EXIT_ERROR
    record = final[-1]
    status = finish(pipeline, record, jobs)
    if args.json:
        records.write_record(record, sys.stdout)
    else:
        print(summary(record), flush=True)
    return status


def compress_only(args) -> int:
    argv = step_command("unpack", cli.load_config(args)) + [f"--compress={args.file}"]
    if args.config:
        argv += ["--config", args.config]
    return subprocess.call(argv)


def main(argv=None) -> int:
    """cas's command line (man cas)."""
    return records.main_wrapper(PROG, run_command, argv)


def check_args(args) -> None:
    """What argparse cannot check: names, the address, one override, files that exist."""
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
    if sum(bool(x) for x in (args.release, args.vmlinux, args.package)) > 1:
        raise UsageError(f"{PROG}: give one of --release, --vmlinux, --package")
    for opt in ("vmlinux", "package"):
        path = getattr(args, opt)
        if path is not None:
            if not os.path.isfile(path):
                raise UsageError(f"{PROG}: --{opt} {path}: no such file")
            setattr(args, opt, os.path.abspath(path))


def run_command(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.compress:
        if args.identifier or args.email or args.strip or args.modules or args.queue:
            raise UsageError(f"{PROG}: --compress takes only -f FILE (and --config)")
        return compress_only(args)
    check_args(args)
    cfg = cli.load_config(args)
    if args.queue:
        from caslib.queue.submit import submit

        return submit(args, cfg)
    return run_pipeline(args, cfg)


def build_parser():
    """cas's arguments (the queue stores a job as these and the worker parses them back)."""
    parser = cli.argument_parser(
        PROG, "Run the whole CAS pipeline on a kernel crash dump.",
        "example: cas -i 12345 -f vmcore.12345.tar.xz -e engineer@example.com -j 1")
    cli.option(parser, "--identifier", help="ticket identifier (1-64 of A-Za-z0-9._-)")
    cli.option(parser, "--file", required=True, help="the dump: a path or an http(s)/ftp URL")
    parser.add_argument("-e", "--email", help="mail the results to this address")
    parser.add_argument("-m", "--modules", action="store_true",
                        help="also extract module debug files and load them in crash")
    parser.add_argument("--compress", action="store_true",
                        help="only compress FILE with xz for transfer (FILE.xz)")
    parser.add_argument("--strip", action="store_true",
                        help="shrink the core with makedumpfile -c -d 31 before crash")
    cli.option(parser, "--job", help="file the run under this job name (default: the identifier)")
    parser.add_argument("--json", action="store_true", help="print the final record, not a summary")
    parser.add_argument("--queue", action="store_true",
                        help="check the arguments and the input, queue the job for cas-worker, return")
    cli.option(parser, "--release", metavar="R",
               help="look up this kernel release instead of the identified one")
    parser.add_argument("--vmlinux", metavar="FILE", help="use this vmlinux for the dump")
    parser.add_argument("--package", metavar="PKG",
                        help="take the vmlinux from this debuginfo package")
    return parser
