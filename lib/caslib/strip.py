"""The ``--strip`` stage of ``cas``: a smaller kdump-compressed core made by makedumpfile.

``makedumpfile -c -d 31`` drops zero, cache, user and free pages and
compresses the rest.  It reads the kernel's layout from the dump's
VMCOREINFO when the dump has one (0.2 s), else from the extracted vmlinux
(``-x``, ~20 s of DWARF loading).  The stripped core replaces the job's core
only when it is smaller; the user's own file is never touched (the job's core
may be a hard link to it: we rename over the link, never write through it).

Reads ``core``, ``format``, ``ident_method``, ``vmlinux``, ``workdir``; adds
``strip``: ``{original_bytes, stripped_bytes, saved_bytes, replaced, reason}``.
A dump makedumpfile cannot read is reported in ``strip.reason`` and the job
goes on with the original core: stripping is an optimisation, not a result.
Run as ``python -m caslib.strip`` (records in, records out), which is how
``cas --strip`` places it between cas-extract and cas-crash.
"""

import functools
import os
import shutil
import subprocess

from caslib import cli, logs, records
from caslib.records import StepError

PROG = "cas-strip"
TIMEOUT = 3600


def process(record: dict, cfg=None, command: str = "makedumpfile") -> dict:
    core, workdir = record.get("core"), record.get("workdir")
    if not core or not workdir:
        raise StepError("record has no core or workdir to strip", "bad-record")
    binary = shutil.which(command)
    if not binary:
        raise StepError(f"{command} not found: install the Debian package makedumpfile", "missing-tool")
    original = os.stat(core).st_size
    if isinstance(record.get("cores"), list) and len(record["cores"]) > 1:
        # makedumpfile reads one file: a part alone would lose the other parts' pages
        record["strip"] = {"original_bytes": original, "stripped_bytes": None, "saved_bytes": 0,
                           "replaced": False, "reason": "a split dump: kept its parts as they are"}
        logs.get().info("not stripping: %s", record["strip"]["reason"])
        return record
    out = os.path.join(workdir, "." + os.path.basename(core) + ".strip.part")
    argv = [binary, "-c", "-d", "31"]
    if record.get("ident_method") != "vmcoreinfo" and record.get("vmlinux"):
        argv += ["-x", record["vmlinux"]]
    argv += [core, out]
    log = logs.get()
    log.info("stripping %s: %s", core, " ".join(argv))
    result = {"original_bytes": original, "stripped_bytes": None, "saved_bytes": 0,
              "replaced": False, "reason": None}
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=TIMEOUT)
        if proc.returncode != 0 or not os.path.exists(out):
            lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
            why = lines[-1].strip() if lines else f"exit status {proc.returncode}"
            result["reason"] = f"makedumpfile could not strip this dump: {why}"
            log.warning("%s", result["reason"])
        else:
            stripped = os.stat(out).st_size
            result["stripped_bytes"] = stripped
            if stripped < original:
                os.replace(out, core)
                result.update(replaced=True, saved_bytes=original - stripped)
                record["core_bytes"] = stripped
                record["format"] = "kdump"
                log.info("stripped core: %d -> %d bytes (saved %d)", original, stripped,
                         original - stripped)
            else:
                result["reason"] = "stripped core is not smaller; original kept"
    except subprocess.TimeoutExpired:
        result["reason"] = f"makedumpfile timed out after {TIMEOUT} s"
    finally:
        if os.path.exists(out):
            os.unlink(out)
    record["strip"] = result
    return record


def main(argv=None) -> int:
    """cas-strip's command line (man cas-strip)."""
    return records.main_wrapper(PROG, run_command, argv)


def run_command(argv) -> int:
    parser = cli.argument_parser(PROG, "Strip the records' cores with makedumpfile -c -d 31.")
    args = parser.parse_args(argv)
    cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    return records.run(PROG, functools.partial(process, cfg=cfg))


if __name__ == "__main__":
    raise SystemExit(main())
