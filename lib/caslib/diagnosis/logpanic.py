"""The panic summary read from the kernel log alone, for when crash cannot run.

Why: without a matching vmlinux there is no ``bt`` and no ``sys``, but the
kernel printed its own report before it died: the panic string, the
``CPU: N PID: P Comm: NAME`` line, the ``RIP:`` (x86) or ``pc :`` (arm64)
line and a ``Call Trace:`` whose frames the unwinder was unsure of are
marked with ``?`` (arch/x86/kernel/dumpstack.c ``printk_stack_address``).
The shape matches cas-crash's ``crash.panic`` (message, task, pid, cpu,
rip, backtrace, oops) so the mail shows either the same way; ``frames``
adds ``{function, module, reliable}`` per frame.
"""

import re

from caslib.crashrun import panic

_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_TASK = re.compile(r"\bCPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?) "
                   r"(?:Not tainted|Tainted)")
_RIP = re.compile(r"^(?:RIP|EIP|pc)\s*:\s*(.+?)\s*$")
_FRAME = re.compile(r"^(?:\[<[0-9a-fA-F]+>\]\s+)?(\? )?([A-Za-z0-9_.$]+\+0x[0-9a-fA-F]+"
                    r"/0x[0-9a-fA-F]+)(?: \[([A-Za-z0-9_-]+)\])?\s*$")
_MARKER = re.compile(r"^</?(?:TASK|IRQ|NMI|SOFTIRQ|#[A-Z]+|EOE)>$")
_OTHER_MESSAGE = re.compile(r"^(BUG: .*|Oops: .*|kernel BUG at .*|general protection fault.*|"
                            r"Unable to handle kernel .*|watchdog: BUG: .*)$")
FRAMES = 20


def _text(line: str) -> str:
    return _STAMP.sub("", line.rstrip("\n"))


def frames(lines) -> list:
    """``{function, module, reliable}`` of the first ``Call Trace:`` in ``lines``."""
    out, started = [], False
    for line in lines:
        text = _text(line).strip()
        if not started:
            started = text in ("Call Trace:", "Call trace:")
            continue
        if _MARKER.match(text):
            continue
        m = _FRAME.match(text)
        if not m:
            if out:
                break
            continue
        out.append({"function": m.group(2), "module": m.group(3),
                    "reliable": m.group(1) is None})
    return out


def summary(lines) -> dict:
    """The ``panic`` summary of a log (list of output lines); fields unknown are None."""
    lines = [line.rstrip("\n") for line in lines]
    oops = panic.oops_lines(lines)
    message = panic.log_panic_message(lines)
    task = pid = cpu = rip = None
    for line in oops:
        text = _text(line).strip()
        if message is None:
            m = _OTHER_MESSAGE.match(text)
            if m:
                message = m.group(1)
        t = _TASK.search(text)
        if t and task is None:
            cpu, pid, task = int(t.group(1)), int(t.group(2)), t.group(3)
        r = _RIP.match(text)
        if r and (rip is None or rip.startswith("0033:")):  # a kernel RIP beats a user one
            rip = r.group(1)
    found = frames(oops)
    shown = [("" if f["reliable"] else "? ") + f["function"]
             + (f" [{f['module']}]" if f["module"] else "") for f in found]
    return {"message": message, "task": task, "pid": pid, "cpu": cpu, "rip": rip,
            "backtrace": shown[:FRAMES], "frames": found[:FRAMES], "oops": oops,
            "source": "log"}
