"""Decode the kernel's taint flags and name the modules that tainted it.

Why: a kernel tainted by an out-of-tree or proprietary module, an earlier oops or a
warning changes what the support engineer does first.  The letters are the kernel's
(Documentation/admin-guide/tainted-kernels.rst, print_tainted()); ``G`` only says "no
proprietary module" and is not a taint.  Sources, in the order trusted: the log's last
``Tainted:`` string, crash's ``mod -t`` (per-module taints), the log's ``Modules linked
in:`` flags and its "loading out-of-tree module taints kernel" lines.
"""

import re

FLAGS = {
    "P": "proprietary module loaded",
    "F": "module force-loaded",
    "S": "kernel running on an out-of-specification system",
    "R": "module force-unloaded",
    "M": "machine check exception occurred",
    "B": "bad page referenced or unexpected page flags",
    "U": "taint requested by user space",
    "D": "kernel died recently (an earlier oops or BUG)",
    "A": "ACPI table overridden by the user",
    "W": "kernel issued a warning",
    "C": "staging driver loaded",
    "I": "workaround for a platform firmware bug applied",
    "O": "out-of-tree module loaded",
    "E": "unsigned module loaded",
    "L": "soft lockup occurred",
    "K": "kernel live-patched",
    "X": "auxiliary taint (distribution-defined)",
    "T": "kernel built with the struct randomization plugin",
    "N": "in-kernel test loaded",
}
_MOD_T = re.compile(r"^\s*(\w+)\s+([A-Z]+)\s*$")
_LOG_TAINTERS = re.compile(r"^(\w+): (?:loading out-of-tree module taints kernel|module "
                           r"verification failed: .*tainting kernel|module license '.*' taints "
                           r"kernel)")


def decode(flags: str | None) -> dict:
    """{'flags': 'OE', 'decoded': {'O': ..., 'E': ...}} from a taint string ('G   OE')."""
    letters = "".join(dict.fromkeys(c for c in (flags or "") if c in FLAGS))
    return {"flags": letters, "decoded": {c: FLAGS[c] for c in letters}}


def mod_t(lines) -> dict:
    """{module: letters} from crash's ``mod -t`` output ('NAME TAINTS' header skipped)."""
    out = {}
    for line in lines:
        m = _MOD_T.match(line.rstrip("\n"))
        if m and m.group(1) != "NAME":
            out[m.group(1)] = m.group(2)
    return out


def log_tainters(lines) -> list:
    """Modules the log says tainted the kernel when they were loaded, in order."""
    out = []
    for line in lines:
        m = _LOG_TAINTERS.match(line.strip())
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def summary(log_flags: str | None, crash_mod_t: dict, linked: dict, tainters: list) -> dict:
    """The record's ``triage.taint``: flags, decoded, modules ({name: letters}), source."""
    result = decode(log_flags)
    result["source"] = "log" if log_flags is not None else None
    modules = dict(crash_mod_t)
    for name, letters in linked.items():
        letters = "".join(c for c in letters if c in FLAGS)
        if letters and name not in modules:
            modules[name] = letters
    for name in tainters:
        modules.setdefault(name, "")
    result["modules"] = modules
    if log_flags is None and modules:  # no taint string in the log: what the modules say
        result.update(decode("".join(modules.values())))
        result["source"] = "modules"
    return result


def describe(taint: dict) -> str:
    """One line for people: 'OE (out-of-tree module loaded, unsigned ...) by casfault'."""
    if not taint or not taint.get("flags"):
        return "not tainted" if taint and taint.get("source") else "unknown"
    text = f"{taint['flags']} ({'; '.join(taint['decoded'].values())})"
    if taint.get("modules"):
        text += " by " + ", ".join(taint["modules"])
    return text
