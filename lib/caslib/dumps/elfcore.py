"""ELF core files: the header, program headers and notes of a vmcore.

Why: kdump's ``/proc/vmcore`` (and ``makedumpfile -E``), QEMU's
``dump-guest-memory`` and netdump all write ELF ``ET_CORE`` files whose notes
name the kernel (VMCOREINFO) and whose PT_LOADs map memory, so one read
through the right PT_LOAD gives the kernel's own ``init_uts_ns``.
Layouts: ``/usr/include/elf.h``; ``e_phnum == PN_XNUM`` (0xffff) means the
real count is in section header 0's ``sh_info`` (QEMU ``dump/dump.c``);
``elf_prstatus``/``elf_prpsinfo`` from linux ``include/linux/elfcore.h``.
Only headers and notes are read, each bounded by the file size and a cap.
"""

import struct
from collections import namedtuple

from caslib.errors import FormatError
from caslib import magic
from caslib.dumps.elfnote import Note, parse_notes  # noqa: F401 (Note: part of this API)

ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
NT_PRSTATUS, NT_PRPSINFO, NT_TASKSTRUCT, NT_AUXV = 1, 3, 4, 6
NT_SIGINFO, NT_FILE = 0x53494749, 0x46494C45
EM = {3: "i386", 62: "x86_64", 183: "aarch64", 21: "ppc64", 22: "s390x", 50: "ia64",
      243: "riscv64", 40: "arm", 8: "mips", 2: "sparc", 43: "sparc64", 258: "loongarch64"}
ET_NAMES = {0: "no file type", 1: "relocatable object", 2: "executable", 3: "shared object"}
MAX_PHDRS = 1 << 20           # PN_XNUM files have 65535 or more; 56 MiB of headers at most
MAX_NOTES = 16 << 20          # notes of a 8192-CPU machine stay well below this


# plain tuples: a dataclass import alone costs more than identifying a kdump dump
Segment = namedtuple("Segment", "type offset vaddr paddr filesz memsz")


class ElfCore:
    """An ELF core's header facts, program headers (``segments``) and ``notes``."""

    def __init__(self, path: str, elfclass: int, endian: str, type: int, machine_id: int,
                 segments: list | None = None, notes: list | None = None):
        self.path, self.elfclass, self.endian = path, elfclass, endian  # 32/64, "<"/">"
        self.type, self.machine_id = type, machine_id
        self.segments = segments if segments is not None else []
        self.notes = notes if notes is not None else []

    @property
    def machine(self) -> str | None:
        """``uname -m`` as far as the header can tell (utsname, when read, says more)."""
        name = EM.get(self.machine_id)
        if name == "ppc64" and self.endian == "<":
            return "ppc64le"
        if name == "s390x" and self.elfclass == 32:
            return "s390"
        if name == "riscv64" and self.elfclass == 32:
            return "riscv32"
        if name == "arm" and self.elfclass == 64:
            return None
        return name

    @property
    def loads(self) -> list:
        return [s for s in self.segments if s.type == PT_LOAD]

    def note(self, name: str, ntype: int | None = None) -> Note | None:
        for n in self.notes:
            if n.name == name and (ntype is None or n.type == ntype):
                return n
        return None

    def is_user_core(self) -> bool:
        """A process core (binfmt_elf, gdb gcore): PRPSINFO with AUXV/FILE/SIGINFO notes and
        no VMCOREINFO."""
        types = {(n.name, n.type) for n in self.notes}
        if any(n.name.startswith("VMCOREINFO") for n in self.notes):
            return False
        if ("CORE", NT_TASKSTRUCT) in types:  # netdump
            return False
        return ("CORE", NT_PRPSINFO) in types and bool(
            types & {("CORE", NT_AUXV), ("CORE", NT_FILE), ("CORE", NT_SIGINFO)})

    def process_name(self) -> tuple[str | None, str | None]:
        """(pr_fname, pr_psargs) of a process core: the last 16+80 bytes of NT_PRPSINFO."""
        n = self.note("CORE", NT_PRPSINFO)
        if n is None or len(n.desc) < 96:
            return None, None
        fname = n.desc[-96:-80].split(b"\0", 1)[0].decode("utf-8", "replace")
        args = n.desc[-80:].split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        return fname or None, args or None

    def prstatus_pids(self) -> list[int]:
        """``pr_pid`` of each NT_PRSTATUS note, in note (CPU) order."""
        longsize = 8 if self.elfclass == 64 and self.machine_id != 3 else 4
        return prstatus_pids(self.notes, self.endian, longsize)

    def check_extent(self, size: int) -> None:
        """Raise if the file (``size`` bytes) ends before the last PT_LOAD's data does."""
        end = max((s.offset + s.filesz for s in self.loads), default=0)
        if end > size:
            raise FormatError(f"ELF core is truncated: its PT_LOADs end at byte {end}, the file"
                            f" at {size}", "truncated")

    def offset_of_vaddr(self, vaddr: int, size: int) -> int | None:
        for s in self.loads:
            if s.vaddr and s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
                return s.offset + (vaddr - s.vaddr)
        return None

    def offset_of_paddr(self, paddr: int, size: int) -> int | None:
        for s in self.loads:
            if s.paddr <= paddr and paddr + size <= s.paddr + s.filesz:
                return s.offset + (paddr - s.paddr)
        return None


def prstatus_pids(notes: list, endian: str, longsize: int) -> list[int]:
    """``pr_pid`` of each CORE/NT_PRSTATUS note: after elf_siginfo (12 bytes), a short
    cursig (padded to 4) and two longs (sigpend, sighold)."""
    off = 16 + 2 * longsize
    return [struct.unpack_from(endian + "i", n.desc, off)[0] for n in notes
            if n.name == "CORE" and n.type == NT_PRSTATUS and len(n.desc) >= off + 4]


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise FormatError(f"{what} is truncated ({len(data)} of {size} bytes)", "truncated")


def read_elf(src, head: bytes | None = None) -> ElfCore:
    """Parse the ELF header, program headers and notes of ``src`` (a flattened.*Source)."""
    path = src.path
    head = head if head is not None and len(head) >= 64 else src.read(0, 64)
    if head[:4] != magic.ELF:
        raise FormatError("not an ELF file", "not-a-dump")
    _need(head, 52, "ELF header")
    cls, data = head[4], head[5]
    if cls not in (1, 2):
        raise FormatError(f"ELF header has class {cls}, not 1 (32-bit) or 2 (64-bit)")
    if data not in (1, 2):
        raise FormatError(f"ELF header has byte order {data}, not 1 (LSB) or 2 (MSB)")
    e = "<" if data == 1 else ">"
    if cls == 2:
        _need(head, 64, "ELF64 header")
        etype, machine = struct.unpack_from(e + "HH", head, 16)
        phoff, shoff = struct.unpack_from(e + "QQ", head, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(e + "HHHH", head, 54)
    else:
        etype, machine = struct.unpack_from(e + "HH", head, 16)
        phoff, shoff = struct.unpack_from(e + "II", head, 28)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(e + "HHHH", head, 42)
    core = ElfCore(path, 64 if cls == 2 else 32, e, etype, machine)
    if etype != ET_CORE:
        what = ET_NAMES.get(etype, f"type {etype}")
        raise FormatError(f"an ELF {what}, not a core file", "not-a-dump")
    _read_segments(src, core, cls, phoff, phentsize, phnum, shoff, shentsize)
    _read_notes(src, core)
    return core


def _read_segments(src, core: ElfCore, cls: int, phoff: int, phentsize: int, phnum: int,
                   shoff: int, shentsize: int) -> None:
    """The program header table into ``core.segments`` (bounded by MAX_PHDRS)."""
    e = core.endian
    want_phent, want_shent = (56, 64) if cls == 2 else (32, 40)
    if phnum == PN_XNUM:
        if shoff == 0 or shentsize != want_shent:
            raise FormatError("ELF header says e_phnum is in section 0 but has no valid section"
                            " header")
        sh = src.read(shoff, want_shent)
        _need(sh, want_shent, f"section header 0 at offset {shoff}")
        phnum = struct.unpack_from(e + "I", sh, 44 if cls == 2 else 28)[0]
    if phnum == 0:
        raise FormatError("ELF core has no program headers")
    if phentsize != want_phent:
        raise FormatError(f"ELF program header size is {phentsize}, expected {want_phent}")
    if phnum > MAX_PHDRS:
        raise FormatError(f"ELF core claims {phnum} program headers (cap {MAX_PHDRS})", "too-large")
    table = src.read(phoff, phnum * phentsize)
    _need(table, phnum * phentsize, f"program header table at offset {phoff}")
    for i in range(phnum):
        if cls == 2:
            ptype, _flags, off, va, pa, fsz, msz = struct.unpack_from(e + "IIQQQQQ", table, i * 56)
        else:
            ptype, off, va, pa, fsz, msz = struct.unpack_from(e + "IIIIII", table, i * 32)
        core.segments.append(Segment(ptype, off, va, pa, fsz, msz))


def _read_notes(src, core: ElfCore) -> None:
    """Every PT_NOTE segment's notes into ``core.notes`` (bounded by MAX_NOTES)."""
    total = 0
    for seg in core.segments:
        if seg.type != PT_NOTE or seg.filesz == 0:
            continue
        total += seg.filesz
        if total > MAX_NOTES:
            raise FormatError(f"ELF notes exceed {MAX_NOTES} bytes", "too-large")
        raw = src.read(seg.offset, seg.filesz)
        _need(raw, seg.filesz, f"PT_NOTE segment at offset {seg.offset}")
        core.notes.extend(parse_notes(raw, core.endian))
