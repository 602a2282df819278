"""What limits a first analysis, said in words, so nobody trusts what is not there.

Why: crash older than the kernel reads a partial task list without failing, ``bt -a``
fails for some CPUs, a dump filtered by makedumpfile lacks whole classes of pages, and
crash may have run in ``--minimal`` mode or been cut short.  Each of these is a note in
``triage.trust`` and a line of the mail's summary.
"""

import re

_PID_HASH = re.compile(r"active task (\S+) on cpu (\d+) not found in PID hash")
_BT_HEADER = re.compile(r'^PID:\s*(\d+)\s+TASK:\s*\S+\s+CPU:\s*(\d+|-)\s+COMMAND:\s*"(.*)"')
_BOGUS = "possibly bogus exception frame"
DUMP_LEVEL_BITS = {1: "zero pages", 2: "page cache pages", 4: "private cache pages",
                   8: "user pages", 16: "free pages"}


def crash_release_gap(crash: dict, release: str | None, tasks: str | None) -> str | None:
    """crash too old for the kernel: what shows it (the PID hash warning)."""
    for warning in crash.get("warnings") or []:
        m = _PID_HASH.search(warning)
        if m:
            version = crash.get("version") or "?"
            counted = f"; sys counts TASKS: {tasks}" if tasks else ""
            return (f"crash {version} is older than this kernel ({release or '?'}) needs: task "
                    f"list incomplete (active task {m.group(1)} on CPU {m.group(2)} not found "
                    f"in PID hash{counted}); ps, foreach and D-state results miss tasks")
    return None


def bt_all_failures(traceback_lines) -> list:
    """'bt -a failed on CPU N (task): error' for every CPU block of bt -a that errored."""
    notes, in_all, current = [], False, None
    for raw in traceback_lines:
        line = raw.rstrip("\n")
        if line.startswith("crash> "):
            in_all = line[7:].split(">>")[0].split() == ["bt", "-a"]
            current = None
            continue
        if not in_all:
            continue
        m = _BT_HEADER.match(line)
        if m:
            current = (m.group(2), m.group(3))
            continue
        if current and line.strip().startswith("bt: "):
            notes.append(f"bt -a failed on CPU {current[0]} ({current[1]}): {line.strip()}")
            current = None
    return notes


def bogus_frames(traceback_lines) -> str | None:
    for line in traceback_lines:
        if _BOGUS in line:
            return ("crash's bt reports a possibly bogus exception frame: the frames crash shows "
                    "after it were found by scanning the stack")
    return None


def dump_level(level) -> str | None:
    """'dump filtered with -d 31: zero pages, ... absent' from the kdump header's dump_level."""
    if not isinstance(level, int) or isinstance(level, bool) or level <= 0:
        return None
    gone = [what for bit, what in DUMP_LEVEL_BITS.items() if level & bit]
    return f"dump filtered with -d {level}: {', '.join(gone)} absent"


def notes(record: dict, sys_fields: dict, traceback_lines: list, source: str | None) -> list:
    """Every note that applies to this job, most important first."""
    crash = record.get("crash") if isinstance(record.get("crash"), dict) else {}
    kernel = record.get("kernel") if isinstance(record.get("kernel"), dict) else {}
    ident = record.get("ident") if isinstance(record.get("ident"), dict) else {}
    out = []
    if crash.get("mismatch"):
        out.append(f"crash says vmlinux and dump may not match: {crash['mismatch']}")
    if crash.get("degraded"):
        out.append("crash could open the dump only with --minimal: no task list, no backtrace")
    if crash.get("timed_out"):
        out.append("crash timed out: its output is partial")
    gap = crash_release_gap(crash, kernel.get("release"), sys_fields.get("TASKS"))
    if gap:
        out.append(gap)
    out += bt_all_failures(traceback_lines)
    bogus = bogus_frames(traceback_lines)
    if bogus:
        out.append(bogus)
    filtered = dump_level(ident.get("dump_level"))
    if filtered:
        out.append(filtered)
    elif "[PARTIAL DUMP]" in (sys_fields.get("DUMPFILE") or ""):
        out.append("crash calls the dump partial: some pages were filtered out")
    if source == "crash-bt":
        out.append("no Call Trace in the kernel log: the backtrace is crash's, stale frames "
                   "after the system call dispatcher set apart")
    elif source is None:
        out.append("no backtrace: neither the kernel log nor crash's bt gave one")
    return out
