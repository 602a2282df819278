"""The mail's first lines from ``triage``: the five-line summary and the result files.

Why first: an engineer reads the top of the mail and decides.  The five lines answer
what kind of crash, whose code, how tainted, how far to trust the analysis, and whether
this crash was seen before (or is a known issue, which then also heads the mail).
"""

import os

from caslib.diagnosis import taint as taintlib

MAX_SEEN = 3   # earlier tickets named in the summary line


def culprit_text(culprit: dict | None) -> str:
    if not culprit or not culprit.get("function"):
        return "unknown"
    text = culprit["function"]
    if culprit.get("module"):
        text += f" [{culprit['module']}]"
    if culprit.get("location"):
        text += f" at {culprit['location']}"
    return text


def seen_text(triage: dict) -> str:
    seen = triage.get("seen_before")
    if seen is None:
        why = triage.get("database") or "no database"
        return f"unknown ({why})"
    if not seen:
        return "no earlier job with this signature"
    named = [f"ticket {s.get('identifier')} ({s.get('date')}, {s.get('kernel') or '?'})"
             for s in seen[:MAX_SEEN]]
    more = f" and {len(seen) - MAX_SEEN} more" if len(seen) > MAX_SEEN else ""
    return "same crash as " + ", ".join(named) + more


def known_issue_line(triage: dict) -> str | None:
    known = triage.get("known_issue")
    if not known:
        return None
    return f"Known issue: {known.get('title')} {known.get('url')}"


def lines(triage: dict) -> list:
    """'Known issue: …' when one matched, then Kind, Culprit, Taint, Trust, Seen before."""
    out = []
    known = known_issue_line(triage)
    if known:
        out.append(known)
    notes = triage.get("trust") or []
    trust_text = notes[0] if notes else "no limits found"
    if len(notes) > 1:
        trust_text += f" (+{len(notes) - 1} more below)"
    kind = triage.get("kind") or "unknown"
    evidence = triage.get("evidence")
    out += [
        f"Kind:        {kind}" + (f" ({evidence})" if evidence else ""),
        f"Culprit:     {culprit_text(triage.get('culprit'))}",
        f"Taint:       {taintlib.describe(triage.get('taint'))}",
        f"Trust:       {trust_text}",
        f"Seen before: {seen_text(triage)}",
    ]
    return out


def details(triage: dict) -> list:
    """Signature, every trust note, the reliable backtrace, result files and failed snippets."""
    out = [f"Signature:   {triage.get('signature')}"]
    blocked = triage.get("blocked_task")
    if blocked:
        out.append(f"Blocked:     {blocked.get('command')} (pid {blocked.get('pid')})")
    notes = triage.get("trust") or []
    if len(notes) > 1:
        out.append("Trust notes:")
        out += [f"    - {n}" for n in notes]
    if triage.get("backtrace"):
        out.append(f"Reliable backtrace (from the {triage.get('source') or '?'}):")
        out += [f"    {f}" for f in triage["backtrace"][:16]]
    if triage.get("unreliable"):
        out.append(f"Unreliable frames set apart: {len(triage['unreliable'])} "
                   f"({', '.join(triage['unreliable'][:6])}"
                   + (", ..." if len(triage["unreliable"]) > 6 else "") + ")")
    results = triage.get("results") or []
    if results:
        out.append("Result files:")
        for r in results:
            size = "missing" if r.get("size") is None else f"{r['size']:,} bytes"
            out.append(f"    {os.path.basename(str(r.get('path')))}  {size}")
    for f in triage.get("failed_snippets") or []:
        out.append(f"Failed snippet: {f.get('snippet') or '(snippet not found)'}: "
                   f"'{f.get('command')}': {f.get('error')}")
    return out


def triage_line(triage: dict) -> str:
    """One line for cas's own summary on the terminal."""
    return (f"{triage.get('kind')} in {culprit_text(triage.get('culprit'))}; "
            f"{seen_text(triage)}")
