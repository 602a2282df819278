"""Read a kernel log (crash's ``log`` output, or dmesg) into the parts triage needs.

Why the log and not only crash's ``bt``: the kernel's own unwinder (ORC on x86_64)
printed each oops, warning, lockup and hung-task report with a ``Call Trace`` whose
guessed frames it marks ``?``; crash 8.0.2's ``bt`` on a 6.1 kernel mixes stale stack
words into the trace without saying so.  The log also holds what ``bt`` cannot: the
blocked task of a hung-task panic, ``kernel BUG at file:line!``, the taint string and
the modules linked in.

A trace line looks like ``[    3.74] ? casfault_init+0x38/0x1000 [casfault]``; context
lines ``<IRQ>``/``</IRQ>``/``<TASK>``/``</TASK>``/``<NMI>`` and the register dump of an
exception (``RIP: 0010:func+0x10/0x1c [mod]``, ``RSP: ...``, ``Code: ...``) may sit
inside a trace.  ``RIP: 0010`` is kernel mode, ``RIP: 0033`` user mode.
"""

import re
from dataclasses import dataclass, field

MAX_TRACE = 200     # frames read from one Call Trace at most
_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_CALLER = re.compile(r"^\[\s*[CT]\d+\]\s?")      # printk caller id, when configured
NOT_SYNCING = re.compile(r"Kernel panic - not syncing:\s*(.*?)\s*$")
_FRAME = re.compile(r"^\s*(\?\s+)?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[(\w+)\])?\s*$")
_ADDR_FRAME = re.compile(r"^\s*(\?\s+)?0x[0-9a-f]+\s*$")
_CONTEXT = re.compile(r"^\s*</?(IRQ|TASK|NMI|SOFTIRQ|EOI)>\s*$")
_REGS = re.compile(r"^\s*(RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|Code|FS|GS|CS|DS|CR\d|DR\d|"
                   r"PKRU|ORIG_RAX|EFLAGS)\b")
KERNEL_RIP = re.compile(r"^\s*RIP:\s*0010:([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                        r"(?:\s+\[(\w+)\])?")
_TAINTED = re.compile(r"\bTainted:\s+([A-Z ]+?)\s+\d+\.\d+\S*")
_NOT_TAINTED = re.compile(r"\bNot tainted\s+\d+\.\d+")
_MODULES = re.compile(r"^Modules linked in:\s*(.*)$")


@dataclass
class Frame:
    function: str            # as printed, suffixes such as .cold kept
    module: str | None = None
    reliable: bool = True    # False: the unwinder marked it '?'
    text: str = ""           # the line as printed, without the time stamp

    def label(self) -> str:
        return self.function + (f" [{self.module}]" if self.module else "")


@dataclass
class Trace:
    start: int                                   # index of the "Call Trace:" line
    frames: list = field(default_factory=list)
    unresolved: int = 0                          # '? 0xffff...' lines (no symbol)

    def reliable(self) -> list:
        return [f for f in self.frames if f.reliable]

    def unreliable(self) -> list:
        return [f for f in self.frames if not f.reliable]


def clean(lines) -> list:
    """The log's lines without trailing newlines, time stamps and printk caller ids."""
    out = []
    for line in lines:
        text = _STAMP.sub("", line.rstrip("\n"))
        out.append(_CALLER.sub("", text))
    return out


def panic_index(lines: list) -> int | None:
    """Index of the last 'Kernel panic - not syncing: X' line (not the '---[ end' trailer)."""
    found = None
    for i, line in enumerate(lines):
        m = NOT_SYNCING.search(line)
        if m and not line.lstrip().startswith("---[") and m.group(1):
            found = i
    return found


def read_trace(lines: list, start: int) -> Trace:
    """The frames of the Call Trace whose header is at ``lines[start]``."""
    trace = Trace(start)
    for line in lines[start + 1:]:
        if len(trace.frames) >= MAX_TRACE:
            break
        m = _FRAME.match(line)
        if m:
            trace.frames.append(Frame(m.group(2), m.group(3), not m.group(1), line.strip()))
            continue
        if _ADDR_FRAME.match(line):
            trace.unresolved += 1
            continue
        if _CONTEXT.match(line):
            if line.strip() == "</TASK>":
                break
            continue
        if _REGS.match(line) or not line.strip():
            continue
        break
    return trace


def traces(lines: list, start: int = 0, end: int | None = None) -> list:
    """Every Call Trace whose header lies in ``lines[start:end]``."""
    end = len(lines) if end is None else end
    return [read_trace(lines, i) for i in range(start, end)
            if lines[i].strip() in ("Call Trace:", "Call trace:")]


def kernel_rip(lines: list, start: int, end: int) -> Frame | None:
    """The first kernel-mode ``RIP: 0010:func+off/size [mod]`` in ``lines[start:end]``."""
    for line in lines[start:end]:
        m = KERNEL_RIP.match(line)
        if m:
            return Frame(m.group(1), m.group(2), True, line.strip())
    return None


def taint_string(lines: list) -> str | None:
    """The last taint the log printed: 'G           OE' style flags, '' when 'Not tainted'."""
    found = None
    for line in lines:
        m = _TAINTED.search(line)
        if m:
            found = m.group(1)
        elif _NOT_TAINTED.search(line):
            found = ""
    return found


def modules_linked_in(lines: list) -> dict:
    """{module: flags} from the last 'Modules linked in:' line ('casfault(OE+)' -> 'OE+')."""
    found = {}
    for line in lines:
        m = _MODULES.match(line.strip())
        if m:
            found = {}
            for word in m.group(1).split():
                name, _, flags = word.partition("(")
                if re.fullmatch(r"\w+", name):
                    found[name] = flags.rstrip(")") if flags else ""
    return found


def base_name(function: str) -> str:
    """A function name without compiler suffixes: 'out_of_memory.cold' -> 'out_of_memory'."""
    return re.sub(r"(\.(cold|isra|constprop|part|lto_priv|llvm)(\.\d+)?)+$", "", function)
