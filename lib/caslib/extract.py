"""cas-extract: take the vmlinux (and the module debug files) out of a debuginfo package.

Embedding: ``from caslib.extract import process``;
``process(record, cfg, modules=False) -> record``.

Reads ``workdir`` and ``debuginfo``: ``{rpm, vmlinux, modules_prefix, name,
version, release, arch, ...}`` where ``rpm`` is the package (.rpm, .deb or
.ddeb) and ``vmlinux`` the member path as ``rpm -qpl`` prints it.  Writes
``vmlinux`` (the absolute path ``<workdir>/usr/...`` mirroring the member
path) and, with ``modules=True``, ``modules`` (absolute paths of every
regular file under ``modules_prefix`` but the vmlinux).

One forward pass over the payload (modules sort before ``vmlinux``, so they
come in the same pass), every file checked against the package's digest
(RPM header FILEDIGESTS; a .deb's md5sums), through the shared cache in
``debugs`` (see extcache): a second job for the same kernel only links.
Nothing lands in the job directory until it is whole and verified.  The
pass itself is pkgmembers.take().
"""

import functools
import os
import posixpath
import shutil

from caslib import cli, logs, records
from caslib.shelf import extcache, fetchvmlinux
from caslib.packages import pkgmembers
from caslib.pathsafety import check_package_path
from caslib.records import StepError

PROG = "cas-extract"


def _unchanged(path: str, fh, st0) -> None:
    try:
        now = os.stat(path)
    except OSError:
        now = None
    fst = os.fstat(fh.fileno())
    same = (now is not None and (now.st_ino, now.st_size, now.st_mtime_ns)
            == (st0.st_ino, st0.st_size, st0.st_mtime_ns)
            and (fst.st_size, fst.st_mtime_ns) == (st0.st_size, st0.st_mtime_ns))
    if not same:
        raise StepError(f"{path}: the package changed on the shelf while it was read "
                        "(size, mtime or inode differ); nothing extracted", "changed")


def default_prefix(member: str) -> str | None:
    """The module directory of a kernel whose vmlinux is ``member``, by the usual layouts."""
    parts = member.split("/")
    if len(parts) >= 2 and parts[-1] == "vmlinux" and "modules" in parts:
        return posixpath.dirname(member) + "/"                          # Fedora, RHEL
    base = parts[-1]
    if base.startswith("vmlinux-") and "/boot/" in member:              # Debian, SUSE
        rel = base[len("vmlinux-"):]
        rel = rel[:-len(".debug")] if rel.endswith(".debug") else rel
        return member.split("/boot/")[0] + f"/lib/modules/{rel}/"
    return None


def _prefix(member: str, modules_prefix: str | None) -> str:
    """The module directory to take: the record's, else the one the vmlinux path implies."""
    if modules_prefix:
        return check_package_path(modules_prefix, "modules_prefix") + "/"
    prefix = default_prefix(member)
    if prefix is None:
        raise StepError(f"no modules_prefix for {member}, and none follows from its path",
                        "bad-record")
    logs.get().info("no modules_prefix given; using %s", prefix)
    return prefix


def _open(package: str):
    try:
        return open(package, "rb")
    except FileNotFoundError:
        raise StepError(f"{package}: no such package", "not-found") from None


def _cache(cfg):
    """The shared extraction cache, or None (with a warning) when it cannot be used."""
    try:
        return extcache.Cache(cfg.debugs, cfg.cacheLimit)
    except OSError as exc:
        logs.get().warning("cache %s unusable (%s); extracting straight into the job directory",
                           cfg.debugs, exc.strerror or exc)
        return None


def extract(package: str, member: str, workdir: str, cfg, modules_prefix: str | None = None,
            want_modules: bool = False) -> tuple:
    """Extract into ``workdir``; returns (vmlinux path, module paths or None)."""
    member = check_package_path(member, "member path")
    prefix = _prefix(member, modules_prefix) if want_modules else None
    if not os.path.isabs(workdir):
        raise StepError(f"workdir {workdir!r} is not an absolute path", "bad-record")
    if not os.path.isdir(workdir):
        raise StepError(f"{workdir}: job directory does not exist", "bad-record")
    with _open(package) as fh:
        st0 = os.fstat(fh.fileno())
        kind = pkgmembers.kind_of(fh, package)
        cache = _cache(cfg)
        if cache is None:
            return _extract_direct(package, fh, kind, st0, member, prefix, workdir)
        ident = extcache.identity(package, st0)
        keys = {"vmlinux": extcache.make_key(ident, "file", member)}
        if prefix is not None:
            keys["modules"] = extcache.make_key(ident, "modules", prefix + "\0" + member)
        with cache.locked(keys.values(), os.path.basename(member)):
            entries = {name: cache.lookup(key) for name, key in keys.items()}
            misses = [name for name, e in entries.items() if e is None]
            if misses:
                _fill(cache, (package, fh, kind, st0), member, prefix, keys, misses, entries,
                      ident)
            else:
                logs.get().info("%s: cache hit for %s", package, member)
            vm_paths = cache.link_into(keys["vmlinux"], entries["vmlinux"], workdir)
            mod_paths = (cache.link_into(keys["modules"], entries["modules"], workdir)
                         if prefix is not None else None)
        cache.evict(keep=set(keys.values()))
    return vm_paths[0], mod_paths


def _fill(cache, source: tuple, member: str, prefix: str | None, keys: dict, misses: list,
          entries: dict, ident: dict) -> None:
    """One pass over the package for the cache entries that are missing (``misses``)."""
    package, fh, kind, st0 = source
    logs.get().info("extracting %s from %s", ", ".join(
        member if n == "vmlinux" else f"modules under {prefix}" for n in misses), package)
    targets = {n: pkgmembers.Target(keys[n], cache.stage(keys[n]), n) for n in misses}
    try:
        pkgmembers.take(package, fh, kind, member, prefix, targets.get("vmlinux"),
                        targets.get("modules"))
        _unchanged(package, fh, st0)
        for n, t in targets.items():
            entry = dict(ident, kind=n, member=member, prefix=prefix, files=t.files,
                         bytes=t.bytes)
            cache.commit(t.key, t.stage, entry)
            entries[n] = entry
    finally:
        for t in targets.values():
            if os.path.exists(t.stage):
                cache.discard(t.stage)


def _extract_direct(package, fh, kind, st0, member, prefix, workdir) -> tuple:
    """Without a usable cache: stage inside the job directory, then move into place."""
    stage = os.path.join(workdir, f".cas-extract.{os.getpid()}")
    os.mkdir(stage)
    try:
        vm = pkgmembers.Target(None, stage, "vmlinux")
        mods = pkgmembers.Target(None, stage, "modules") if prefix is not None else None
        pkgmembers.take(package, fh, kind, member, prefix, vm, mods)
        _unchanged(package, fh, st0)
        out = []
        for t in (vm, mods):
            if t is None:
                continue
            paths = []
            for rel in t.files:
                dst = os.path.join(workdir, rel)
                extcache.place(os.path.join(stage, rel), dst, workdir)
                paths.append(dst)
            out.append(paths)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out[0][0], (out[1] if prefix is not None else None)


def process(record: dict, cfg, modules: bool = False) -> dict:
    info = record.get("debuginfo")
    if not isinstance(info, dict):
        raise StepError("record has no debuginfo (run cas-findkernel first)", "bad-record")
    if info.get("source") in fetchvmlinux.SOURCES:  # not a package: see fetchvmlinux
        workdir = record.get("workdir")
        if not isinstance(workdir, str) or not os.path.isabs(workdir) or not os.path.isdir(workdir):
            raise StepError(f"record's workdir {workdir!r} is not a job directory", "bad-record")
        record["vmlinux"] = fetchvmlinux.place(record, info, workdir, cfg)
        if modules:
            logs.get().warning("no module debug files with a %s vmlinux", info["source"])
            record["modules"] = []
        return record
    package, member = info.get("rpm"), info.get("vmlinux")
    if not package or not member:
        raise StepError("debuginfo lacks rpm or vmlinux", "bad-record")
    workdir = record.get("workdir")
    if not workdir:
        raise StepError("record has no workdir", "bad-record")
    vmlinux, mods = extract(package, member, workdir, cfg, info.get("modules_prefix"), modules)
    record["vmlinux"] = vmlinux
    if modules:
        record["modules"] = mods
    return record


def _tame_malloc() -> None:
    """Keep peak RSS flat with decoder threads: glibc otherwise keeps freed MiB-sized
    buffers in per-thread arenas (measured: 80 MiB peak on the real xz RPM, 20 without).

    M_MMAP_THRESHOLD (-3) fixed at 512 KiB sends the 1-3 MiB chunk buffers to
    mmap, returned on free; setting it also stops glibc's dynamic threshold
    growth (mallopt(3)).  Only the executable does this, never an embedding caller.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 512 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main(argv=None) -> int:
    """cas-extract's command line (man cas-extract)."""
    return records.main_wrapper(PROG, run_command, argv)


def run_command(argv) -> int:
    parser = cli.argument_parser(
        PROG, "Take the vmlinux (and the module debug files) out of a debuginfo package.")
    parser.add_argument("--rpm", metavar="FILE",
                        help="package to extract from (.rpm, .deb or .ddeb)")
    parser.add_argument("--member", metavar="PATH",
                        help="vmlinux path inside the package, as rpm -qpl prints it")
    parser.add_argument("--workdir", metavar="DIR", help="job directory to extract into")
    parser.add_argument("--modules-prefix", metavar="P",
                        help="directory of the kernel's module debug files in the package")
    parser.add_argument("-m", "--modules", action="store_true",
                        help="also extract the module debug files, in the same pass")
    args = parser.parse_args(argv)
    given = [args.rpm, args.member, args.workdir]
    if any(given) and not all(given):
        raise records.UsageError(f"{PROG}: --rpm, --member and --workdir go together")
    if not any(given):
        cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    _tame_malloc()
    initial = None
    if all(given):
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir, exist_ok=True)
        initial = [{"workdir": workdir,
                    "debuginfo": {"rpm": os.path.abspath(args.rpm), "vmlinux": args.member,
                                  "modules_prefix": args.modules_prefix}}]
    return records.run(PROG, functools.partial(process, cfg=cfg, modules=args.modules), initial)

