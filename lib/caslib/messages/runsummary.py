"""What ``cas`` prints when a run ends (without --json): the summary a person reads first.

Where the job is, which server and kernel, the panic, then whatever applies (debuginfo
source, task, split dump, triage, strip, mail, a log-only analysis, the error).
"""

from caslib.messages.summary import triage_line


def summary(record: dict) -> str:
    """The summary lines of a run's final record, joined."""
    kernel = record.get("kernel") or {}
    crash = record.get("crash") or {}
    panic = crash.get("panic") or {}
    mail = record.get("mail") or {}
    lines = [
        f"Location: {record.get('workdir')}",
        f"Server:   {crash.get('server') or 'localhost'}",
        f"Kernel:   {kernel.get('release') or 'unknown'} ({kernel.get('machine') or '?'})",
        f"Panic:    {panic.get('message') or 'unknown'}",
    ]
    info = record.get("debuginfo") or {}
    if info.get("override") or info.get("source"):  # not simply the shelf: say where from
        lines.append(f"Debug:    {info.get('override') or info.get('source')} "
                     f"{info.get('url') or info.get('file') or info.get('rpm') or ''}".rstrip())
    if panic.get("task"):
        lines.append(f"Task:     {panic['task']} (pid {panic.get('pid')}, cpu {panic.get('cpu')})")
    split = record.get("split")
    if isinstance(split, dict) and isinstance(split.get("parts"), list):
        lines.append(f"Dump:     split into {len(split['parts'])} parts (makedumpfile --split)")
    if isinstance(record.get("triage"), dict):
        lines.append(f"Triage:   {triage_line(record['triage'])}")
    strip = record.get("strip")
    if strip:
        lines.append(f"Strip:    saved {strip['saved_bytes']:,} bytes" if strip.get("replaced")
                     else f"Strip:    core kept ({strip.get('reason')})")
    if mail:
        where = f"sent to {mail.get('to')}" if mail.get("sent") else f"saved as {mail.get('file')}"
        lines.append(f"Mail:     {where}")
    if record.get("analysis") == "log-only":
        why = record.get("analysis_error") or {}
        dmesg = record.get("dmesg") or {}
        lines[3] = f"Panic:    {(dmesg.get('panic') or {}).get('message') or 'unknown'}"
        lines.append(f"Analysis: log-only ({why.get('step')}: {why.get('message')})")
        lines.append(f"Log:      {dmesg.get('file')}")
    if record.get("error"):
        err = record["error"]
        lines.append(f"Error:    {err.get('step')}: {err.get('message')}")
    return "\n".join(lines)
