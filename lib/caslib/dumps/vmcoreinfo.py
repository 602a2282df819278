"""VMCOREINFO: the ``KEY=value`` text the crashed kernel leaves for dump tools.

Why: it is the one place every modern dump format (ELF note, kdump
sub-header, a page of RAM) carries the kernel's own release, build-id and
crash time, plus the symbol addresses needed to read ``init_uts_ns``.
Layout: linux ``kernel/vmcore_info.c`` (formerly ``kernel/crash_core.c``)
and ``Documentation/admin-guide/kdump/vmcoreinfo.rst``.  Keys look like
``OSRELEASE=6.1.0-18-amd64``, ``SYMBOL(init_uts_ns)=ffffffff82a1e2e0``,
``OFFSET(uts_namespace.name)=4``, ``NUMBER(phys_base)=-1040187392`` (decimal,
may be negative), ``KERNELOFFSET=1e00000`` (hex), ``CRASHTIME=1700000000``.
"""

import re

# A key is printable ASCII without '='; values run to the end of the line.
_LINE = re.compile(rb"^([A-Za-z0-9_()./-]{1,128})=([\x20-\x7e]{0,4096})$")
_HEX = re.compile(r"^(?:0x)?[0-9a-fA-F]{1,16}$")
_RELEASE = re.compile(r"^[\x21-\x7e]{1,64}$")
MAX_SIZE = 1 << 20  # no kernel writes more than a page or two; refuse absurd sizes


class VmcoreInfo(dict):
    """The parsed keys (first value of each key wins), with typed accessors.

    Accessors return None when a key is missing or malformed, never raise:
    a dump's text is untrusted input.
    """

    def text(self, key: str) -> str | None:
        return self.get(key)

    def hex(self, key: str) -> int | None:
        value = self.get(key)
        if value is None or not _HEX.match(value):
            return None
        return int(value, 16)

    def decimal(self, key: str) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        try:
            return int(value, 10)
        except ValueError:
            return None

    def symbol(self, name: str) -> int | None:
        return self.hex(f"SYMBOL({name})")

    def offset(self, name: str) -> int | None:
        return self.decimal(f"OFFSET({name})")

    def number(self, name: str) -> int | None:
        return self.decimal(f"NUMBER({name})")

    @property
    def osrelease(self) -> str | None:
        value = self.get("OSRELEASE")
        return value if value and _RELEASE.match(value) else None

    @property
    def build_id(self) -> str | None:
        value = self.get("BUILD-ID")
        if value and re.fullmatch(r"[0-9a-fA-F]{2,128}", value):
            return value.lower()
        return None

    @property
    def crashtime(self) -> int | None:
        value = self.decimal("CRASHTIME")
        return value if value and value > 0 else None

    @property
    def pagesize(self) -> int | None:
        value = self.decimal("PAGESIZE")
        if value and value >= 512 and value & (value - 1) == 0 and value <= 1 << 24:
            return value
        return None

    @property
    def kerneloffset(self) -> int | None:
        return self.hex("KERNELOFFSET")


def parse(data: bytes) -> VmcoreInfo:
    """Parse VMCOREINFO bytes (NUL padding and junk lines are ignored)."""
    info = VmcoreInfo()
    data = data.split(b"\0", 1)[0]
    for line in data.splitlines():
        m = _LINE.match(line.strip(b"\r"))
        if not m:
            continue
        key = m.group(1).decode("ascii")
        if key not in info:
            info[key] = m.group(2).decode("ascii").strip()
    return info


def subset(info: VmcoreInfo) -> dict:
    """The few facts worth passing on in ``record["ident"]`` (documented in cas-ident(1))."""
    out = {}
    if info.pagesize:
        out["pagesize"] = info.pagesize
    if info.kerneloffset is not None:
        out["kerneloffset"] = f"{info.kerneloffset:#x}"
    phys_base = info.number("phys_base")
    if phys_base is not None:
        out["phys_base"] = phys_base
    return out
