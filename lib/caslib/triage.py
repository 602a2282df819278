"""cas-triage: what kind of crash, whose fault, how tainted, how far to trust it, seen before?

Reads records from cas-crash and adds ``triage``::

    {kind, evidence, source, culprit {function, module, location, location_from},
     blocked_task, taint {flags, decoded, modules, source}, backtrace, unreliable, trust,
     signature, seen_before [{identifier, job, date, created, kernel, workdir}],
     known_issue {title, url, match, file, line} | null, results [{name, path, size}],
     failed_snippets [{command, snippet, error}], database}

from crash's split results in the job directory (``log``, ``traceback``, ``sys``,
``bt-lines``, ``taint``; caslib.diagnosis.classify, caslib.diagnosis.taint, caslib.diagnosis.trust).  The signature
(caslib.diagnosis.signatures) is stored in the ``signatures`` table of the database with the job's
identifier, and ``seen_before`` lists the earlier jobs with the same one; a match in the
site's ``knownIssues`` file (caslib.diagnosis.knownissues) becomes ``known_issue``.  A database that
cannot be used leaves ``seen_before`` null and says why in ``database``: the analysis
matters more than its bookkeeping.

A record without ``crash`` passes through unchanged (nothing to triage).  Errors (error
record, exit 1): ``bad-record`` (no workdir, crash results of the wrong type, a result path
outside the job directory).
"""

import functools
import os

from caslib.diagnosis import classify, kernlog, knownissues, signatures, taint, trust
from caslib import atomicfile, cli, jobdir, logs, records
from caslib.crashrun import panic, snippets
from caslib.records import StepError

PROG = "cas-triage"
MAX_READ = 16 << 20   # bytes read from one result file at most (the log is the big one)
LOG_TAIL, TAIL_LINES = "log-tail", 200


def _files(record: dict, workdir: str) -> dict:
    crash = record.get("crash")
    if not isinstance(crash, dict):
        raise StepError("record has no crash results (run cas-crash first)", "bad-record")
    files = crash.get("files", {})
    if not isinstance(files, dict):
        raise StepError("crash.files is not an object", "bad-record")
    out = {}
    for name, path in files.items():
        if not isinstance(name, str) or not isinstance(path, str) or not os.path.isabs(path):
            raise StepError(f"crash.files[{name!r}] is not an absolute path", "bad-record")
        if not jobdir.inside(workdir, path):
            raise StepError(f"crash.files[{name!r}] {path} is outside the job directory "
                            f"{workdir}", "bad-record")
        out[name] = path
    output = crash.get("output")
    if output is not None and (not isinstance(output, str) or not jobdir.inside(workdir, output)):
        raise StepError(f"crash.output {output!r} is not a file in the job directory", "bad-record")
    return out


def _read(path: str | None) -> list:
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_READ)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def write_log_tail(workdir: str, files: dict) -> None:
    """``log-tail``: the log's last 200 lines, the panic report without the boot messages.

    Written here, not by a snippet: crash 8.0.2 runs ``log | tail`` and drops its output
    at random ("crash: pipe operation failed").
    """
    lines = _read(files.get("log"))
    if not lines:
        return
    path = os.path.join(workdir, LOG_TAIL)
    try:
        atomicfile.write_text(path, "\n".join(lines[-TAIL_LINES:]) + "\n")
    except OSError as exc:
        logs.get().warning("%s: cannot write: %s", path, exc.strerror)
        return
    files[LOG_TAIL] = path


def _results(files: dict) -> list:
    out = []
    for name, path in files.items():
        try:
            size = os.path.getsize(path)
        except OSError:
            size = None
        out.append({"name": name, "path": path, "size": size})
    return out


def _failed_snippets(crash: dict, cfg) -> list:
    """crash's failed commands with the snippet file each came from, when it can be found."""
    failed = [f for f in crash.get("failed_commands") or [] if isinstance(f, dict)]
    if not failed:
        return []
    sources = {}
    try:
        for path in snippets.snippet_files(snippets.default_directories(cfg)):
            if os.access(path, os.X_OK):
                continue
            for line in _read(path):
                sources.setdefault(line.strip(), os.path.basename(path))
    except StepError:
        pass
    return [{"command": f.get("command"), "snippet": sources.get(f.get("command")),
             "error": f.get("error")} for f in failed]


def _seen_before(record: dict, result: dict, cfg, connect) -> None:
    path = cfg.get("database")
    try:
        conn = connect(path)
    except Exception as exc:  # the analysis matters more than its bookkeeping
        result["database"] = f"{path}: {getattr(exc, 'message', exc)}"
        logs.get().warning("signatures database: %s", result["database"])
        return
    try:
        result["seen_before"] = signatures.seen_before(conn, result["signature"],
                                                       record.get("workdir"))
        culprit = (result.get("culprit") or {}).get("function")
        signatures.store(conn, record, result["signature"], result["kind"], culprit)
    except Exception as exc:
        result["database"] = f"{path}: {exc}"
        logs.get().warning("signatures database: %s", result["database"])
    finally:
        conn.close()


def _known_issue(result: dict, message: str | None, cfg) -> None:
    path = cfg.get("knownIssues")
    if not path:
        return
    try:
        entries = knownissues.load(path)
    except OSError as exc:
        logs.get().warning("%s: cannot read the known-issues file: %s", path, exc.strerror)
        result["trust"].append(f"known-issues file {path} unreadable: {exc.strerror}")
        return
    result["known_issue"] = knownissues.match(entries, result, message, path)


def analyse(record: dict, files: dict) -> dict:
    """The triage of one job from its result files (no database, no known issues)."""
    crash = record["crash"]
    sys_fields = panic.parse_sys(_read(files.get("sys")) + _read(crash.get("output")))
    summary = crash.get("panic") if isinstance(crash.get("panic"), dict) else {}
    message = summary.get("message")
    log_lines = _read(files.get("log"))
    tb_lines = _read(files.get("traceback"))
    bt = panic.panic_backtrace(tb_lines, summary.get("pid"), summary.get("task_address"))
    found = classify.analyse(message, log_lines, bt.frames if bt else [])
    culprit = found["culprit"]
    if culprit is not None and not culprit.get("location"):
        where = classify.bt_lines(_read(files.get("bt-lines"))).get(culprit["function"])
        if where:
            culprit.update(location=where, location_from="crash bt -l")
    clean = kernlog.clean(log_lines)
    result = dict(found)
    result["taint"] = taint.summary(kernlog.taint_string(clean), taint.mod_t(_read(files.get("taint"))),
                                    kernlog.modules_linked_in(clean), taint.log_tainters(clean))
    result["trust"] = trust.notes(record, sys_fields, tb_lines, found["source"])
    result["signature"] = signatures.compute(found["kind"], culprit, found["backtrace"])
    result.update(seen_before=None, known_issue=None, database=None)
    return result


def process(record: dict, cfg, connect=None) -> dict:
    if "crash" not in record:  # e.g. cas-crash replaced in [pipeline]: nothing to triage
        logs.get().info("no crash results in the record: nothing to triage")
        return record
    workdir = record.get("workdir")
    if not isinstance(workdir, str) or not os.path.isabs(workdir) or not os.path.isdir(workdir):
        raise StepError(f"record has no job directory (workdir {workdir!r})", "bad-record")
    files = _files(record, workdir)
    try:
        result = analyse(record, files)
    except Exception as exc:  # a log we cannot read must not cost the engineer the mail
        logs.get().error("triage of %s failed: %s: %s", workdir, type(exc).__name__, exc)
        result = {"kind": "unknown", "evidence": None, "source": None, "culprit": None,
                  "blocked_task": None, "taint": None, "backtrace": [], "unreliable": [],
                  "trust": [f"triage failed ({type(exc).__name__}: {exc}): read the results"],
                  "signature": None, "seen_before": None, "known_issue": None,
                  "database": None}
    message = (record["crash"].get("panic") or {}).get("message")
    if result["signature"]:
        _known_issue(result, message, cfg)
        if connect is None:
            from caslib import db
            connect = db.connect
        _seen_before(record, result, cfg, connect)
    write_log_tail(workdir, files)
    result["results"] = _results(files)
    result["failed_snippets"] = _failed_snippets(record["crash"], cfg)
    culprit = result["culprit"] or {}
    logs.get().info("triage: %s in %s%s, signature %s, seen before %s", result["kind"],
                    culprit.get("function") or "?",
                    f" [{culprit['module']}]" if culprit.get("module") else "",
                    result["signature"], len(result["seen_before"] or []))
    record["triage"] = result
    return record


def main(argv=None) -> int:
    """cas-triage's command line (man cas-triage)."""
    return records.main_wrapper(PROG, run_command, argv)


def run_command(argv) -> int:
    parser = cli.argument_parser(
        PROG, "Say what kind of crash it is, whose fault, how tainted, and if seen before.",
        epilog="Reads records (from cas-crash) on stdin.")
    args = parser.parse_args(argv)
    cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    return records.run(PROG, functools.partial(process, cfg=cfg))

