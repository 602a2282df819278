"""Read what crash printed into the panic summary of the record (``crash.panic``).

Why a summary: the engineer opening the ticket wants the panic string, the
panicking task and where it died before opening any file.  Everything here
parses crash's own text, as crash 8.x prints it:

``sys``::

       PANIC: "Kernel panic - not syncing: sysrq triggered crash"
         PID: 1
     COMMAND: "init"
        TASK: ffff8da0c120e000  [THREAD_INFO: ffff8da0c120e000]
         CPU: 1

``bt``::

    PID: 1        TASK: ffff8da0c120e000  CPU: 1    COMMAND: "init"
     #0 [ffffcf6540013d30] panic at ffffffff983cd21a
     #1 [ffffcf6540013db0] sysrq_handle_crash at ffffffff980a8a06
        [exception RIP: default_idle+32]

Transcripts (``crash -i`` echoes each command as ``crash> cmd`` into the
file the command writes to, and errors also go to crash's stdout) are split
into sections per command so a failing command can be named.
"""

import re
from dataclasses import dataclass, field

PROMPT = "crash> "
FRAMES = 10        # first frames of the panicking task kept in the record
OOPS_LINES = 60    # at most this many log lines from the start of the last oops
_OOPS_WINDOW = 100  # markers this close before the last one belong to the same oops

_SYS_FIELD = re.compile(r"^\s*([A-Z][A-Z ]*[A-Z]):\s?(.*)$")
_BT_HEADER = re.compile(r'^PID:\s*(\d+)\s+TASK:\s*([0-9a-fA-F]+)\s+CPU:\s*(\d+|-)\s+'
                        r'COMMAND:\s*"(.*)"')
_FRAME = re.compile(r"^\s*#(\d+)\s+\[([0-9a-fA-F]+)\]\s+(\S+)\s+at\s+([0-9a-fA-F]+)"
                    r"(?:\s+\[(\S+)\])?")
_EXCEPTION_RIP = re.compile(r"\[exception RIP:\s*([^\]]+)\]")
_NOT_SYNCING = re.compile(r"Kernel panic - not syncing:\s*(.*?)\s*$")
_LOG_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_OOPS_START = re.compile(
    r"(BUG: |Oops: |Oops\b|kernel BUG at |general protection fault|Unable to handle kernel|"
    r"WARNING: CPU: |Kernel panic - not syncing|sysrq: Trigger a crash|SysRq : Trigger a crash|"
    r"NMI watchdog: |watchdog: BUG: soft lockup|INFO: task .* blocked for more than|"
    r"Out of memory: |divide error: |invalid opcode: |stack segment: |double fault: )")
_VERSION = re.compile(r"^crash(?:_32)? (\d+\.\d+\S*)\s*$")


@dataclass
class Section:
    """One command's part of a transcript (``command`` None: what came before any prompt)."""

    command: str | None
    lines: list = field(default_factory=list)

    @property
    def verb(self) -> str | None:
        if not self.command:
            return None
        words = self.command.split()
        return words[0] if words else None


def sections(lines) -> list:
    """Split a transcript at crash's ``crash> cmd`` echo lines."""
    out = [Section(None)]
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith(PROMPT):
            out.append(Section(line[len(PROMPT):].strip()))
        else:
            out[-1].lines.append(line)
    return out


def command_errors(section: Section) -> list:
    """Error lines crash printed for this section's command (``bt: ...``, ``crash: bt: ...``)."""
    verb = section.verb
    if not verb:
        return []
    prefixes = (f"{verb}: ", f"crash: {verb}: ", f"crash: command not found: {verb}")
    return [line.strip() for line in section.lines if line.strip().startswith(prefixes)]


def failed_commands(transcripts) -> list:
    """``[{"command", "error"}]`` for every command crash reported an error for, in order seen.

    ``transcripts`` is an iterable of line iterables (crash.out, then each result file);
    a command whose errors show in several of them is listed once.
    """
    seen = {}
    for lines in transcripts:
        for sec in sections(lines):
            errors = command_errors(sec)
            if errors and sec.command not in seen:
                seen[sec.command] = {"command": sec.command, "error": errors[0]}
    return list(seen.values())


def crash_version(lines) -> str | None:
    """The version crash printed in its banner (``crash 8.0.2``)."""
    for line in lines:
        m = _VERSION.match(line.strip())
        if m:
            return m.group(1)
    return None


def init_error(lines) -> str | None:
    """The last ``crash: ...`` line before any prompt: why crash could not start.

    A line ending in ``:`` goes on on the next line (``crash: incompatible
    arguments:`` then the reason), which is joined to it.
    """
    last, pending = None, False
    for line in lines:
        if line.startswith(PROMPT):
            return None
        text = line.strip()
        if pending and text:
            last, pending = f"{last} {text}", False
        elif text.startswith("crash: "):
            last, pending = text, text.endswith(":")
    return last


def parse_sys(lines) -> dict:
    """The ``KEY: value`` fields of crash's system displays, first value of each kept.

    The ``sys`` command stops at PANIC; the display crash prints when it starts
    (crash.out) goes on with PID, COMMAND, TASK, CPU and STATE: pass both.
    Empty when no display with a PANIC line is in ``lines``.
    """
    fields = {}
    for line in lines:
        m = _SYS_FIELD.match(line.rstrip("\n"))
        if m:
            fields.setdefault(" ".join(m.group(1).split()), m.group(2).strip())
    return fields if "PANIC" in fields else {}


def panic_message(value: str | None) -> str | None:
    """``"Kernel panic - not syncing: X"`` -> ``X``; other panic strings as crash shows them."""
    if value is None:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    text = text.strip()
    m = _NOT_SYNCING.match(text)
    if m:
        text = m.group(1)
    return text or None


@dataclass
class Backtrace:
    pid: int | None
    task: str | None
    cpu: int | None
    command: str | None
    frames: list = field(default_factory=list)   # "function" or "function [module]"
    rip: str | None = None                        # exception RIP symbol, when there is one
    lines: list = field(default_factory=list)


def backtraces(lines) -> list:
    """Every ``PID: ... TASK: ...`` block of bt output."""
    out = []
    for line in lines:
        line = line.rstrip("\n")
        m = _BT_HEADER.match(line)
        if m:
            cpu = m.group(3)
            out.append(Backtrace(int(m.group(1)), m.group(2), None if cpu == "-" else int(cpu),
                                 m.group(4)))
            continue
        if not out:
            continue
        bt = out[-1]
        bt.lines.append(line)
        f = _FRAME.match(line)
        if f:
            bt.frames.append(f.group(3) + (f" [{f.group(5)}]" if f.group(5) else ""))
            continue
        r = _EXCEPTION_RIP.search(line)
        if r and bt.rip is None:
            bt.rip = r.group(1).strip()
    return out


def panic_backtrace(traceback_lines, pid=None, task=None) -> Backtrace | None:
    """The panicking task's backtrace: the block matching ``task``/``pid``, else the first."""
    blocks = backtraces(traceback_lines)
    for bt in blocks:
        if task and bt.task and bt.task.lower() == task.lower():
            return bt
    for bt in blocks:
        if pid is not None and bt.pid == pid and bt.frames:
            return bt
    return blocks[0] if blocks else None


def oops_lines(log_lines) -> list:
    """The last oops/BUG/panic report of the kernel log, from its first line, at most OOPS_LINES."""
    lines = [line.rstrip("\n") for line in log_lines]
    marks = [i for i, line in enumerate(lines) if _OOPS_START.search(_LOG_STAMP.sub("", line))]
    if not marks:
        return []
    start = marks[-1]
    for i in reversed(marks[:-1]):
        if start - i > _OOPS_WINDOW:
            break
        start = i
    return lines[start:start + OOPS_LINES]


def log_panic_message(log_lines) -> str | None:
    """The panic string from the log, when ``sys`` could not run (crash --minimal)."""
    message = None
    for line in log_lines:
        text = _LOG_STAMP.sub("", line.rstrip("\n"))
        m = _NOT_SYNCING.match(text)  # not the "---[ end Kernel panic ... ]---" trailer
        if m and m.group(1):
            message = m.group(1)
    return message


def _int(value):
    try:
        return int(str(value).split()[0])
    except (ValueError, IndexError, TypeError):
        return None


def summary(sys_lines, traceback_lines, log_lines) -> dict:
    """The record's ``panic``: message, task, pid, cpu, rip, backtrace, oops."""
    fields = parse_sys(sys_lines)
    log_lines = list(log_lines)
    message = panic_message(fields.get("PANIC")) if fields else None
    if not message:
        message = log_panic_message(log_lines)
    command = fields.get("COMMAND")
    if command and len(command) >= 2 and command[0] == command[-1] == '"':
        command = command[1:-1]
    task_addr = (fields.get("TASK") or "").split()[0] if fields.get("TASK") else None
    pid, cpu = _int(fields.get("PID")), _int(fields.get("CPU"))
    bt = panic_backtrace(traceback_lines, pid, task_addr)
    if bt is not None:
        pid = pid if pid is not None else bt.pid
        cpu = cpu if cpu is not None else bt.cpu
        command = command or bt.command
        task_addr = task_addr or bt.task
    return {
        "message": message,
        "task": command,
        "pid": pid,
        "cpu": cpu,
        "task_address": task_addr,
        "rip": bt.rip if bt else None,
        "backtrace": bt.frames[:FRAMES] if bt else [],
        "oops": oops_lines(log_lines),
    }
