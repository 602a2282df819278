"""cas-jobs: every job in one view (queued, running, done, failed, cancelled); cancel, rerun.

``cas-jobs [--state S] [-i ID] [--since DATE] [--json]`` lists (a table on a
terminal, JSON lines otherwise); ``cas-jobs JOB`` shows one job in full;
``cas-jobs --cancel JOB``; ``cas-jobs --rerun JOB [--release R|--vmlinux F|--package P]``.

Why it also repairs: a job whose process is gone on this machine is still
``running`` in the table until someone looks; casuser's cas-jobs does what a
worker does (requeue once, then ``failed``).  Anyone else can list, from a
read-only connection, and changes nothing.
"""

import datetime
import os
import signal
import sys
import time

from caslib import cli, config, logs, records
from caslib.queue import FINAL, STATES, cas_argv, open_queue, pid_alive
from caslib.records import StepError, UsageError
from caslib.queue.report import job_full, table

PROG = "cas-jobs"
CANCEL_WAIT = 60.0


def parse_since(text: str) -> float:
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{PROG}: --since {text!r}: expected a date like 2026-12-03 or "
                         "2026-12-03T14:00") from None
    return when.timestamp()


def load(args, changing: bool):
    """The config, as casuser when possible; (cfg, may_write)."""
    if changing:
        return cli.load_config(args), True
    cfg = config.load(args.config)
    logs.set_level(cli.log_level(args, cfg.debugLevel))
    try:
        if cli.become_casuser(cfg):
            cfg = config.load(args.config)
    except UsageError:
        return cfg, False  # another user: read-only listing
    db = cfg.database
    return cfg, not os.path.exists(db) or os.access(db, os.W_OK)


def cancel(queue, job_id: int) -> dict:
    job = queue.get(job_id)
    if job is None:
        raise StepError(f"no job {job_id}", "not-found")
    if job["state"] in FINAL:
        raise StepError(f"job {job_id} is already {job['state']}", "state")
    if not job["options"]:
        raise StepError(f"job {job_id} is a foreground cas run (pid "
                        f"{(job['worker'] or {}).get('runner')}): stop it where it runs", "state")
    job = queue.cancel(job_id)
    worker = job.get("worker") or {}
    if job["was"] == "running" and worker.get("host") == queue.host:
        runner = worker.get("runner")
        mine = b"--run-job\0%d\0" % job_id  # never signal a process that reused the pid
        if pid_alive(runner, mine):
            os.kill(runner, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            job = queue.get(job_id)
            if job["state"] in FINAL or not pid_alive(runner, mine):
                break
            time.sleep(0.2)
        queue.recover_lost()
        job = dict(queue.get(job_id), was="running")
    return job


def rerun(queue, job_id: int, args, cfg) -> dict:
    from caslib.queue.submit import check_input, forced_options

    old = queue.get(job_id)
    if old is None:
        raise StepError(f"no job {job_id}", "not-found")
    if old["state"] not in FINAL:
        raise UsageError(f"{PROG}: job {job_id} is {old['state']}; rerun it once it has ended "
                         "(or --cancel it first)")
    options = dict(old["options"] or {"identifier": old["identifier"], "file": old["source"],
                                      "email": old["email"], "job": old["job"]})
    if not options.get("identifier") or not options.get("file"):
        raise StepError(f"job {job_id} has no identifier or input to run again", "bad-record")
    forced = forced_options(args)
    if any(forced.values()):
        options.update(forced)
    check_input(options["file"], cfg)
    return queue.submit(options, rerun_of=job_id, attempt=(old["attempt"] or 1) + 1)


def main(argv=None) -> int:
    """cas-jobs's command line (man cas-jobs)."""
    return records.main_wrapper(PROG, run_command, argv)


def parse_args(argv):
    parser = cli.argument_parser(
        PROG, "List, show, cancel and rerun CAS jobs.",
        "examples: cas-jobs --state failed;  cas-jobs 7;  cas-jobs --rerun 7 -r 6.1.0-18-amd64")
    parser.add_argument("job", nargs="?", type=int, metavar="JOB", help="show this job in full")
    cli.option(parser, "--job", dest="job_opt", type=int, metavar="JOB",
               help="show this job in full (same as JOB)")
    parser.add_argument("--state", choices=STATES, help="only jobs in this state")
    cli.option(parser, "--identifier", metavar="ID", help="only jobs of this identifier")
    parser.add_argument("--signature", metavar="SIG",
                        help="only jobs whose crash has this triage signature (cas-triage)")
    parser.add_argument("--since", metavar="DATE", help="only jobs submitted since DATE (ISO 8601)")
    parser.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    parser.add_argument("--cancel", type=int, metavar="JOB", help="cancel a queued or running job")
    parser.add_argument("--rerun", type=int, metavar="JOB", help="queue a new attempt of JOB")
    forced = parser.add_mutually_exclusive_group()
    cli.option(forced, "--release", metavar="R", help="with --rerun: force kernel release R")
    forced.add_argument("--vmlinux", metavar="F", help="with --rerun: use this vmlinux")
    forced.add_argument("--package", metavar="P", help="with --rerun: use this debuginfo package")
    args = parser.parse_args(argv)
    args.job = cli.one_of(args, "job_opt", "job")
    actions = [a for a in (args.job is not None, args.cancel is not None, args.rerun is not None) if a]
    if len(actions) > 1:
        raise UsageError(f"{PROG}: give one of JOB, --cancel JOB, --rerun JOB")
    if (args.release or args.vmlinux or args.package) and args.rerun is None:
        raise UsageError(f"{PROG}: --release/--vmlinux/--package go with --rerun")
    return args


def act(queue, args, cfg, since, as_json: bool):
    """Do what the arguments ask; the dict or text to print (None: already printed)."""
    if args.cancel is not None:
        job = cancel(queue, args.cancel)
        return job if as_json else f"job {job['job_id']}: {job['state']} (was {job.get('was')})"
    if args.rerun is not None:
        job = rerun(queue, args.rerun, args, cfg)
        return job if as_json else (f"{job['job_id']} (attempt {job['attempt']} of "
                                    f"{job['identifier']}: cas {' '.join(cas_argv(job['options']))})")
    if args.job is not None:
        job = queue.get(args.job)
        if job is None:
            raise StepError(f"no job {args.job}", "not-found")
        return job_full(job, as_json)
    jobs = queue.list(args.state, args.identifier, since, args.signature)
    if not as_json:
        return table(jobs)
    for job in jobs:
        records.write_record(job, sys.stdout)
    return None


def run_command(argv) -> int:
    args = parse_args(argv)
    since = parse_since(args.since) if args.since else None
    cfg, may_write = load(args, args.cancel is not None or args.rerun is not None)
    as_json = args.json or not sys.stdout.isatty()
    try:
        queue = open_queue(cfg, readonly=not may_write)
        if may_write:
            queue.recover_lost()
        out = act(queue, args, cfg, since, as_json)
    except StepError as exc:
        logs.get().error("%s", exc.message)
        return records.EXIT_USAGE if exc.kind == "usage" else records.EXIT_ERROR
    if isinstance(out, dict):
        records.write_record(out, sys.stdout)
    elif out is not None:
        print(out, flush=True)
    return records.EXIT_OK

