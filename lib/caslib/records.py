"""The record contract every CAS filter shares (man/cas-records.7).

A filter is a function ``process(record) -> record``.  This module owns
everything around it so no filter re-implements it: reading JSON lines from
stdin (or a first record built from arguments), passing error records
through untouched, turning a failure into an ``error`` key, writing and
flushing one line per record, logging into the job's process log, the
quiet exit on a broken pipe and the exit status (0 ok, 1 some record
carries an error, 2 usage).
"""

import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator

from caslib import jsonlines, logs

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class StepError(Exception):
    """A failure of one record: becomes ``record["error"]``.

    ``kind`` is a short word scripts can switch on (``not-found``,
    ``corrupt``, ``truncated``, ``unsafe``, ``timeout``, ...).
    """

    def __init__(self, message: str, kind: str = "failed", partial: dict | None = None):
        super().__init__(message)
        self.message = " ".join(str(message).split())  # always one line
        self.kind = kind
        self.partial = partial  # the record with what the step did get done, if any


class UsageError(Exception):
    """Bad flags or an unreadable config: exit 2 before any record."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwind (cleaning up partial files), exit 128+signum."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


def exit_status_for(exc: KeyboardInterrupt) -> int:
    return 128 + getattr(exc, "signum", signal.SIGINT)


def error_record(record: dict, step: str, message: str, kind: str = "failed") -> dict:
    """Return ``record`` with an error added (other keys kept, in order)."""
    out = dict(record)
    out["error"] = {"step": step, "message": " ".join(str(message).split()), "kind": kind}
    return out


def _parse_line(line: str, too_long: bool, lineno: int) -> tuple[dict | None, str | None]:
    """(record, None) for a sound line, else (None, why it is not one)."""
    if too_long:
        return None, f"stdin line {lineno}: longer than {jsonlines.MAX_LINE} characters"
    try:
        record = json.loads(line)
    except ValueError as exc:
        return None, f"stdin line {lineno}: not JSON ({exc.msg})"
    except RecursionError:
        return None, f"stdin line {lineno}: nested deeper than {jsonlines.MAX_DEPTH} levels"
    if not isinstance(record, dict):
        return None, f"stdin line {lineno}: not a JSON object"
    if jsonlines.depth(record) > jsonlines.MAX_DEPTH:
        return None, f"stdin line {lineno}: nested deeper than {jsonlines.MAX_DEPTH} levels"
    return record, None


def read_records(stream, step: str) -> Iterator[dict]:
    """Yield records from JSON lines; a line that is not a sound object becomes an error record
    (its message also on stderr), and the lines after it are still read."""
    for lineno, (line, too_long) in enumerate(jsonlines.bounded_lines(stream), 1):
        if not line.strip():
            continue
        record, why = _parse_line(line, too_long, lineno)
        if why:
            logs.get().error("%s", why)
            yield error_record({"input": line.rstrip("\n")[:200]}, step, why, "bad-record")
            continue
        yield record


_record_check = None  # set by cli.load_config: pathsafety.check_record


def set_record_check(check) -> None:
    """Install the check every record gets before its step runs
    (``check(record, trusted, step)``)."""
    global _record_check
    _record_check = check


def write_record(record: dict, stream) -> None:
    stream.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")
    stream.flush()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def apply(step: str, process: Callable[[dict], dict], record: dict,
          log=None, trusted: bool = False) -> dict:
    """Run ``process`` on one record under the contract; never raises.

    Error records pass through untouched.  The record is checked first
    (names, types, paths: ``pathsafety``; ``trusted`` records came from the
    command line), then the job's process log (when the record names a
    ``workdir`` and ``job``) receives this step's log lines.
    """
    if "error" in record:
        return record
    log = log or logs.get()
    if _record_check is not None:
        try:
            _record_check(record, trusted, step)
        except StepError as exc:
            log.error("%s", exc.message)
            return error_record(record, step, exc.message, exc.kind)
    with logs.job_log(record), logs.hold_info() as drop_info:
        try:
            out = process(dict(record))
        except StepError as exc:
            drop_info()  # the error is the one line; the narrative stays in the job log
            log.error("%s", exc.message)
            return error_record(exc.partial if exc.partial is not None else record,
                                step, exc.message, exc.kind)
        except OSError as exc:
            message = _one_line(exc)
            drop_info()
            log.error("%s", message)
            from caslib.errors import kind_of_oserror  # errors imports this module
            return error_record(record, step, message, kind_of_oserror(exc))
        except KeyboardInterrupt as exc:
            # the record in progress still gets its line on stdout (run() writes it)
            partial = getattr(exc, "partial", None)
            name = "SIGTERM" if getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM else "SIGINT"
            exc.error_record = error_record(partial if partial is not None else record, step,
                                            f"interrupted by {name}", "interrupted")
            raise
        except SystemExit:
            raise
        except Exception as exc:  # a bug: one line on stdout, the traceback only in the log
            log.debug("internal error", exc_info=True)
            message = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
            drop_info()
            log.error("%s", message)
            return error_record(record, step, message, "internal")
    return out


def _quiet_broken_pipe() -> int:
    """Stdout's reader went away: exit quietly, as cat does (status 141)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 128 + signal.SIGPIPE


def run(step: str, process: Callable[[dict], dict], initial: Iterable[dict] | None = None,
        stdin=None, stdout=None, trusted: bool | None = None) -> int:
    """Drive a filter: records from ``initial`` (built from arguments) or stdin.

    ``trusted`` defaults to whether ``initial`` was given; a filter that passes
    stdin's records through a generator as ``initial`` says ``trusted=False``.

    Each record is written and flushed as soon as it is done, so a pipeline
    streams.  Returns the exit status of man/cas-records.7.
    """
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    log = logs.get()
    source = initial if initial is not None else read_records(stdin, step)
    if trusted is None:
        trusted = initial is not None
    status = EXIT_OK
    try:
        for record in source:
            out = apply(step, process, record, log, trusted=trusted)
            if "error" in out:
                status = EXIT_ERROR
            write_record(out, stdout)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt as exc:
        log.error("interrupted")
        out = getattr(exc, "error_record", None)
        if out is not None:
            try:
                write_record(out, stdout)
            except OSError:
                pass
        return exit_status_for(exc)
    return status


def main_wrapper(prog: str, body: Callable[..., int], *args) -> int:
    """Run a command's ``body(*args)``: usage errors exit 2 with one line, never a traceback."""
    logs.setup(prog)
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return body(*args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt as exc:
        logs.get().error("interrupted")
        return exit_status_for(exc)
