"""cas-unpack: turn an incoming dump (file or URL, compressed, archived) into a raw core.

``process(record, cfg) -> record`` reads ``id``, ``job`` (optional, default
the identifier) and ``source`` (a path or an http/https/ftp URL), creates
the job directory and adds, per man/cas-records.7:

``workdir``     the new job directory ``<workDirectory>/<job>/<YYYY.MM.DD.HH.MM.SS>``
``core``        absolute path of the raw core inside it, named as the input
                without compression and archive suffixes (``vmcore.12345.tar.bz2``
                gives ``vmcore.12345``; ``vmcore`` if that name would be unsafe)
``layers``      what was peeled, outermost first, e.g. ``["bzip2", "tar"]``
``core_bytes``  the core's apparent size

Example::

    $ cas-unpack -i 7 vmcore.12345.tar.bz2
    {"id": "7", "job": "7", "workdir": "/srv/cas/work/7/2024.05.01.10.00.00",
     "source": "vmcore.12345.tar.bz2", "core": ".../vmcore.12345",
     "layers": ["bzip2", "tar"], "core_bytes": 2147483648}

The user's file is never moved or changed: a raw local dump is hard-linked
into the job directory when it is on the same filesystem, else copied
sparsely.  The core is written as ``<core>.part<n>`` and renamed when
complete; on any error, a full disk or SIGINT/SIGTERM the partial file is
removed and the job directory keeps only its log.

``cas-unpack --compress FILE`` compresses a core for transfer instead (see
``caslib.streams.compress``).
"""

import functools
import os
import re
import stat

from caslib import cli, deadline, errors, jobdir, logs, pathsafety, records
from caslib.streams import compress, decompress, fetch, layers, sparse
from caslib.dumps import kdumpdir
from caslib.progress import Progress
from caslib.records import StepError

PROG = "cas-unpack"
# Names the job directory holds besides the core (man/cas-records.7, THE JOB DIRECTORY);
# see pathsafety.cas_writes for every name and pattern CAS writes.
RESERVED = pathsafety.JOB_NAMES
SUFFIXES = (".tar", ".tgz", ".tbz", ".tbz2", ".txz", ".tzst", ".tlz", ".gz", ".bz2", ".xz",
            ".lzma", ".zst", ".zstd", ".zip")
_SAFE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+:-]{0,199}")


def core_name(source_name: str, job: str) -> str:
    """The input's name without compression/archive suffixes, or ``vmcore`` if unsafe."""
    name = os.path.basename(source_name or "")
    changed = True
    while changed:
        changed = False
        for suffix in SUFFIXES:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    if not _SAFE.fullmatch(name) or pathsafety.cas_writes(name, job):
        return "vmcore"
    return name


class Output:
    """Partial files in the job directory: created, written sparsely, renamed or removed."""

    def __init__(self, workdir: str, core: str, log, tick=None, max_size: int | None = None):
        self.max_size = max_size  # maxCoreSize: no layer may unpack to more
        self.workdir = workdir
        self.core = core
        self.log = log
        self.tick = tick
        self.parts = []
        self.count = 0

    def _next_name(self) -> str:
        self.count += 1
        return os.path.join(self.workdir, f"{self.core}.part{self.count}")

    def new_part(self) -> tuple[str, int]:
        path = self._next_name()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.parts.append(path)
        return path, fd

    def link(self, local: str) -> str:
        """Hard-link ``local`` in as the next partial file (OSError when it cannot be)."""
        path = self._next_name()
        os.link(local, path)
        self.parts.append(path)
        return path

    def free(self) -> int:
        st = os.statvfs(self.workdir)
        return st.f_bavail * st.f_frsize

    def warn_space(self, size_hint: int | None) -> None:
        if size_hint is not None and size_hint > self.free():
            self.log.warning("%s: the core may need up to %s bytes and only %s are free; going on "
                             "(zero blocks take no space)", self.workdir, f"{size_hint:,}",
                             f"{self.free():,}")

    def write(self, stream, size_hint: int | None = None) -> tuple[str, int]:
        """Copy ``stream`` into a new partial file; ``(path, apparent size)``."""
        self.warn_space(size_hint)
        path, fd = self.new_part()
        self.log.debug("writing %s (%s bytes free)", path, f"{self.free():,}")
        writer = sparse.SparseWriter(fd)
        try:
            # one thread decompresses ahead while this one scans for zeros and writes
            with decompress.Readahead(stream, sparse.COPY_CHUNK) as ahead:
                while True:
                    data = ahead.read(sparse.COPY_CHUNK)
                    if not data:
                        break
                    writer.write(data)
                    if self.max_size and writer.size > self.max_size:
                        self.discard(path)
                        raise StepError(f"{self.workdir}: the core grows past maxCoreSize "
                                        f"({self.max_size:,} bytes); stopped and removed the "
                                        "partial file", "too-large")
                    if self.tick:
                        self.tick()
            writer.close()
        except OSError as exc:
            self.discard(path)
            raise self.disk_error(exc, writer.size) from None
        finally:
            os.close(fd)
        return path, writer.size

    def copy_file(self, src_fd: int, size: int, progress) -> tuple[str, int]:
        """Sparse copy of a raw local file, after checking it fits."""
        need = sparse.allocated_data(src_fd, size)
        free = self.free()
        if need > free:
            raise StepError(f"{self.workdir}: not enough space for the core: needs {need:,} "
                            f"bytes, {free:,} free", "disk-full")
        path, fd = self.new_part()
        writer = None
        try:
            writer = sparse.copy_file(src_fd, fd, size, progress.update)
        except OSError as exc:
            self.discard(path)
            raise self.disk_error(exc, None) from None
        finally:
            os.close(fd)
        return path, writer.size

    def disk_error(self, exc: OSError, done: int | None):
        after = f" after {done:,} bytes" if done else ""
        return StepError(f"{self.workdir}: {exc.strerror or exc} while writing the core{after}; "
                         "removed the partial file", errors.kind_of_oserror(exc))

    def discard(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if path in self.parts:
            self.parts.remove(path)

    def cleanup(self) -> None:
        for path in list(self.parts):
            self.discard(path)

    def finish(self, path: str, final: str | None = None) -> str:
        """Rename the partial file ``path`` to ``final`` (default: the core) and keep it."""
        final = final or os.path.join(self.workdir, self.core)
        os.rename(path, final)
        self.parts.remove(path)
        return final


class _Counting:
    """The bottom of the stack: counts input bytes for the progress line."""

    def __init__(self, raw):
        self.raw = raw
        self.pos = 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.pos += len(data)
        return data

    def readable(self):
        return True


def open_source(source: str, timeout: float, total: float):
    """Open the input before anything is created: (stream, name, size, local path or None)."""
    if fetch.is_url(source):
        dl = fetch.Download(source, timeout, deadline=deadline.Deadline(total, fetch.shown(source)))
        return dl, fetch.url_basename(source), dl.length, None
    try:
        st = os.stat(source)
    except OSError:
        st = None
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise StepError(f"{source}: a device, not a dump file", "not-found")
    if st is not None and stat.S_ISFIFO(st.st_mode):  # no writer, or a silent one: bounded
        reader = deadline.open_fifo(source, deadline.Deadline(total, source))
        return reader, os.path.basename(source), None, None
    try:
        # unbuffered: one read(2) per call, so a signal is never left waiting behind a
        # buffered loop on a pipe or fifo (and no extra copy for regular files)
        fh = open(source, "rb", buffering=0)
    except FileNotFoundError:
        raise StepError(f"{source}: no such file", "not-found") from None
    except IsADirectoryError:
        raise StepError(f"{source}: is a directory, not a dump", "not-a-dump") from None
    except PermissionError:
        raise StepError(f"{source}: cannot read: permission denied", "unreadable") from None
    except OSError as exc:
        raise StepError(f"{source}: cannot read: {exc.strerror}", "unreadable") from None
    st = os.fstat(fh.fileno())
    if stat.S_ISDIR(st.st_mode):
        fh.close()
        raise StepError(f"{source}: is a directory, not a dump", "not-a-dump")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        fh.close()
        raise StepError(f"{source}: empty file", "empty")
    size = st.st_size if stat.S_ISREG(st.st_mode) else None
    return fh, os.path.basename(source), size, os.path.abspath(source) if size is not None else None


def raw_local(fh) -> bool:
    """True when a local regular file has no layer to peel (it is the core itself)."""
    head = os.pread(fh.fileno(), layers.HEAD, 0)
    return decompress.sniff(head[:16]) is None and not layers.is_tar(head) and not layers.is_zip(head)


def link_or_copy(fh, local: str, size: int, out: Output, progress, log) -> tuple[str, int]:
    """Hard-link the user's raw dump into the job directory, else copy it sparsely."""
    if not pathsafety.link_allowed(local):  # someone else's file: a copy of our own
        log.info("%s: raw file of another user, copying it", local)
        return out.copy_file(fh.fileno(), size, progress)
    try:
        path = out.link(local)
        log.info("%s: raw file, hard-linked into the job directory", local)
        return path, size
    except OSError as exc:
        log.info("%s: raw file, copying it (no hard link: %s)", local, exc.strerror)
    return out.copy_file(fh.fileno(), size, progress)


def _keep_vmlinux(out: Output, cand, log) -> dict:
    """The customer's vmlinux as ``<workdir>/vmlinux``: ``{file, member, build_id}``."""
    from caslib.dumps import elfnote
    final = out.finish(cand.path, os.path.join(out.workdir, "vmlinux"))
    with open(final, "rb") as fh:
        build_id = elfnote.build_id(fh)
    log.info("kept the archive's %s as %s (build-id %s)", cand.member, final, build_id)
    return {"file": final, "member": cand.member, "build_id": build_id}


def process(record: dict, cfg, timeout: float | None = None) -> dict:
    """Unpack ``record["source"]`` into a new job directory; see the module docstring."""
    log = logs.get()
    ident = record.get("id")
    if ident is None or ident == "":
        raise StepError("record has no id: give -i ID", "usage")
    ident = jobdir.check_name(str(ident) if isinstance(ident, int) else ident, "identifier")
    job = jobdir.check_name(record.get("job") or ident, "job name")
    source = record.get("source")
    if not isinstance(source, str) or not source:
        raise StepError("record has no source file or URL", "bad-record")
    if timeout is None:
        timeout = cfg.downloadTimeout
    if not fetch.is_url(source) and os.path.isdir(source):  # a kdump directory
        chosen = kdumpdir.choose(source)  # before the job directory: input is checked first
        record.update(id=ident, job=job, workdir=jobdir.create(cfg.workDirectory, job))
        with logs.job_log(record):
            return kdumpdir.unpack_directory(record, source, chosen, log)
    raw, name, size, local = open_source(source, timeout,
                                         cfg.transferDeadline)
    try:
        workdir = jobdir.create(cfg.workDirectory, job)
        record["id"], record["job"], record["workdir"] = ident, job, workdir
        record["source"] = source
        with logs.job_log(record):
            return _unpack(record, raw, name, size, local, log, cfg.get("maxCoreSize"))
    finally:
        raw.close()


def _unpack(record: dict, raw, name: str, size, local, log, max_size=None) -> dict:
    workdir = record["workdir"]
    shown = fetch.shown(record["source"]) if local is None else record["source"]
    log.info("unpacking %s for %s into %s", shown, record["id"], workdir)
    counter = _Counting(raw)
    with Progress(f"unpack {name}", size) as progress:
        out = Output(workdir, core_name(name, record["job"]), log,
                     tick=lambda: progress.update(counter.pos), max_size=max_size)
        try:
            peeler = None
            if local is not None and raw_local(raw):
                path, core_bytes = link_or_copy(raw, local, size, out, progress, log)
                kind = layers.dump_kind(os.pread(raw.fileno(), layers.HEAD, 0))
                peeled, member = [], None
            else:
                peeler = layers.Peeler(out, log, shown, local, raw.fileno() if local else None)
                cand = peeler.peel(counter, size)
                path, core_bytes, kind = cand.path, cand.size, cand.kind
                peeled, member = cand.layers, cand.member
                if peeler.vmlinux is not None:
                    record["customer_vmlinux"] = _keep_vmlinux(out, peeler.vmlinux, log)
            core = out.finish(path)
            if peeler is not None:
                kdumpdir.finish_extras(out, core, [p.path for p in peeler.parts],
                                       {k: c.path for k, c in peeler.side.items()}, record, log)
        except StepError as exc:
            out.cleanup()
            raise StepError(exc.message, exc.kind, partial=record) from None
        except OSError as exc:
            out.cleanup()
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            raise StepError(message, errors.kind_of_oserror(exc), partial=record) from None
        except KeyboardInterrupt as exc:
            out.cleanup()
            log.error("interrupted: removed the partial core")
            exc.partial = record  # records.run writes its error record before exiting
            raise
    record["core"] = core
    record["layers"] = peeled
    record["core_bytes"] = core_bytes
    used = os.stat(core).st_blocks * 512
    log.info("core %s: %s bytes (%s on disk), layers %s%s%s", core, f"{core_bytes:,}",
             f"{used:,}", "+".join(peeled) or "none",
             f", member {member!r}" if member else "",
             f", {kind} dump" if kind else ", no known dump magic")
    return record


def compress_process(record: dict, fmt: str, force: bool) -> dict:
    """``--compress``: compress ``record["source"]`` next to itself for transfer."""
    source = record.get("source")
    record.update(compress.compress_file(source, fmt, force))
    return record


def main(argv=None) -> int:
    """cas-unpack's command line (man cas-unpack)."""
    return records.main_wrapper(PROG, run_command, argv)


def _parser():
    parser = cli.argument_parser(
        PROG, "Turn an incoming dump (file or URL, compressed, archived) into a raw core.",
        "Reads records carrying 'source' on stdin when no FILE is given.\nSee cas-unpack(1).")
    cli.option(parser, "--identifier", dest="id", metavar="ID",
               help="identifier of the case (ticket number)")
    cli.add_alias(parser, "--id", "id")  # the spelling before 0.2
    cli.option(parser, "--job", help="job name (default: the identifier)")
    cli.option(parser, "--file", dest="file_opt", metavar="FILE",
               help="the dump: a file or an http/https/ftp URL (same as FILE)")
    parser.add_argument("file", nargs="?", metavar="FILE", help="the dump, file or URL")
    parser.add_argument("--compress", metavar="FILE",
                        help="compress FILE for transfer into FILE.xz (or .zst) and exit")
    parser.add_argument("--compress-format", choices=sorted(compress.FORMATS),
                        default="xz", help="format for --compress (default xz)")
    parser.add_argument("--force", action="store_true",
                        help="let --compress replace an existing output")
    return parser


def _step(record: dict, cfg, ident: str | None, job: str | None, from_stdin: bool) -> dict:
    """``process`` for one record, with -i/-j filling in what a record from stdin lacks."""
    if from_stdin and isinstance(record.get("source"), str) \
            and not fetch.is_url(record["source"]):
        pathsafety.check_source(record["source"])  # a record's file, not the user's
    if ident is not None and "id" not in record:
        record["id"] = ident
    if job and "job" not in record:
        record["job"] = job
    return process(record, cfg)


def run_command(argv) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.file and args.file_opt:
        raise records.UsageError(f"{PROG}: give the dump once, as FILE or with -f")
    source = args.file or args.file_opt
    if args.compress:
        if source:
            raise records.UsageError(f"{PROG}: --compress takes no other FILE")
        cli.load_config(args)
        return records.run(PROG, functools.partial(
            compress_process, fmt=args.compress_format, force=args.force),
            [{"source": args.compress}])
    if source and args.id is None:
        raise records.UsageError(f"{PROG}: -i ID is required with a FILE")
    if not source:
        cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    initial = [{"id": args.id, "job": args.job or args.id, "source": source}] if source else None
    return records.run(PROG, functools.partial(_step, cfg=cfg, ident=args.id, job=args.job,
                                               from_stdin=initial is None), initial)

