"""cas-web's pages: the job list, a job's page (the report plus forms), the submit form.

Why apart from web.py: these only turn data into HTML (escaped by htmlreport.esc);
the server decides who may see what and where a file may be read from.
"""

import os
import urllib.parse

from caslib.messages import htmlreport
from caslib.queue import report
from caslib.messages.htmlreport import esc, state_badge

STATES = ("queued", "running", "done", "failed", "cancelled")


def nav() -> str:
    return '<a href="/">Jobs</a><a href="/submit">Submit a dump</a><a href="/api/jobs">JSON</a>'


def job_href(job: dict) -> str:
    workdir = job.get("workdir")
    if workdir:
        return "/jobs/{}/{}/".format(*(urllib.parse.quote(p) for p in
                                       workdir.rstrip("/").split("/")[-2:]))
    return f"/job/{int(job['job_id'])}"


def _triage(job: dict) -> dict:
    return (job.get("record") or {}).get("triage") if isinstance(
        (job.get("record") or {}).get("triage"), dict) else {}


def _row(job: dict, now: float) -> str:
    triage = _triage(job)
    err = job.get("error") or {}
    panic = job.get("panic") or (f"[{err.get('step')}] {err.get('kind') or 'error'}: "
                                 f"{err.get('message')}" if err else "")
    kind = triage.get("kind") or ""
    culprit = report_culprit(triage)
    return ("<tr>"
            f"<td><a href=\"{esc(job_href(job))}\">{esc(job.get('job_id'))}</a></td>"
            f"<td>{esc(job.get('identifier'))}</td><td>{esc(job.get('job'))}</td>"
            f"<td>{state_badge(job.get('state'), report.state_text(job))}</td>"
            f"<td class=\"nowrap\">{esc(job.get('kernel') or '')}</td>"
            f"<td title=\"{esc(panic)}\">{esc(_cut(panic, 56))}</td>"
            f"<td>{esc(kind)}</td><td>{esc(culprit)}</td>"
            f"<td>{esc(triage.get('signature') or '')}</td>"
            f"<td class=\"nowrap\">{esc(report.when(job.get('started')))}</td>"
            f"<td class=\"nowrap\">{esc(report.took(job, now))}</td></tr>")


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def report_culprit(triage: dict) -> str:
    """The function and its module: the location is in the report."""
    culprit = triage.get("culprit") if isinstance(triage.get("culprit"), dict) else {}
    text = str(culprit.get("function") or "")
    return text + (f" [{culprit['module']}]" if text and culprit.get("module") else "")


def job_list(jobs: list, state: str | None, query: str, now: float) -> str:
    counts = {}
    for j in jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    options = "".join(f'<option value="{s}"{" selected" if s == state else ""}>{s}</option>'
                      for s in ("",) + STATES)
    form = ('<form method="get" action="/">State <select name="state">'
            f'{options}</select> Search <input name="q" value="{esc(query)}" '
            'placeholder="identifier, release, signature"> <button>Show</button></form>')
    summary = f"{sum(counts.values())} job(s)" + ("" if not counts else ": " + ", ".join(
        f"{n} {s}" for s, n in sorted(counts.items())))
    head = "".join(f"<th>{h}</th>" for h in ("Job", "Identifier", "Name", "State", "Kernel",
                                             "Panic or error", "Kind", "Culprit", "Signature",
                                             "Started", "Took"))
    rows = "".join(_row(j, now) for j in jobs)
    return (f"<h1>Jobs</h1><p>{esc(summary)}</p>{form}"
            f'<table id="jobs"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')


def matches(job: dict, query: str) -> bool:
    if not query:
        return True
    triage = _triage(job)
    hay = " ".join(str(v or "") for v in (job.get("identifier"), job.get("job"), job.get("kernel"),
                                          triage.get("signature"), job.get("panic")))
    return query.lower() in hay.lower()


def _forms(job: dict, token: str) -> str:
    out = []
    hidden = f'<input type="hidden" name="csrf" value="{esc(token)}">'
    if job.get("state") in ("queued", "running"):
        out.append(f'<form class="inline" method="post" action="/job/{int(job["job_id"])}/cancel">'
                   f'{hidden}<button id="cancel">Cancel</button></form>')
    if job.get("state") in ("done", "failed", "cancelled"):
        out.append(f'<form class="inline" method="post" action="/job/{int(job["job_id"])}/rerun">'
                   f'{hidden}Release <input name="release" placeholder="6.1.0-18-amd64"> '
                   'or vmlinux <input name="vmlinux" placeholder="/path/on/the/server"> '
                   '<button id="rerun">Rerun</button></form>')
    return "<h2>Actions</h2>" + "".join(out) if out else ""


def job_facts(job: dict) -> str:
    worker = job.get("worker") or {}
    rows = [("Job", job.get("job_id")), ("Identifier", job.get("identifier")),
            ("Job name", job.get("job")), ("Input", job.get("source")),
            ("Submitted", report.when(job.get("submitted"))),
            ("Started", report.when(job.get("started"))),
            ("Took", report.took(job)), ("Where", worker.get("host") or "-"),
            ("Attempt", job.get("attempt"))]
    if job.get("rerun_of"):
        rows.append(("Rerun of", f"job {job['rerun_of']}"))
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return (f"<p>State: {state_badge(job.get('state'), report.state_text(job))}</p>"
            f'<table class="facts">{cells}</table>')


def job_page(job: dict | None, record: dict | None, workdir: str | None, files: list,
             log_tail: list, mail_text: str | None, token: str) -> str:
    """The report of a job directory, with what only the server can add."""
    parts = []
    if record:
        def link(path):
            return urllib.parse.quote(os.path.relpath(path, workdir))
        parts.append(htmlreport.report_body(record, workdir, link))
    else:
        title = f"Job {job.get('job_id')}: {job.get('identifier')}" if job else "Job directory"
        parts.append(f"<h1>{esc(title)}</h1>")
        if job:
            parts.append(htmlreport.error_html(job.get("error")))
    if job:
        parts.append("<h2>Job</h2>" + job_facts(job) + _forms(job, token))
    if mail_text:
        parts.append("<h2>The mail as sent</h2><details><summary>mail.eml</summary>"
                     f"<pre class=\"mail\">{esc(mail_text)}</pre></details>")
    if log_tail:
        parts.append(f"<h2>Process log <span class=\"muted\">(last {len(log_tail)} lines)</span>"
                     f"</h2><pre id=\"joblog\">{esc(chr(10).join(log_tail))}</pre>")
    if files:
        items = "".join(f'<li><a href="{esc(urllib.parse.quote(n))}">{esc(n)}</a> '
                        f'<span class="muted">{size:,} bytes</span></li>' for n, size in files)
        parts.append(f"<h2>Files</h2><ul class=\"files\">{items}</ul>")
    return "".join(parts)


def submit_form(token: str, max_upload: int, message: str = "") -> str:
    hidden = f'<input type="hidden" name="csrf" value="{esc(token)}">'
    note = f'<div class="err">{esc(message)}</div>' if message else ""
    return (f"<h1>Submit a dump</h1>{note}"
            '<form method="post" action="/submit" enctype="multipart/form-data" id="submit">'
            f"{hidden}<table>"
            '<tr><th>Identifier</th><td><input name="identifier" required '
            'pattern="[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"></td></tr>'
            '<tr><th>E-mail</th><td><input name="email" type="email"></td></tr>'
            '<tr><th>URL of the dump</th><td><input name="url" size="60"></td></tr>'
            f'<tr><th>or upload</th><td><input name="upload" type="file"> '
            f'<span class="muted">at most {max_upload:,} bytes</span></td></tr>'
            '</table><p><button id="queue">Queue the job</button></p></form>')


def message(title: str, text: str) -> str:
    return f"<h1>{esc(title)}</h1><p>{esc(text)}</p>"
