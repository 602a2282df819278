"""What kind of crash this is, which code is to blame, and which frames can be believed.

Why rules and not a model: every kind has a fixed sentence in the kernel's source
(``BUG: kernel NULL pointer dereference``, ``watchdog: BUG: soft lockup``, ``Attempted
to kill init!``), so the panic string and the log lines before it decide the kind, and
that line is kept as the evidence.  The culprit is the faulting function of the report
(its ``RIP: 0010:`` line), else the first reliable frame that is not panic, oops,
exception, watchdog or (for a hung task) sleeping machinery.

Frames the kernel's unwinder marked ``?`` are unreliable.  When the log has no trace and
crash's ``bt`` is used instead, the frames between the first system call dispatcher
(``do_syscall_64``) and the entry frame are stale stack words crash picked up, and are
kept apart as unreliable too.
"""

import re

from caslib.diagnosis import kernlog

KINDS = ("oops-null-deref", "oops-paging", "general-protection", "bug", "warning", "soft-lockup",
         "hard-lockup", "hung-task", "oom", "init-killed", "sysrq", "mce", "stack-corruption",
         "unknown")

# the panic string alone decides these
PANIC_KINDS = [
    (re.compile(r"Attempted to kill init!"), "init-killed"),
    (re.compile(r"Out of memory|System is deadlocked on memory"), "oom"),
    (re.compile(r"sysrq triggered crash"), "sysrq"),
    (re.compile(r"softlockup: hung tasks"), "soft-lockup"),
    (re.compile(r"Hard LOCKUP|hardlockup: "), "hard-lockup"),
    (re.compile(r"hung_task: blocked tasks"), "hung-task"),
    (re.compile(r"panic_on_warn set"), "warning"),
    (re.compile(r"stack-protector: Kernel stack is corrupted|[Kk]ernel stack overflow|"
                r"corrupted stack end detected"), "stack-corruption"),
    (re.compile(r"[Mm]achine check|\bMCE\b"), "mce"),
]
# report lines in the log, most specific first
LOG_KINDS = [
    (re.compile(r"BUG: kernel NULL pointer dereference, address:"), "oops-null-deref"),
    (re.compile(r"BUG: unable to handle (page fault for address|kernel paging request)|"
                r"Unable to handle kernel paging request"), "oops-paging"),
    (re.compile(r"general protection fault"), "general-protection"),
    (re.compile(r"kernel BUG at \S+:\d+!"), "bug"),
    (re.compile(r"WARNING: CPU: \d+ PID: \d+ at "), "warning"),
    (re.compile(r"watchdog: BUG: soft lockup - CPU#\d+ stuck for"), "soft-lockup"),
    (re.compile(r"Watchdog detected hard LOCKUP on cpu"), "hard-lockup"),
    (re.compile(r"INFO: task \S+:\d+ blocked for more than \d+ seconds\."), "hung-task"),
    (re.compile(r"invoked oom-killer:|Out of memory and no killable processes|"
                r"Out of memory: Killed process"), "oom"),
    (re.compile(r"sysrq: Trigger a crash|SysRq : Trigger a crash"), "sysrq"),
    (re.compile(r"Kernel stack is corrupted|stack guard page was hit|kernel stack overflow|"
                r"double fault:"), "stack-corruption"),
    (re.compile(r"mce: \[Hardware Error\]|Machine check events logged"), "mce"),
]
REPORT_WINDOW = 600   # lines before the panic searched for its report
KNOWN_WINDOW = 20000  # ... when the panic string named the kind (an OOM report lists every task)
BUG_AT = re.compile(r"kernel BUG at (\S+?):(\d+)!")
WARN_AT = re.compile(r"WARNING: CPU: \d+ PID: \d+ at (\S+?):(\d+) ")
HUNG = re.compile(r"INFO: task (\S+):(\d+) blocked for more than")

MACHINERY = {
    "panic", "nmi_panic", "dump_stack", "dump_stack_lvl", "show_stack", "die", "__die",
    "oops_end", "page_fault_oops", "kernelmode_fixup_or_oops", "__bad_area_nosemaphore",
    "bad_area_nosemaphore", "do_user_addr_fault", "do_kern_addr_fault", "handle_page_fault",
    "do_trap", "do_error_trap", "handle_bug", "report_bug", "__warn", "warn_slowpath_fmt",
    "check_panic_on_warn", "watchdog_timer_fn", "__hrtimer_run_queues", "hrtimer_interrupt",
    "irq_exit_rcu", "dump_header", "check_hung_uninterruptible_tasks", "watchdog",
    "__crash_kexec", "crash_kexec", "watchdog_overflow_callback", "perf_event_nmi_handler",
    "nmi_handle", "default_do_nmi", "__stack_chk_fail",
}
MACHINERY_PREFIXES = ("asm_exc_", "exc_", "asm_sysvec_", "sysvec_", "__sysvec_", "asm_common_")
WAITING = {
    "__schedule", "schedule", "schedule_timeout", "schedule_preempt_disabled", "io_schedule",
    "io_schedule_timeout", "__wait_for_common", "wait_for_common", "wait_for_completion",
    "wait_for_completion_io", "wait_for_completion_timeout", "wait_for_completion_killable",
    "__mutex_lock", "__mutex_lock_slowpath", "mutex_lock", "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath", "down_read", "down_write", "down", "__down", "__down_common",
    "msleep", "schedule_hrtimeout_range", "schedule_hrtimeout_range_clock", "__wait_on_bit",
    "out_of_line_wait_on_bit", "bit_wait", "bit_wait_io", "folio_wait_bit_common",
    "__folio_lock", "wait_on_page_bit_common", "__lock_page", "usleep_range_state",
}
SYSCALL_DISPATCH = ("do_syscall_64", "do_int80_syscall_32", "do_fast_syscall_32",
                    "__do_fast_syscall_32")
ENTRY_PREFIXES = ("entry_SYSCALL", "entry_INT80", "entry_SYSENTER", "ret_from_fork")


def is_machinery(function: str, kind: str | None = None) -> bool:
    name = kernlog.base_name(function)
    if name in MACHINERY or name.startswith(MACHINERY_PREFIXES):
        return True
    return kind == "hung-task" and name in WAITING


def kind_of(panic_message: str | None, lines: list, panic_at: int | None) -> dict:
    """{kind, evidence, marker} from the panic string and the report lines before it."""
    end = len(lines) if panic_at is None else panic_at
    marker, marker_kind = None, None
    for i in range(end - 1, max(-1, end - 1 - REPORT_WINDOW), -1):
        for rx, kind in LOG_KINDS:
            if rx.search(lines[i]):
                marker, marker_kind = i, kind
                break
        if marker is not None:
            break
    message = panic_message or ""
    for rx, kind in PANIC_KINDS:
        if rx.search(message):
            if marker_kind != kind:  # none in the window, or one of an earlier, other event
                marker = _nearest(lines, end, kind)
            evidence = lines[marker].strip() if marker is not None else \
                f"Kernel panic - not syncing: {message}"
            return {"kind": kind, "evidence": evidence, "marker": marker}
    if marker is not None:
        return {"kind": marker_kind, "evidence": lines[marker].strip(), "marker": marker}
    # crash's PANIC for an oops names it without the log ("Oops: 0002 [#1] ..." , "kernel BUG at")
    for rx, kind in LOG_KINDS:
        if rx.search(message):
            return {"kind": kind, "evidence": message, "marker": None}
    return {"kind": "unknown", "evidence": message or None, "marker": None}


def _nearest(lines: list, end: int, kind: str) -> int | None:
    for i in range(end - 1, max(-1, end - 1 - KNOWN_WINDOW), -1):
        if any(k == kind and rx.search(lines[i]) for rx, k in LOG_KINDS):
            return i
    return None


def report_parts(lines: list, marker: int | None, panic_at: int | None) -> dict:
    """The report's kernel RIP, its Call Trace, and the panic's own trace, from the log."""
    end = len(lines) if panic_at is None else panic_at
    rip, trace = None, None
    if marker is not None:
        found = kernlog.traces(lines, marker, end)
        trace = found[0] if found else None
        rip = kernlog.kernel_rip(lines, marker, trace.start if trace else end)
    after = kernlog.traces(lines, end, min(len(lines), end + 400)) if panic_at is not None else []
    return {"rip": rip, "trace": trace, "panic_trace": after[0] if after else None}


def split_crash_frames(frames: list) -> tuple:
    """(reliable, unreliable) crash ``bt`` frames ('func [mod]'): stale ones after the dispatcher."""
    reliable, stale, in_stale = [], [], False
    for frame in frames:
        name = frame.split()[0]
        if in_stale and not name.startswith(ENTRY_PREFIXES):
            stale.append(frame)
            continue
        reliable.append(frame)
        in_stale = name in SYSCALL_DISPATCH
        if name.startswith(ENTRY_PREFIXES):
            in_stale = False
    return reliable, stale


def _frame_dict(label: str) -> dict:
    name, _, mod = label.partition(" [")
    return {"function": name, "module": mod.rstrip("]") or None}


def analyse(panic_message: str | None, log_lines, crash_frames: list) -> dict:
    """kind, evidence, culprit, backtrace, unreliable, blocked task, source of the frames."""
    lines = kernlog.clean(log_lines)
    panic_at = kernlog.panic_index(lines)
    found = kind_of(panic_message, lines, panic_at)
    kind = found["kind"]
    parts = report_parts(lines, found["marker"], panic_at)
    trace = parts["trace"]
    if trace is None or not trace.reliable():
        trace = parts["panic_trace"] if parts["panic_trace"] else trace
    result = {"kind": kind, "evidence": found["evidence"], "source": None, "culprit": None,
              "backtrace": [], "unreliable": [], "blocked_task": None}
    if kind == "hung-task" and found["marker"] is not None:
        m = HUNG.search(lines[found["marker"]])
        result["blocked_task"] = {"command": m.group(1), "pid": int(m.group(2))}
    if trace is not None and trace.frames:
        frames = [f.label() for f in trace.reliable()]
        rip = parts["rip"]
        if rip is not None and (not frames or frames[0] != rip.label()):
            frames.insert(0, rip.label())
        result.update(source="log", backtrace=frames,
                      unreliable=[f.label() for f in trace.unreliable()])
    elif crash_frames:
        reliable, stale = split_crash_frames(crash_frames)
        result.update(source="crash-bt", backtrace=reliable, unreliable=stale)
    culprit = None
    rip = parts["rip"]
    if rip is not None and kind != "hung-task" and not is_machinery(rip.function):
        culprit = {"function": kernlog.base_name(rip.function), "module": rip.module}
    else:
        for label in result["backtrace"]:
            frame = _frame_dict(label)
            if not is_machinery(frame["function"], kind):
                culprit = dict(frame, function=kernlog.base_name(frame["function"]))
                break
    if culprit is not None:
        culprit["location"] = _location(lines, found["marker"], kind)
        culprit["location_from"] = "log" if culprit["location"] else None
    result["culprit"] = culprit
    return result


def _location(lines: list, marker: int | None, kind: str) -> str | None:
    """file:line the report itself names (kernel BUG at, WARNING ... at)."""
    if marker is None:
        return None
    rx = BUG_AT if kind == "bug" else WARN_AT if kind == "warning" else None
    m = rx.search(lines[marker]) if rx else None
    return f"{m.group(1)}:{m.group(2)}" if m else None


_BT_LINE = re.compile(r"^\s*#\d+\s+\[[0-9a-f]+\]\s+(\S+)\s+at\s+[0-9a-f]+")
_SOURCE_LINE = re.compile(r"^\s+(/\S+|\S+\.[chS]):\s*(\d+)\s*$")


def bt_lines(lines) -> dict:
    """{function: 'file:line'} from crash's ``bt -l`` (the source line under each frame)."""
    found, last = {}, None
    for line in lines:
        m = _BT_LINE.match(line)
        if m:
            last = kernlog.base_name(m.group(1))
            continue
        s = _SOURCE_LINE.match(line.rstrip("\n"))
        if s and last and last not in found:
            found[last] = f"{s.group(1)}:{s.group(2)}"
            last = None
    return found
