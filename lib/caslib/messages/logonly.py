"""The log-only report: what cas-mail sends when no crash analysis could be made.

Why: in a support queue the dump's kernel is often not on the shelf (an
errata kernel, a hotfix build).  cas-dmesg read the kernel log from the dump
before the analysis steps; when cas-findkernel, cas-extract or cas-crash
then fails, the job still answers with what the log says instead of ending
silently.  ``convert`` turns such an error record into one that cas-mail
processes: ``analysis: "log-only"``, the original error moved to
``analysis_error`` (so every later filter and the ``cas`` driver see a
completed job with a partial analysis, not a failure).  ``body`` writes the
mail: the missing kernel, the nearest releases on the shelf, the panic
summary parsed from the log and the log's tail.
"""

import os

LOG_ONLY_STEPS = ("cas-findkernel", "cas-extract", "cas-crash")
TAIL_LINES = 60
TAIL_BYTES = 64 << 10


def convert(record: dict) -> dict:
    """An error record of an analysis step that carries a readable log -> a log-only record."""
    err = record.get("error")
    dmesg = record.get("dmesg")
    if not isinstance(err, dict) or err.get("step") not in LOG_ONLY_STEPS:
        return record
    if not isinstance(dmesg, dict) or not isinstance(dmesg.get("file"), str):
        return record
    out = {k: v for k, v in record.items() if k != "error"}
    out["analysis"] = "log-only"
    out["analysis_error"] = err
    return out


def tail(path: str, workdir: str, lines: int = TAIL_LINES) -> list:
    """The last ``lines`` lines of the job's dmesg file (read from its last TAIL_BYTES only)."""
    from caslib import jobdir
    if not jobdir.inside(workdir, path):
        return [f"(the log {path!r} is outside the job directory: not read)"]
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read(TAIL_BYTES)
    except OSError as exc:
        return [f"(the log {path} is unreadable: {exc.strerror})"]
    text = data.decode("utf-8", "replace").splitlines()
    if size > TAIL_BYTES:
        text = text[1:]  # the first line was cut
    return text[-lines:]


def _text(value) -> str:
    return str(value) if value not in (None, "") else "unknown"


def body(record: dict) -> str:
    """The text of a log-only mail."""
    kernel = record.get("kernel") if isinstance(record.get("kernel"), dict) else {}
    dmesg = record.get("dmesg") or {}
    panic = dmesg.get("panic") if isinstance(dmesg.get("panic"), dict) else {}
    err = record.get("analysis_error") or {}
    missing = record.get("missing") if isinstance(record.get("missing"), dict) else {}
    task = None
    if panic.get("task") or panic.get("pid") is not None:
        task = f"{_text(panic.get('task'))} (pid {panic.get('pid')}, cpu {panic.get('cpu')})"
    release = missing.get("release") or kernel.get("release")
    lines = [
        f"CAS results for job {record.get('job')} (identifier {record.get('id')})",
        "",
        "Analysis:    log-only (no crash analysis: the kernel log read from the dump itself)",
        f"Why:         {err.get('step')}: {err.get('message')}",
        f"Kernel:      {_text(release)} ({kernel.get('machine') or '?'})",
        f"Build-id:    {_text(missing.get('build_id') or kernel.get('build_id'))}",
    ]
    if err.get("step") == "cas-findkernel":
        near = missing.get("nearest") or []
        lines.append(f"Missing:     no debuginfo for {_text(release)} on the shelf")
        lines.append("Nearest:     " + (", ".join(near) if near else "none on the shelf"))
    lines += [
        f"Host:        {_text(kernel.get('hostname'))}",
        f"Crash time:  {_text(kernel.get('crash_time'))}",
        f"Panic:       {_text(panic.get('message'))}",
        f"Task:        {task or 'unknown'}",
    ]
    if panic.get("rip"):
        lines.append(f"RIP:         {panic['rip']}")
    if panic.get("backtrace"):
        lines.append("Call Trace (from the log; '?' frames are unreliable):")
        lines += [f"    {frame}" for frame in panic["backtrace"]]
    for warning in (dmesg.get("warnings") or [])[:5]:
        lines.append(f"Note:        the log is partial: {warning}")
    workdir = record.get("workdir") or ""
    lines += ["", f"Location: {workdir}", f"Kernel log: {dmesg.get('file')}"
              f" ({dmesg.get('lines')} lines)", "", f"==> tail of the kernel log <=="]
    lines += tail(dmesg["file"], workdir) if dmesg.get("file") else ["(no log)"]
    return "\n".join(lines) + "\n"
