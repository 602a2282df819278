"""cas-findkernel: find the debuginfo package that holds the vmlinux of a dump's kernel.

Reads ``kernel`` ({release, machine, build_id, ...}, written by cas-ident)
and adds ``debuginfo`` (man/cas-records.7):
  {rpm, name, epoch, version, release, arch, payload, format, vmlinux,
   modules_prefix, match}
``rpm`` is the package's absolute path (also for .deb/.ddeb); ``release``
is the package's release (NEVRA), the kernel release stays in ``kernel``.

Match order, from the index cas-admin builds (no package is opened here):
  1. build_id: the dump's build-id equals an indexed image's (exact);
  2. release+machine: the exact release string, on the same machine
     (i386..i686 count as one);
  3. release: the exact release with the machine unknown, inferred from the
     release string when it says one (``.x86_64``, ``-amd64``, ``aarch64+64k``).
An image whose indexed build-id differs from the dump's is never chosen.
Several packages with the same kernel: the build-id match first, then
rpm before deb, then the payload quickest to extract (zstd, gzip, lzma, xz,
bzip2), then path order; the others are logged.  No match is an
error record that names the nearest indexed releases.

  from caslib.findkernel import process
  process({"kernel": {"release": "6.1.0-18-amd64", "machine": "x86_64"}}, cfg)
"""

import os
import sqlite3
import stat

from caslib import cli, db, logs, records
from caslib.packages import kernelrelease
from caslib.shelf import othersources
from caslib.records import StepError

PROG = "cas-findkernel"
log = logs.get()

_SELECT = ("SELECT p.path, p.name, p.epoch, p.version, p.release, p.arch, p.payload, p.format,"
           " k.vmlinux, k.modules_prefix, k.release, k.machine, k.build_id"
           " FROM kernels k JOIN packages p ON p.id = k.package")
# among equals: RPM before deb, then the payload that extracts fastest (doc/formats.md section 9), then path
_ORDER = (" ORDER BY p.format = 'deb', CASE p.payload WHEN 'zstd' THEN 0 WHEN 'gzip' THEN 1"
          " WHEN 'lzma' THEN 2 WHEN 'xz' THEN 3 WHEN 'bzip2' THEN 4 ELSE 5 END, p.path, k.vmlinux")


BUSY_WAIT = 3.0  # seconds a reader waits for a writer's lock before saying so


class Index:
    """The kernels index, opened once per run, read only.

    A reader never writes (no journal-mode switch, no migration) and waits
    only BUSY_WAIT seconds for a writer that holds the database exclusively
    (``cas-admin`` indexing, ``locking_mode=EXCLUSIVE``): then a ``busy``
    error record says who to wait for, instead of a silent 30 s stall.
    """

    def __init__(self, path: str, timeout: float = BUSY_WAIT):
        if not os.path.exists(path):
            raise StepError(f"no kernel index at {path}: run cas-admin to index the shelf",
                            "not-found")
        self.path, self.timeout = path, timeout
        try:
            self.conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True,
                                        timeout=timeout)
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        except sqlite3.Error as exc:
            raise self._friendly(exc) from None

    def _friendly(self, exc: Exception) -> StepError:
        err = db.friendly(exc, self.path, self.timeout)
        if err.kind == "busy":
            return StepError(f"{self.path}: the kernel index is locked by a writer (cas-admin "
                             f"indexing?); gave up after {self.timeout:g} s, try again when it "
                             "is done", "busy")
        return err

    def query(self, where: str, args: tuple) -> list[tuple]:
        try:
            return self.conn.execute(f"{_SELECT} WHERE {where}{_ORDER}", args).fetchall()
        except sqlite3.Error as exc:
            raise self._friendly(exc) from None

    def known_releases(self) -> list[tuple[str, str | None]]:
        try:
            return self.conn.execute("SELECT DISTINCT release, machine FROM kernels").fetchall()
        except sqlite3.Error as exc:
            raise self._friendly(exc) from None

    def near_releases(self, release: str, window: int = 50) -> list[tuple[str, str | None]]:
        """Indexed (release, machine) pairs that could be nearest to ``release``.

        Not every release of a big shelf: its neighbours in text order, the
        same base release, and the same flavour within the same major.minor
        version; all by index range scans, so a miss costs milliseconds.
        """
        parsed = kernelrelease.parse(release)
        q = "SELECT DISTINCT release, machine FROM kernels WHERE "
        rows = set(self._rows(q + "release < ? ORDER BY release DESC LIMIT ?",
                              (release, window)))
        rows.update(self._rows(q + "release > ? ORDER BY release LIMIT ?", (release, window)))
        rows.update(self._rows(q + "base = ? LIMIT ?", (parsed.base, window)))
        major_minor = ".".join(release.split(".")[:2]) + "."
        rows.update(self._rows(
            q + "release >= ? AND release < ? AND flavour = ? LIMIT ?",
            (major_minor, major_minor + "\uffff", parsed.flavour, 5 * window)))
        return sorted(rows, key=lambda r: (r[0], r[1] or ""))

    def package_count(self) -> int:
        return self._rows("SELECT count(DISTINCT package) FROM kernels", ())[0][0]

    def _rows(self, sql: str, args: tuple) -> list:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._friendly(exc) from None


def _debuginfo(row: tuple, match: str) -> dict:
    path, name, epoch, version, release, arch, payload, fmt, vmlinux, prefix = row[:10]
    return {"rpm": path, "name": name, "epoch": epoch, "version": version, "release": release,
            "arch": arch, "payload": payload, "format": fmt, "vmlinux": vmlinux,
            "modules_prefix": prefix, "match": match}


def _same_machine(row_machine, want) -> bool:
    return kernelrelease.machine_class(row_machine) == kernelrelease.machine_class(want)


def choose(index: Index, kernel: dict) -> dict:
    """The ``debuginfo`` value for ``kernel``; StepError(not-found) with the nearest releases."""
    release = (kernel.get("release") or "").strip() or None
    machine = (kernel.get("machine") or "").strip() or None
    build_id = (kernel.get("build_id") or "").strip().lower() or None
    if not release and not build_id:
        raise StepError("record's kernel has neither release nor build_id", "bad-record")
    chosen, match, others = None, None, []
    if build_id:
        rows = index.query("k.build_id = ?", (build_id,))
        if rows:
            # a release that agrees and the same machine come first
            rows.sort(key=lambda r: (release is not None and r[10] != release,
                                     machine is not None and not _same_machine(r[11], machine)))
            chosen, match, others = rows[0], "build_id", rows[1:]
    if chosen is None and release:
        rows = [r for r in index.query("k.release = ?", (release,))
                if not (build_id and r[12] and r[12] != build_id)]
        if machine:
            same = [r for r in rows if r[11] is None or _same_machine(r[11], machine)]
            if same:
                chosen, match, others = same[0], "release+machine", same[1:]
        else:
            inferred = kernelrelease.parse(release).machine
            pool = [r for r in rows if inferred is None or r[11] is None
                    or _same_machine(r[11], inferred)]
            if pool:
                chosen, match, others = pool[0], "release", pool[1:]
                if inferred is None and len({kernelrelease.machine_class(r[11]) for r in pool}) > 1:
                    log.warning("%s is indexed for several machines (%s); the dump does not say "
                                "which, took %s", release,
                                ", ".join(sorted({r[11] or "?" for r in pool})), chosen[11])
    if chosen is None:
        text, near = _no_match(index, release, machine, build_id)
        raise MissingKernel(text, {"release": release, "machine": machine,
                                   "build_id": build_id, "nearest": near})
    for row in others:
        log.info("also holds %s: %s (%s)", release or build_id, row[0], row[8])
    return _debuginfo(chosen, match)


class MissingKernel(StepError):
    """No debuginfo matches; ``missing`` is what the record's ``missing`` key says."""

    def __init__(self, message: str, missing: dict):
        super().__init__(message, "not-found")
        self.missing = missing


def _no_match(index: Index, release, machine, build_id) -> tuple[str, list]:
    what = release or f"build-id {build_id}"
    if machine:
        what += f" ({machine})"
    count = index.package_count()
    text = f"no debuginfo for {what} among {count:,} indexed packages"
    if release:
        clash = [r for r in index.query("k.release = ?", (release,))]
        if clash and build_id and all(r[12] and r[12] != build_id for r in clash):
            text += f"; {release} is indexed but with another build-id ({clash[0][12]}): " \
                    "a different build of the same release"
        elif clash and machine:
            text += f"; {release} is indexed for " + ", ".join(
                sorted({r[11] or "?" for r in clash}))
        near = kernelrelease.nearest(release, machine, index.near_releases(release))
        if near:
            text += "; nearest: " + ", ".join(near)
    return text, list(near) if release and near else []


def process(record: dict, cfg, index: Index | None = None, force=None) -> dict:
    """Add ``debuginfo`` to a record carrying ``kernel``; StepError when none matches.

    ``force`` (the command line's overrides, see main) replaces the piped
    record's release, or names the vmlinux or package to use.
    """
    force = force or {}
    kernel = record.get("kernel")
    if force.get("vmlinux") or force.get("package"):
        kernel = kernel if isinstance(kernel, dict) else {}
        record["debuginfo"] = (othersources.forced_vmlinux(force["vmlinux"], kernel)
                               if force.get("vmlinux") else
                               othersources.forced_package(force["package"], kernel))
        log.info("forced %s: %s", record["debuginfo"]["override"],
                 force.get("vmlinux") or force.get("package"))
        return record
    if not isinstance(kernel, dict):
        if not force.get("release"):
            raise StepError("record has no kernel (run cas-ident first, or use --release)",
                            "bad-record")
        kernel = {}
    lookup = kernel
    if force.get("release"):  # a piped record: the given release wins, the dump's build-id waits
        identified = kernel.get("release")
        record["kernel"] = kernel = dict(kernel, release=force["release"])
        lookup = {"release": force["release"], "machine": force.get("machine") or
                  kernel.get("machine"), "build_id": force.get("build_id")}
    try:
        if index is None:
            index = Index(cfg.database)
        record["debuginfo"] = choose(index, lookup)
    except StepError as exc:
        if exc.kind != "not-found":
            raise
        try:
            record["debuginfo"] = othersources.beyond_shelf(record, kernel, cfg, exc)
        except StepError as final:
            if isinstance(exc, MissingKernel):
                # the error record says what was missing, for cas-mail's log-only report
                raise StepError(final.message, final.kind,
                                dict(record, missing=exc.missing)) from None
            raise
    info = record["debuginfo"]
    if force.get("release"):
        info.update(override="release", identified=identified)
    log.info("%s: %s in %s (by %s)", kernel.get("release") or kernel.get("build_id"),
             info.get("vmlinux") or info.get("file"),
             info.get("rpm") or info.get("url") or info.get("source"), info["match"])
    return record


def _stdin_has_records() -> bool:
    """stdin is a pipe, a socket or a non-empty file: records come from there."""
    try:
        st = os.fstat(0)
    except OSError:
        return False
    return stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) or (
        stat.S_ISREG(st.st_mode) and st.st_size > 0)


class _LazyIndex:
    """``process`` with the shelf's index opened at the first record that needs it (never
    with --vmlinux/--package; a missing database is no error: other sources may answer)."""

    def __init__(self, cfg, force: dict, use_index: bool):
        self.cfg, self.force, self.use_index, self.index = cfg, force, use_index, None

    def __call__(self, record: dict) -> dict:
        if self.index is None and self.use_index:
            try:
                self.index = Index(self.cfg.database)
            except StepError as exc:
                if exc.kind != "not-found":
                    raise
        return process(record, self.cfg, self.index, self.force)


def main(argv=None) -> int:
    """cas-findkernel's command line (man cas-findkernel)."""
    return records.main_wrapper(PROG, run_command, argv)


def _parser():
    parser = cli.argument_parser(
        PROG, "Find the debuginfo package that holds the vmlinux of a dump's kernel.")
    cli.option(parser, "--release", metavar="R",
               help="kernel release (uname -r) to look up instead of reading records")
    cli.option(parser, "--machine", metavar="M", help="machine (uname -m), with --release")
    cli.option(parser, "--build-id", metavar="B", help="GNU build-id (hex), with --release")
    parser.add_argument("--vmlinux", metavar="FILE",
                        help="use this vmlinux (checked by crash's version check)")
    parser.add_argument("--package", metavar="PKG",
                        help="take the vmlinux from this debuginfo package (.rpm, .deb)")
    return parser


def run_command(argv) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.machine or args.build_id) and not (args.release or args.build_id):
        raise records.UsageError(f"{PROG}: --machine needs --release or --build-id")
    if args.vmlinux and args.package:
        raise records.UsageError(f"{PROG}: give --vmlinux or --package, not both")
    cfg = cli.load_config(args)
    force = {"vmlinux": args.vmlinux and os.path.abspath(args.vmlinux),
             "package": args.package and os.path.abspath(args.package)}
    initial = None
    if _stdin_has_records():  # in a pipe: the options override each record
        if args.build_id and not args.release:
            raise records.UsageError(f"{PROG}: in a pipe, --build-id goes with --release")
        if args.release:
            force.update(release=args.release, machine=args.machine, build_id=args.build_id)
    elif args.release or args.build_id:
        initial = [{"kernel": {"release": args.release, "machine": args.machine,
                               "build_id": args.build_id}}]
    elif args.vmlinux or args.package:
        initial = [{}]
    else:
        cli.refuse_terminal(parser)
    step = _LazyIndex(cfg, force, not (args.vmlinux or args.package))
    return records.run(PROG, step, initial)

