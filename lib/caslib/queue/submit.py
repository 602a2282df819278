"""``cas --queue``: check a job now, queue it for cas-worker, and return.

Why check before queueing: a typo in a path found an hour later by a worker
is an hour lost; the input is opened (a URL is connected to) and closed
here, exactly as cas-unpack will open it, and a bad one is a usage error.
"""

import os
import sys

from caslib.streams import fetch
from caslib import logs, records
from caslib.queue import open_queue
from caslib.records import StepError, UsageError
from caslib.unpack import open_source

PROG = "cas"


def options_from_args(args) -> dict:
    """The stored form of a job: cas's options, paths made absolute for the worker's cwd."""
    source = args.file if fetch.is_url(args.file) else os.path.abspath(args.file)
    opts = {"identifier": args.identifier, "file": source, "email": args.email,
            "modules": bool(args.modules), "strip": bool(args.strip), "job": args.job}
    opts.update(forced_options(args))
    return opts


def forced_options(args) -> dict:
    """--release R, or --vmlinux/--package as absolute paths that must be readable now."""
    out = {"release": None, "vmlinux": None, "package": None}
    if getattr(args, "release", None):
        out["release"] = args.release
    for key in ("vmlinux", "package"):
        path = getattr(args, key, None)
        if path:
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise UsageError(f"{PROG}: --{key} {path}: not a readable file")
            out[key] = os.path.abspath(path)
    return out


def check_input(source: str, cfg) -> None:
    try:
        fh = open_source(source, cfg.downloadTimeout, cfg.transferDeadline)[0]
    except StepError as exc:
        raise UsageError(f"{PROG}: {exc.message}") from None
    fh.close()


def submit(args, cfg) -> int:
    options = options_from_args(args)
    check_input(options["file"], cfg)
    try:
        job = open_queue(cfg).submit(options)
    except StepError as exc:
        logs.get().error("%s", exc.message)
        return records.EXIT_ERROR
    if args.json:
        records.write_record(job, sys.stdout)
    else:
        print(job["job_id"], flush=True)
    return records.EXIT_OK
