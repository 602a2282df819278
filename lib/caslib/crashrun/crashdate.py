"""The crash time from crash's own ``sys`` output, for dumps whose headers have none.

Why: a dump taken without a kdump kernel's help (QEMU's dump-guest-memory, or
makedumpfile run on such a dump) has no CRASHTIME in VMCOREINFO and a zero
header timestamp, so cas-ident leaves ``kernel.crash_time`` null; crash still
prints ``DATE:`` in ``sys`` (it reads the kernel's own clock,
``xtime``/``tk_core``), and the mail should not say "unknown" while crash knows.
crash prints the date with ``strftime("%a %b %e %H:%M:%S %Z %Y")`` in the
analysing host's zone; only UTC (or GMT) can be turned into ISO 8601 UTC
without guessing, so other zones are kept as crash's text alone.
"""

import datetime
import re

_DATE = re.compile(r"^\s*DATE:\s+(.+?)\s*$")


def parse(lines) -> tuple[str | None, str | None]:
    """(crash's DATE text, its ISO 8601 UTC form or None) from ``sys`` output lines."""
    for line in lines:
        m = _DATE.match(line)
        if not m:
            continue
        text = m.group(1)
        parts = text.split()
        if len(parts) == 6 and parts[4] in ("UTC", "GMT"):
            try:
                when = datetime.datetime.strptime(" ".join(parts[:4] + parts[5:]),
                                                  "%a %b %d %H:%M:%S %Y")
            except ValueError:
                return text, None
            return text, when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return text, None
    return None, None


def fill(record: dict, result: dict, lines) -> None:
    """Put crash's DATE into ``crash.date``; fill ``kernel.crash_time`` when it is null."""
    text, iso = parse(lines)
    if text is None:
        return
    result["date"] = text
    kernel = record.get("kernel")
    if isinstance(kernel, dict) and not kernel.get("crash_time") and iso:
        kernel["crash_time"] = iso
        result["crash_time_from"] = "crash sys DATE"
