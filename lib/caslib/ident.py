"""cas-ident: name the crashed kernel of a dump from its headers, reading only what it needs.

Python use::

    from caslib.ident import identify, process
    facts = identify("/path/vmcore", buffersize=64 << 20)
    record = process({"core": "/abs/path/vmcore"}, cfg)

``identify(path, buffersize)`` returns ``{"format", "kernel", "ident_method",
"ident"}`` or raises ``caslib.errors.FormatError`` (``.kind`` is a short word).
``process(record, cfg)`` reads ``record["core"]`` (absolute path) and adds:

- ``format``: ``elf``, ``kdump``, ``diskdump``, ``flattened`` (the wrapped
  format is ``ident.inner_format``), or, for headers that name no kernel,
  ``lkcd``, ``s390``, ``sadump``, ``xen``, ``raw``;
- ``kernel``: ``{release, version, machine, hostname, crash_time, build_id,
  banner}``; unknown fields are null, never guessed.  ``machine`` is what
  ``uname -m`` printed (the kernel's utsname when it could be read, else
  mapped from ``e_machine``); ``crash_time`` is ISO 8601 UTC;
- ``ident_method``: where the release came from: ``vmcoreinfo``,
  ``utsname`` (kdump header or the kernel's ``init_uts_ns``) or ``banner``
  (the fallback scan of the first ``buffersize`` bytes; in ELF dumps the
  vmcoreinfo_data page an OSRELEASE= hit starts is then used too, if its
  symbols lead to a matching ``init_uts_ns``);
- ``ident``: extra facts, each present only when known:

  - the container: ``inner_format`` and ``records`` (flattened streams),
    ``header_version``, ``block_size``, ``word_size``, ``compression`` (list),
    ``dump_level``, ``incomplete`` (kdump: INCOMPLETE status, or the file
    stops before its page data ends), ``sub_header_abi`` (``i386``/``arm32``),
    ``warnings`` (incomplete, a header that fits two layouts, a sub-header
    though ``sub_hdr_size`` is 0, a missing split part), ``elf_class`` (ELF),
    ``endian``, ``panic_string`` (LKCD);
  - the CPUs: ``cpus`` (NT_PRSTATUS notes), ``cpu_pids`` (``pr_pid`` per CPU,
    not for QEMU, which writes vCPU numbers there), ``panic_cpu`` and
    ``panic_pid`` (only when exactly one CPU was running a task; diskdump:
    the header's current CPU), ``qemu_notes`` (QEMU wrote the CPU notes:
    QEMU's own dumps and dumps makedumpfile made from them);
  - from VMCOREINFO: ``pagesize``, ``kerneloffset`` (hex), ``phys_base``;
  - from utsname: ``domainname``;
  - how it knew: ``sources`` (the structure behind each kernel field),
    ``utsname_at`` (how ``init_uts_ns`` was found), ``conflicts`` (header
    facts that disagree), ``scanned`` (bytes the fallback scan read),
    ``candidates`` (releases of an ambiguous scan), ``bytes_read`` and
    ``reads`` (the identification's I/O, fallback scan excluded).

- ``split`` (a ``makedumpfile --split`` part): ``{index, count, start_pfn,
  end_pfn}``; a record with ``cores`` (cas-unpack) or several FILEs that are
  parts of one dump become one record: ``core`` the first part, ``cores`` in
  pfn order, ``split`` ``{count, complete, start_pfn, end_pfn, fingerprint,
  parts}`` (caslib.dumps.splitdump).

Errors (error record, exit 1): ``empty``, ``truncated``, ``corrupt``,
``too-large``, ``compressed`` (run cas-unpack first), ``not-a-dump``,
``not-a-kernel-dump`` (a process core, named from NT_PRPSINFO),
``ambiguous`` (the scan found several releases), ``unidentified``,
``not-split``/``split-mismatch`` (``cores`` that are not parts of one dump).
"""

import functools
import os
import time

from caslib.errors import FormatError
from caslib import cli, config, logs, magic, pathsafety, records
from caslib.dumps import elfcore, kdumphdr, lkcdhdr, splitdump, utsname, vmcoreinfo
from caslib.dumps.flattened import FileSource, FlattenedSource
from caslib.records import StepError

PROG = "cas-ident"
DEFAULT_BUFFERSIZE = config.DEFAULTS["buffersize"]
HEAD = 4096


YEAR_10000 = 253402300800  # the first time ISO 8601's four-digit year cannot show


def _iso(ts) -> str | None:
    """UTC ISO 8601 of a dump's time stamp (time, not datetime: a cheaper import)."""
    try:
        if not ts or ts <= 0 or ts >= YEAR_10000:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return None


def _sniff(head: bytes) -> str | None:
    """The format named by the first bytes (doc/formats.md section 1), or None."""
    return magic.dump_format(head)


class Identification:
    """Facts gathered from one dump; ``result()`` shapes them for the record."""

    def __init__(self, fmt: str):
        self.format = fmt
        self.kernel = dict.fromkeys(("release", "version", "machine", "hostname", "crash_time",
                                     "build_id", "banner"))
        self.method = None
        self.ident: dict = {}
        self.sources: dict = {}
        self.core = None          # the parsed ELF core, when the dump is one

    def set(self, key: str, value, source: str) -> None:
        """Fill ``kernel[key]`` unless already known; note a disagreement."""
        if value in (None, ""):
            return
        if self.kernel[key] is None:
            self.kernel[key] = value
            self.sources[key] = source
        elif self.kernel[key] != value and key != "machine":
            self.ident.setdefault("conflicts", []).append(
                f"{key}: {self.sources[key]} says {self.kernel[key]!r}, {source} says {value!r}")

    def result(self, src) -> dict:
        ident = dict(self.ident)
        if self.sources:
            ident["sources"] = dict(self.sources)
        ident["bytes_read"] = src.bytes_read
        ident["reads"] = src.reads
        return {"format": self.format, "kernel": self.kernel, "ident_method": self.method,
                "ident": ident}


def _apply_vmcoreinfo(ident: Identification, vmci, where: str) -> None:
    ident.set("release", vmci.osrelease, where)
    ident.set("build_id", vmci.build_id, where)
    ident.set("crash_time", _iso(vmci.crashtime), where)
    ident.ident.update(vmcoreinfo.subset(vmci))


def _apply_utsname(ident: Identification, uts: dict, where: str) -> None:
    ident.set("release", uts["release"], where)
    ident.set("version", uts["version"], where)
    ident.set("hostname", uts["nodename"], where)
    if uts["machine"]:
        # the kernel's own utsname says i686 where e_machine only says i386
        ident.kernel["machine"] = uts["machine"]
        ident.sources["machine"] = where
    if uts["domainname"] and uts["domainname"] != "(none)":
        ident.ident["domainname"] = uts["domainname"]


def _apply_prstatus(ident: Identification, pids: list, qemu: bool) -> None:
    if not pids:
        return
    ident.ident["cpus"] = len(pids)
    if qemu:
        return  # QEMU writes vCPU numbers, not task pids
    ident.ident["cpu_pids"] = pids
    running = [(cpu, pid) for cpu, pid in enumerate(pids) if pid > 0]
    if len(running) == 1:
        ident.ident["panic_cpu"], ident.ident["panic_pid"] = running[0]


def _ident_elf(src, head, ident: Identification) -> None:
    core = ident.core = elfcore.read_elf(src, head)
    if core.is_user_core():
        name, args = core.process_name()
        what = f"process {name!r}" if name else "a process"
        if args and args != name:
            what += f" ({args})"
        raise FormatError(f"a user-space core of {what}, not a kernel dump", "not-a-kernel-dump")
    core.check_extent(src.size)
    ident.ident.update(elf_class=core.elfclass, endian="little" if core.endian == "<" else "big")
    ident.set("machine", core.machine, "e_machine")
    note = core.note("VMCOREINFO")
    vmci = vmcoreinfo.parse(note.desc) if note else vmcoreinfo.VmcoreInfo()
    _apply_vmcoreinfo(ident, vmci, "VMCOREINFO note")
    qemu = core.note("QEMU") is not None
    if qemu:
        ident.ident["qemu_notes"] = True
    _apply_prstatus(ident, core.prstatus_pids(), qemu)
    uts, how = utsname.from_elf(src, core, vmci, ident.kernel["release"], core.machine)
    if uts:
        _apply_utsname(ident, uts, "init_uts_ns")
        ident.ident["utsname_at"] = how


def _ident_kdump(src, head, ident: Identification) -> None:
    hdr = kdumphdr.read_header(src, head)
    incomplete = kdumphdr.check_extent(src, hdr, src.size)
    if ident.format != "flattened":
        ident.format = hdr.format
    ident.ident.update(header_version=hdr.header_version, block_size=hdr.block_size,
                       word_size=hdr.bits, endian="little" if hdr.endian == "<" else "big")
    if hdr.sub_layout in ("i386", "arm32"):
        ident.ident["sub_header_abi"] = hdr.sub_layout
    if hdr.compression:
        ident.ident["compression"] = hdr.compression
    warnings = list(hdr.warnings)
    if incomplete:
        ident.ident["incomplete"] = True
        warnings.append(f"incomplete dump: {incomplete}")
    part = hdr.split()
    if part:
        ident.ident["split"] = dict(index=0 if part["start_pfn"] == 0 else None, count=None,
                                    **part)
    if warnings:
        ident.ident["warnings"] = warnings
    if hdr.sub.get("dump_level") is not None and hdr.header_version >= 1:
        ident.ident["dump_level"] = hdr.sub["dump_level"]
    notes = elfcore.parse_notes(hdr.notes, hdr.endian) if hdr.notes else []
    raw_vmci = hdr.vmcoreinfo
    if not raw_vmci:
        raw_vmci = next((n.desc for n in notes if n.name == "VMCOREINFO"), b"")
    vmci = vmcoreinfo.parse(raw_vmci)
    _apply_vmcoreinfo(ident, vmci, "sub-header VMCOREINFO")
    uts = hdr.utsname
    if uts["sysname"] or uts["release"]:
        _apply_utsname(ident, uts, f"{hdr.format} header utsname")
    elif uts["machine"]:
        ident.set("machine", uts["machine"], f"{hdr.format} header utsname")
    ident.set("crash_time", _iso(hdr.timestamp), f"{hdr.format} header timestamp")
    qemu = any(n.name == "QEMU" for n in notes)
    if qemu:
        ident.ident["qemu_notes"] = True
    longsize = 8 if hdr.bits == 64 else 4
    _apply_prstatus(ident, elfcore.prstatus_pids(notes, hdr.endian, longsize), qemu)
    if hdr.format == "diskdump" and hdr.current_cpu < max(hdr.nr_cpus, 1):
        ident.ident["panic_cpu"] = hdr.current_cpu
    if ident.kernel["hostname"] is None and ident.kernel["release"]:
        uts, how = utsname.from_kdump(src, hdr, vmci, ident.kernel["release"],
                                  ident.kernel["machine"])
        if uts:
            _apply_utsname(ident, uts, "init_uts_ns")
            ident.ident["utsname_at"] = how


def _ident_lkcd(head: bytes, ident: Identification) -> None:
    hdr = lkcdhdr.read(head)
    if hdr is None:
        return
    ident.ident["header_version"] = hdr["version"]
    _apply_utsname(ident, hdr["utsname"], "lkcd header utsname")
    ident.set("crash_time", _iso(hdr["timestamp"]), "lkcd header time")
    if hdr["panic_string"]:
        ident.ident["panic_string"] = hdr["panic_string"]


def _ident_scan(path: str, ident: Identification, buffersize: int, start: int = 0) -> None:
    from caslib.dumps import bannerscan# only the fallback needs it: keep start-up short
    from caslib.progress import Progress
    size = os.path.getsize(path)
    with Progress(f"{os.path.basename(path)}: scanning for the kernel release",
                  min(buffersize, max(size - start, 0))) as progress:
        result = bannerscan.scan(path, buffersize, start, progress)
    ident.ident["scanned"] = result.scanned
    verdict = result.verdict()
    if "candidates" in verdict:
        ident.ident["candidates"] = verdict["candidates"]
        where = (f"its {size} bytes" if result.scanned >= size - start
                 else f"its first {result.scanned} bytes")
        raise FormatError(f"{where} name several kernels ("
                        + ", ".join(verdict["candidates"][:8]) + "); not picking one",
                        "ambiguous")
    if not verdict:
        return
    how = "OSRELEASE= in memory" if verdict["osrelease_hit"] else "Linux version banner"
    ident.set("release", verdict["release"], how)
    if verdict["osrelease_hit"] and ident.core is not None:
        _vmcoreinfo_in_memory(path, ident, result.osrelease[verdict["release"]])
    ident.set("banner", verdict["banner"], "Linux version banner")
    ident.set("version", verdict["version"], "Linux version banner")
    ident.method = "banner"


def _vmcoreinfo_in_memory(path: str, ident: Identification, offset: int) -> None:
    """The OSRELEASE= hit may start the kernel's own vmcoreinfo_data page (filled at boot,
    whether or not anyone registered it): parse it, and trust it only if its
    SYMBOL(init_uts_ns) reads back as a utsname of the same release in this dump."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read(8192)
    vmci = vmcoreinfo.parse(text)
    release = ident.kernel["release"]
    if vmci.osrelease != release:
        return
    core = ident.core
    with FileSource(path) as src:
        uts, how = utsname.from_elf(src, core, vmci, release, core.machine)
    if uts:
        _apply_vmcoreinfo(ident, vmci, "VMCOREINFO in memory")
        _apply_utsname(ident, uts, "init_uts_ns")
        ident.ident["utsname_at"] = f"{how}, symbols from the VMCOREINFO at byte {offset}"


def identify(path: str, buffersize: int = DEFAULT_BUFFERSIZE) -> dict:
    """Identify the kernel of the dump at ``path``; see the module docstring for the result."""
    with FileSource(path) as plain:
        if plain.size == 0:
            raise FormatError("empty file", "empty")
        head = plain.read(0, HEAD + 8)
        fmt = _sniff(head)
        src = plain
        ident = Identification(fmt or "raw")
        if fmt == "flattened":
            src = FlattenedSource(plain)
            src.walk_all()  # a stream cut short is an error, not a dump
            head = src.read(0, HEAD + 8)
            inner = _sniff(head)
            ident.ident["inner_format"] = inner
            ident.ident["records"] = len(src.records)
            if inner not in ("elf", "kdump", "diskdump"):
                raise FormatError("flattened stream holds no ELF or kdump header at offset 0",
                                "corrupt")
            fmt = inner
        try:
            return _identify(plain, src, head, fmt, ident, buffersize)
        except FormatError as exc:
            exc.partial = ident  # type: ignore[attr-defined]
            raise


def _identify(plain, src, head, fmt, ident, buffersize) -> dict:
    if fmt == "elf":
        _ident_elf(src, head, ident)
    elif fmt in ("kdump", "diskdump"):
        _ident_kdump(src, head, ident)
    elif fmt == "lkcd":
        _ident_lkcd(head, ident)
    if ident.kernel["release"]:
        ident.method = "vmcoreinfo" if "VMCOREINFO" in ident.sources["release"] \
            else "utsname"
        return ident.result(src)
    if fmt is None:
        name = magic.packed(head)
        if name:
            raise FormatError(f"{name} data, not a dump (unpack it with cas-unpack)",
                            "compressed")
    # headers named no kernel: the string scan (over the raw stream for flattened files)
    _ident_scan(plain.path, ident, buffersize)
    if not ident.kernel["release"]:
        where = (f"its {plain.size} bytes" if ident.ident["scanned"] >= plain.size
                 else f"its first {ident.ident['scanned']} bytes (--buffersize)")
        if fmt is None:
            starts = (f" (starts with {head[:8].hex(' ')})"
                      if pathsafety.may_show_bytes(plain.path) else "")
            raise FormatError(f"no dump header{starts} and no kernel release in {where}",
                            "not-a-dump")
        raise FormatError(f"{ident.format} dump names no kernel in its headers nor in"
                        f" {where}", "unidentified")
    return ident.result(src)


def process(record: dict, cfg=None, buffersize: int | None = None) -> dict:
    """Add ``format``, ``kernel``, ``ident_method`` and ``ident`` for ``record["core"]``."""
    core = record.get("core")
    if not isinstance(core, str) or not core:
        raise StepError("record has no core", "bad-record")
    if buffersize is None:
        buffersize = cfg.buffersize if cfg is not None else DEFAULT_BUFFERSIZE
    if not os.path.exists(core):
        raise StepError(f"{core}: no such file", "not-found")
    if os.path.isdir(core):
        raise StepError(f"{core}: is a directory, not a dump", "not-a-dump")
    try:
        facts = identify(core, buffersize)
    except FormatError as exc:
        partial = dict(record)
        found = getattr(exc, "partial", None)
        if found is not None and found.ident.get("candidates"):
            partial["format"] = found.format
            partial["ident"] = {"candidates": found.ident["candidates"]}
        raise StepError(f"{core}: {exc}", exc.kind, partial) from None
    part = facts["ident"].pop("split", None)
    record.update(facts)
    if part is not None:
        record["split"] = part
    splitdump.join_record(record, core)
    for warning in facts["ident"].get("warnings", []):
        logs.get().warning("%s: %s", os.path.basename(core), warning)
    k = facts["kernel"]
    logs.get().info("%s: %s (%s) from %s via %s", os.path.basename(core), k["release"],
                    k["machine"] or "unknown machine", facts["format"], facts["ident_method"])
    return record


def main(argv=None) -> int:
    """cas-ident's command line (man cas-ident)."""
    return records.main_wrapper(PROG, run_command, argv)


def parse_args(argv):
    parser = cli.argument_parser(
        PROG, "Name the crashed kernel of each dump from its headers.",
        "Reads records with a core key on stdin when no FILE is given.")
    parser.add_argument("--buffersize", metavar="N",
                        help="bytes the fallback banner scan may read (default: [advanced]"
                             " buffersize, 64M); suffixes K, M, G")
    cli.add_files(parser, "a dump file")
    args = parser.parse_args(argv)
    args.files = cli.files(args)
    if not args.files:
        cli.refuse_terminal(parser)
    return args


def run_command(argv) -> int:
    args = parse_args(argv)
    buffersize = None
    if args.buffersize is not None:
        try:
            buffersize = config.parse_size(args.buffersize)
        except ValueError:
            raise records.UsageError(f"{PROG}: --buffersize {args.buffersize!r}: expected a"
                                     " size like 67108864, 64M or 1G") from None
    cfg = cli.load_config(args)
    initial = splitdump.initial_records(args.files)
    return records.run(PROG, functools.partial(process, cfg=cfg, buffersize=buffersize),
                       initial)
