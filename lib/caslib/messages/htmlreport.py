"""A job's report as HTML: ``report.html`` in the job directory, the mail's text/html part,
and the body of cas-web's job page.

Why one renderer: the page a ticket links to, the file kept with the job and the mail
must say the same thing.  Everything taken from a record or a result file came from a
dump (a customer controls task names, log lines, crash output): it is escaped here,
always, by ``esc``.  Files are read only inside the job directory and only so much.
"""

import html
import os
import re
import tempfile

from caslib import jobdir
from caslib.messages import summary

MAX_FILE_SHOWN = 256 * 1024   # bytes of one result file put into the page
MAX_LOG_READ = 4 << 20        # bytes of the kernel log read, from its end
LOG_BEFORE, LOG_AFTER, LOG_MAX = 25, 60, 800
RESULT_ORDER = ("traceback", "sys", "log", "modules", "memory")
PANIC_LINE = re.compile(r"Kernel panic|sysrq: Trigger a crash|sysrq triggered crash|BUG: |Oops[: ]"
                        r"|general protection fault|Unable to handle|RIP: |Call Trace|kernel BUG"
                        r"|soft lockup|hard LOCKUP|blocked for more than")

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#243447;color:#fff;padding:.6em 1.2em}header a{color:#fff;margin-right:1em}
main{padding:1em 1.5em;max-width:1400px}h1{font-size:1.35em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff}td,th{padding:.3em .6em;border-bottom:1px solid #dde;
text-align:left;vertical-align:top}th{background:#eef1f5}
pre{background:#fff;border:1px solid #dde;padding:.6em;overflow-x:auto;font-size:.85em;line-height:1.35}
.summary{background:#fff;border-left:5px solid #243447;padding:.5em 1em}
.summary dt{font-weight:bold;float:left;width:9em}.summary dd{margin-left:9.5em}
.state{display:inline-block;padding:.05em .5em;border-radius:.8em;font-size:.85em;color:#fff}
.s-done{background:#2e7d32}.s-failed{background:#c62828}.s-running{background:#1565c0}
.s-queued{background:#6d6d6d}.s-cancelled{background:#8d6e63}
.hl{background:#fff3b0;font-weight:bold;display:inline-block;width:100%}
.unreliable{color:#9a9a9a}.err{background:#ffebee;border-left:5px solid #c62828;padding:.5em 1em}
form.inline{display:inline-block;margin-right:1em}input,select,button{font-size:.95em}
.muted{color:#667}.nowrap{white-space:nowrap}#jobs{width:100%;font-size:.9em}#jobs td{padding:.3em .45em}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value) -> list:
    return value if isinstance(value, list) else []


def document(title: str, body: str, refresh: int | None = None, nav: str = "") -> str:
    """A whole page, CSS inline, nothing fetched from anywhere."""
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\">{meta}"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><b>CAS</b> {nav}</header><main>{body}</main></body></html>\n")


def state_badge(state, label=None) -> str:
    state = str(state or "unknown")
    css = state if state in ("done", "failed", "running", "queued", "cancelled") else "queued"
    return f'<span class="state s-{css}">{esc(label or state)}</span>'


def read_inside(workdir: str, path, limit: int = MAX_FILE_SHOWN, tail: bool = False):
    """(text, cut) of a file inside the job directory, or None when it is not one."""
    if not workdir or not isinstance(path, str) or not jobdir.inside(workdir, path):
        return None
    try:
        with open(path, "rb") as fh:
            if not os.path.isfile(path):
                return None
            size = os.fstat(fh.fileno()).st_size
            if tail and size > limit:
                fh.seek(size - limit)
            data = fh.read(limit + 1)
    except OSError:
        return None
    cut = len(data) > limit or (tail and size > limit)
    return data[:limit].decode("utf-8", "replace"), cut


def summary_html(record: dict) -> str:
    kernel, crash = _d(record.get("kernel")), _d(record.get("crash"))
    panic = _d(crash.get("panic")) or _d(_d(record.get("dmesg")).get("panic"))
    triage = _d(record.get("triage"))
    rows = []
    if triage:
        for line in summary.lines(triage):
            key, _, value = line.partition(":")
            rows.append((key, value.strip()))
        rows.append(("Signature", triage.get("signature")))
    task = panic.get("task")
    rows += [("Kernel", f"{kernel.get('release') or 'unknown'} ({kernel.get('machine') or '?'})"),
             ("Host", kernel.get("hostname") or "unknown"),
             ("Crash time", kernel.get("crash_time") or "unknown"),
             ("Panic", panic.get("message") or "unknown")]
    if task:
        rows.append(("Task", f"{task} (pid {panic.get('pid')}, cpu {panic.get('cpu')})"))
    if panic.get("rip"):
        rows.append(("RIP", panic["rip"]))
    if record.get("analysis") == "log-only":
        why = _d(record.get("analysis_error"))
        rows.append(("Analysis", f"log-only ({why.get('step')}: {why.get('message')})"))
    mail = _d(record.get("mail"))
    if mail:
        rows.append(("Mail", f"sent to {mail.get('to')}" if mail.get("sent")
                     else f"not sent: {mail.get('reason')}"))
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f'<dl class="summary">{items}</dl>'


def error_html(error: dict) -> str:
    error = _d(error)
    if not error:
        return ""
    return (f'<div class="err"><b>Failed step:</b> {esc(error.get("step") or "?")} '
            f'({esc(error.get("kind") or "?")})<br><b>Reason:</b> {esc(error.get("message"))}</div>')


def backtrace_html(record: dict) -> str:
    triage = _d(record.get("triage"))
    frames = [str(f) for f in _l(triage.get("backtrace"))]
    unreliable = [str(f) for f in _l(triage.get("unreliable"))]
    source = triage.get("source")
    if not frames:
        frames = [str(f) for f in _l(_d(_d(record.get("crash")).get("panic")).get("backtrace"))]
        source = "crash bt"
    if not frames and not unreliable:
        return ""
    lines = [esc(f) for f in frames]
    lines += [f'<span class="unreliable">? {esc(f)}  (unreliable)</span>' for f in unreliable]
    return (f"<h2>Backtrace <span class=\"muted\">(from the {esc(source or '?')})</span></h2>"
            f"<pre class=\"backtrace\">{chr(10).join(lines)}</pre>")


def kernel_log_html(record: dict, workdir: str) -> str:
    """The kernel log around the panic, the panic lines highlighted."""
    files = _d(_d(record.get("crash")).get("files"))
    path = files.get("log") or _d(record.get("dmesg")).get("file")
    got = read_inside(workdir, path, MAX_LOG_READ, tail=True)
    if not got:
        return ""
    lines = got[0].splitlines()
    marks = [i for i, line in enumerate(lines) if PANIC_LINE.search(line)]
    if marks:
        start, end = max(0, marks[0] - LOG_BEFORE), min(len(lines), marks[-1] + LOG_AFTER)
        end = min(end, start + LOG_MAX)
    else:
        start, end = max(0, len(lines) - 100), len(lines)
    marked = set(marks)
    out = [f'<span class="hl">{esc(lines[i])}</span>' if i in marked else esc(lines[i])
           for i in range(start, end)]
    note = f"lines {start + 1}-{end} of {len(lines)}" + (" (the end of a longer log)" if got[1] else "")
    return (f"<h2>Kernel log <span class=\"muted\">({esc(note)})</span></h2>"
            f"<pre class=\"kernlog\">{chr(10).join(out)}</pre>")


def results_html(record: dict, workdir: str, link=None) -> str:
    crash = _d(record.get("crash"))
    files = _d(crash.get("files"))
    names = [n for n in RESULT_ORDER if n in files] + sorted(n for n in files if n not in RESULT_ORDER)
    parts = [(str(n), files[n]) for n in names]
    if crash.get("output"):
        parts.append(("crash.out", crash["output"]))
    out = []
    for name, path in parts:
        got = read_inside(workdir, path)
        if got is None:
            continue
        text, cut = got
        href = link(path) if link else None
        head = esc(name) + (f' <a href="{esc(href)}">download</a>' if href else "")
        more = f"\n[... cut at {MAX_FILE_SHOWN // 1024} KiB]" if cut else ""
        out.append(f"<details><summary>{head}</summary><pre>{esc(text)}{esc(more)}</pre></details>")
    return "<h2>Crash results</h2>" + "".join(out) if out else ""


def report_body(record: dict, workdir: str, link=None) -> str:
    """The report's sections (summary, error, backtrace, kernel log, result files)."""
    title = f"CAS report: job {record.get('job')} (identifier {record.get('id')})"
    parts = [f"<h1>{esc(title)}</h1>", error_html(record.get("error")), summary_html(record)]
    triage = _d(record.get("triage"))
    if triage:
        notes = "".join(f"<li>{esc(n)}</li>" for n in _l(triage.get("trust")))
        if notes:
            parts.append(f"<h2>Trust notes</h2><ul>{notes}</ul>")
    parts += [backtrace_html(record), kernel_log_html(record, workdir),
              results_html(record, workdir, link)]
    return "".join(parts)


def render(record: dict) -> str:
    """The self-contained report.html for a final record (links relative to the job directory)."""
    workdir = record.get("workdir") if isinstance(record.get("workdir"), str) else ""

    def link(path):
        return os.path.relpath(path, workdir) if workdir else None

    return document(f"CAS {record.get('job')}", report_body(record, workdir, link))


def save(record: dict, text: str | None = None) -> str | None:
    """Write ``report.html`` into the record's job directory (atomically); its path."""
    workdir = record.get("workdir")
    if not isinstance(workdir, str) or not os.path.isdir(workdir):
        return None
    text = text if text is not None else render(record)
    fd, tmp = tempfile.mkstemp(prefix=".report.", dir=workdir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(workdir, "report.html"))
    except BaseException:
        os.unlink(tmp)
        raise
    return os.path.join(workdir, "report.html")


def keep(record: dict) -> None:
    """At the end of a job: the final record as ``record.json`` and the report beside it.

    cas-web reads ``record.json`` (the job's records are otherwise only on a pipe); a
    failed job gets its report too.  Trouble writing them is a warning, never the job's
    failure.
    """
    import json

    from caslib import logs

    workdir = record.get("workdir")
    if not isinstance(workdir, str) or not os.path.isdir(workdir) or \
            jobdir.parse_stamp(os.path.basename(workdir.rstrip(os.sep))) is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".record.", dir=workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, ensure_ascii=False, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(workdir, "record.json"))
        save(record)
    except (OSError, ValueError, TypeError) as exc:
        logs.get().warning("%s: report not written: %s", workdir, exc)
