"""The site's known-issues file: a signature or pattern, a title and a URL per entry.

Why a plain file: support teams keep the list next to their bug tracker and edit it by
hand; a match puts "Known issue: <title> <url>" at the top of the mail.  Format (config
key ``knownIssues``), one entry a line, fields separated by ``|`` (the last two are the
title and the URL, so a pattern may itself hold ``|``)::

    # comment
    oops-null-deref:3f2a9c0d1e4b5a67 | casfault NULL write on load | https://bugs.example.org/1
    re:casfault_(spin|hang)          | casfault stalls              | https://bugs.example.org/2

A first field of the form ``<kind>:<16 hex>`` is a signature (cas-triage's); one starting
with ``re:`` is a Python regular expression searched in the triage text (kind, culprit,
culprit module, panic message, evidence line and backtrace, one a line).  The first
matching entry wins.  A line that cannot be read is skipped with a warning naming the
file and line; the analysis never fails over this file.
"""

import re

from caslib import logs

MAX_BYTES = 1 << 20
MAX_ENTRIES = 10000
SIGNATURE = re.compile(r"[a-z-]+:[0-9a-f]{16}")


def load(path: str) -> list:
    """[{match, title, url, regex|None, line}] from ``path``; OSError when it cannot be read."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    log = logs.get()
    if len(data) > MAX_BYTES:
        log.warning("%s: known-issues file larger than %d bytes: the rest is ignored", path,
                    MAX_BYTES)
        data = data[:MAX_BYTES]
    entries = []
    for lineno, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.rsplit("|", 2)]  # a pattern may hold '|' itself
        if len(fields) != 3 or not all(fields):
            log.warning("%s line %d: expected 'SIGNATURE-or-re:PATTERN | title | URL'; skipped",
                        path, lineno)
            continue
        match, title, url = fields
        entry = {"match": match, "title": title, "url": url, "regex": None, "line": lineno}
        if match.startswith("re:"):
            try:
                entry["regex"] = re.compile(match[3:])
            except re.error as exc:
                log.warning("%s line %d: bad pattern %r (%s); skipped", path, lineno, match[3:],
                            exc)
                continue
        elif not SIGNATURE.fullmatch(match):
            log.warning("%s line %d: %r is neither a signature (kind:16 hex) nor re:PATTERN; "
                        "skipped", path, lineno, match)
            continue
        entries.append(entry)
        if len(entries) >= MAX_ENTRIES:
            break
    return entries


def text_of(triage: dict, panic_message: str | None) -> str:
    """What ``re:`` patterns are searched in."""
    culprit = triage.get("culprit") or {}
    parts = [triage.get("kind"), culprit.get("function"), culprit.get("module"), panic_message,
             triage.get("evidence")] + list(triage.get("backtrace") or [])
    return "\n".join(p for p in parts if p)


def match(entries: list, triage: dict, panic_message: str | None, path: str) -> dict | None:
    """{title, url, match, file, line} of the first entry matching, else None."""
    text = None
    for e in entries:
        if e["regex"] is None:
            hit = e["match"] == triage.get("signature")
        else:
            text = text if text is not None else text_of(triage, panic_message)
            hit = e["regex"].search(text) is not None
        if hit:
            return {"title": e["title"], "url": e["url"], "match": e["match"], "file": path,
                    "line": e["line"]}
    return None
