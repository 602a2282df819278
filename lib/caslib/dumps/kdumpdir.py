"""A kdump directory (``/var/crash/<host>-<date>/``) as cas-unpack's input, or its archive.

Why: customers often send the whole directory kdump wrote: ``vmcore`` (or
``vmcore.flat``, or the parts of a ``makedumpfile --split`` dump) with
``vmcore-dmesg.txt`` and sometimes ``kexec-dmesg.log``.  The dump is chosen
by its magic bytes, never by its name; every part of a split dump is kept
(``cores``); ``vmcore-dmesg.txt`` (the crashed kernel's log, written by
kdump with ``makedumpfile --dump-dmesg`` or ``vmcore-dmesg``) is kept in the
job directory as ``vmcore_dmesg`` because it is what is left to read when
crash cannot run; every other file is named in the job log.
"""

import os
import stat

from caslib import errors
from caslib.streams import decompress, layers
from caslib.dumps import splitdump
from caslib.records import StepError

SIDE_FILES = {"vmcore-dmesg.txt": "vmcore_dmesg"}   # name -> record key
MAX_SIDE = 16 << 20          # a kernel log of more is not what kdump wrote
MAX_ENTRIES = 1000           # a directory with more files is not a kdump directory


def is_text(head: bytes) -> bool:
    """Printable UTF-8 lines: no NUL, decodes (the end may cut a character)."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3
    return True


def _head(path: str, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def choose(directory: str) -> tuple[list, dict, list]:
    """(dump files: the dump, or every part of a split one; side files by record key;
    the other files) of a kdump directory, by content."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise StepError(f"{directory}: cannot list: {exc.strerror}", "unreadable") from None
    if len(names) > MAX_ENTRIES:
        raise StepError(f"{directory}: {len(names)} entries, more than a kdump directory holds"
                        f" ({MAX_ENTRIES})", "not-a-dump")
    dumps, parts, side, others, plain = [], [], {}, [], []
    for name in names:
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            others.append(name + ("/" if stat.S_ISDIR(st.st_mode) else ""))
            continue
        head = _head(path, splitdump.PEEK)
        key = SIDE_FILES.get(name)
        if key and key not in side and st.st_size <= MAX_SIDE and is_text(head[:4096]):
            side[key] = path
        elif splitdump.is_part_head(head):
            parts.append(path)
        elif layers.dump_kind(head):
            dumps.append((st.st_size, path))
        elif decompress.sniff(head[:16]) or layers.is_tar(head) or layers.is_zip(head):
            plain.append((st.st_size, path))  # perhaps a compressed dump
        else:
            others.append(name)
    if parts:
        groups = [g for g in splitdump.group(parts)]
        chosen = max(groups, key=len)
        others += [os.path.basename(p) for g in groups if g is not chosen for p in g]
        others += [os.path.basename(p) for _, p in dumps + plain]
    elif dumps or plain:
        pick = max(dumps) if dumps else max(plain)
        chosen = [pick[1]]
        others += [os.path.basename(p) for _, p in dumps + plain if p != pick[1]]
    else:
        raise StepError(f"{directory}: no file in it is a kernel dump (by its first bytes)"
                        f"{': ' + ', '.join(names[:10]) if names else ': it is empty'}", "no-core")
    return chosen, side, sorted(others)


def finish_extras(out, core: str, parts: list, side: dict, record: dict, log,
                  names: list | None = None) -> None:
    """Rename the further split parts (to ``names``, else ``<core>.<n>``) and the side files
    into place; set ``cores`` and the side files' keys.  ``parts`` and ``side`` hold
    partial paths of ``out``."""
    cores = [core]
    for i, path in enumerate(parts, start=2):
        final = os.path.join(os.path.dirname(core), names[i - 2]) if names else f"{core}.{i}"
        cores.append(out.finish(path, final))
    for key, path in side.items():
        name = next(n for n, k in SIDE_FILES.items() if k == key)
        final = os.path.join(os.path.dirname(core), name)
        record[key] = out.finish(path, final)
    if len(cores) > 1:
        record["cores"] = cores
        log.info("split dump: kept %d parts: %s", len(cores),
                 ", ".join(os.path.basename(c) for c in cores))


def _bring_in(out, path: str, log) -> tuple[str, list | None, str | None]:
    """One file of the directory into the job as a partial file of ``out``: hard-linked
    or copied, or peeled when compressed.  (partial path, layers peeled or None, dump
    kind by magic)."""
    from caslib.progress import Progress
    from caslib.unpack import link_or_copy, raw_local
    with open(path, "rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        with Progress(f"copy {os.path.basename(path)}", size) as progress:
            if raw_local(fh):
                part = link_or_copy(fh, path, size, out, progress, log)[0]
                return part, None, layers.dump_kind(os.pread(fh.fileno(), layers.HEAD, 0))
            cand = layers.Peeler(out, log, path, path).peel(fh, size)
            return cand.path, cand.layers, cand.kind


def unpack_directory(record: dict, source: str, choice: tuple, log) -> dict:
    """cas-unpack of a kdump directory (``choice`` from ``choose``): ``record`` has id,
    job and workdir already."""
    from caslib.unpack import Output, core_name
    chosen, side, others = choice
    workdir = record["workdir"]
    log.info("unpacking kdump directory %s for %s into %s", source, record["id"], workdir)
    for name in others:
        log.info("%s: not used: %s", source, name)
    if others:
        record["ignored"] = others
    out = Output(workdir, core_name(os.path.basename(chosen[0]), record["job"]), log)
    done, peeled, kind = [], [], None
    try:
        for path in chosen + list(side.values()):
            part, peel, what = _bring_in(out, path, log)
            done.append(part)
            if peel is not None:      # a compressed dump in the directory
                peeled, kind = peel, what
            elif path == chosen[0]:
                kind = what
        first, parts = done[0], done[1:len(chosen)]
        side_parts = dict(zip(side, done[len(chosen):]))
        core = out.finish(first)
        names = [core_name(os.path.basename(p), record["job"]) for p in chosen]
        unique = len(set(names)) == len(names) and not set(names) & set(SIDE_FILES)
        finish_extras(out, core, parts, side_parts, record, log, names[1:] if unique else None)
    except StepError as exc:
        out.cleanup()
        raise StepError(exc.message, exc.kind, partial=record) from None
    except OSError as exc:
        out.cleanup()
        raise StepError(f"{exc.filename or source}: {exc.strerror or exc}",
                        errors.kind_of_oserror(exc), partial=record) from None
    except KeyboardInterrupt as exc:
        out.cleanup()
        exc.partial = record
        raise
    record["core"] = core
    record["layers"] = ["directory"] + peeled
    record["core_bytes"] = os.path.getsize(core)
    log.info("core %s: %s bytes, %s dump%s", core, f"{record['core_bytes']:,}", kind or "unknown",
             f", {len(chosen)} split parts" if len(chosen) > 1 else "")
    return record


def dmesg_panic(record: dict) -> list:
    """The panic report quoted from the job's ``vmcore_dmesg`` (empty when there is none):
    what the mail shows when crash could not give the panic itself."""
    from caslib import jobdir
    from caslib.crashrun import panic
    path, workdir = record.get("vmcore_dmesg"), record.get("workdir")
    if not isinstance(path, str) or not isinstance(workdir, str) or \
            not jobdir.inside(workdir, path) or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as fh:
        return panic.oops_lines(fh.read(MAX_SIDE).splitlines())
