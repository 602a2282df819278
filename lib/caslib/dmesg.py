"""cas-dmesg: the kernel log of a dump, read with VMCOREINFO alone (no vmlinux needed).

``cas-dmesg FILE...`` prints each dump's log as ``dmesg`` does, with
``[seconds.micro]`` stamps, line for line as ``makedumpfile --dump-dmesg``
writes it.  With no FILE it is a filter: it reads ``core`` and ``workdir``
and writes the log to ``<workdir>/dmesg``, adding::

    dmesg: {file, lines, layout, panic_lines, panic, warnings}

``lines`` counts the log's lines, ``layout`` is ``lockless`` (5.10+),
``variable`` (3.5-5.9) or ``plain`` (older), ``panic_lines`` the last
oops/panic report (at most 60 lines), ``panic`` the summary parsed from it
(logpanic.py), ``warnings`` what was wrong with a corrupt ring (the log is
then partial).  With ``--keep-going`` (what ``cas`` uses) a dump whose log
cannot be read is not an error: ``dmesg: {file: null, reason}`` goes on and
the analysis continues.

Errors: ``not-found``, ``bad-record``, ``compressed``, ``not-a-dump``,
``unsupported`` (diskdump), ``no-vmcoreinfo``, ``unmapped``, ``no-log`` (no readable printk buffer),
``truncated``, ``corrupt``.
"""

import functools
import os
import sys

from caslib.errors import FormatError
from caslib import atomicfile, cli, jobdir, logs, magic, records
from caslib.diagnosis import logpanic
from caslib.dumps import printk, vmem
from caslib.dumps.flattened import open_source
from caslib.records import StepError

PROG = "cas-dmesg"


def read(path: str):
    """(printk.Log, facts) of the dump at ``path``; FormatError with a kind on failure."""
    with open_source(path) as src:
        if hasattr(src, "walk_all"):
            src.walk_all()  # a flattened stream cut short is an error, not a shorter dump
        if src.size == 0:
            raise FormatError("empty file", "empty")
        head = src.read(0, 8)
        name = magic.packed(head)
        if name and name != "an RPM":
            raise FormatError(f"{name} data, not a dump (unpack it with cas-unpack)",
                            "compressed")
        mem, vmci, facts = vmem.open_memory(src, head)
        log = printk.read_log(mem, vmci)  # FormatError 'no-log' when there is none
        facts["bytes_read"] = src.bytes_read
        return log, facts


def _write(path: str, lines: list) -> None:
    with atomicfile.replacing(path, perm=0o600) as fh:
        for line in lines:
            fh.write(line.encode("latin-1") + b"\n")


def _path(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise StepError(f"record has no {key}", "bad-record")
    if not os.path.isabs(value):
        raise StepError(f"{key} {value!r} is not an absolute path", "bad-record")
    return value


def process(record: dict, keep_going: bool = False) -> dict:
    """Read the log of ``record["core"]`` into ``<workdir>/dmesg`` and add ``dmesg``."""
    core, workdir = _path(record, "core"), _path(record, "workdir")
    if not os.path.isdir(workdir):
        raise StepError(f"{workdir}: job directory does not exist", "bad-record")
    if not os.path.isfile(core):
        raise StepError(f"{core}: no such file", "not-found")
    log_ = logs.get()
    try:
        log, facts = read(core)
    except (FormatError, OSError) as exc:
        message = f"{core}: {exc.strerror if isinstance(exc, OSError) else exc}"
        if keep_going:
            log_.warning("no kernel log: %s", message)
            record["dmesg"] = {"file": None, "reason": message}
            return record
        raise StepError(message, getattr(exc, "kind", "os-error")) from None
    except Exception as exc:  # a reader bug must not cost the job its crash analysis
        if not keep_going:
            raise
        log_.debug("internal error", exc_info=True)
        record["dmesg"] = {"file": None,
                           "reason": f"{core}: internal error: {type(exc).__name__}: {exc}"}
        log_.warning("no kernel log: %s", record["dmesg"]["reason"])
        return record
    lines = log.lines()
    out = os.path.join(workdir, "dmesg")
    if not jobdir.inside(workdir, out):
        raise StepError(f"{out} lies outside the job directory", "bad-record")
    _write(out, lines)
    for warning in log.warnings:
        log_.warning("%s: %s", os.path.basename(core), warning)
    summary = logpanic.summary(lines)
    record["dmesg"] = {"file": out, "lines": len(lines), "layout": log.layout,
                       "panic_lines": summary.pop("oops"), "panic": summary,
                       "warnings": log.warnings}
    log_.info("%s: %d log lines (%s ring) in %s; panic: %s", os.path.basename(core), len(lines),
              log.layout, out, summary["message"] or "none found")
    return record


def print_logs(paths: list) -> int:
    """``cas-dmesg FILE...``: each log on stdout; one error line per unreadable dump."""
    status = records.EXIT_OK
    for path in paths:
        try:
            log, _ = read(path)
        except (FormatError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            logs.get().error("%s: %s", path, why)
            status = records.EXIT_ERROR
            continue
        if len(paths) > 1:
            sys.stdout.write(f"==> {path} <==\n")
            sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(line.encode("latin-1") + b"\n" for line in log.lines()))
        sys.stdout.flush()
        for warning in log.warnings:
            logs.get().warning("%s: %s (the log is partial)", path, warning)
            status = records.EXIT_ERROR
    return status


def main(argv=None) -> int:
    """cas-dmesg's command line (man cas-dmesg)."""
    return records.main_wrapper(PROG, run_command, argv)


def run_command(argv) -> int:
    parser = cli.argument_parser(
        PROG, "Read the kernel log of a dump from its memory, with no vmlinux.",
        "With FILE: print the log. Without: a filter adding dmesg to each record.")
    parser.add_argument("--keep-going", action="store_true",
                        help="filter: a dump whose log cannot be read passes on with"
                             " dmesg.file null instead of an error record")
    cli.add_files(parser, "a dump file to print")
    args = parser.parse_args(argv)
    files = cli.files(args)
    if not files:
        cli.refuse_terminal(parser)
    cli.load_config(args)
    if files:
        return print_logs(files)
    return records.run(PROG, functools.partial(process, keep_going=args.keep_going))

