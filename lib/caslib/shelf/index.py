"""The kernels index: which kernel images a package holds, and keeping the database in step.

Why: a dump names a release (and often a build-id); the index maps both to
the package and member path that hold the matching vmlinux.  The release a
vmlinux belongs to is read from its member path, never from the package
name (RHEL 4's kernel-debuginfo holds every flavour; SUSE's and Debian's
names differ from the release).  Build-ids come from ``.build-id`` links
whose target is a kernel image (RPM headers list link targets) or, for
Debian packages, from the image's ELF notes.

Incremental: a package whose (path, size, mtime) is unchanged is not
reopened; packages that vanished from the shelf are dropped, except under a
directory that could not be read this time.
"""

import os
import re
import time
from dataclasses import dataclass

from caslib import logs
from caslib.packages import kernelrelease, read
from caslib.pathsafety import package_link
from caslib.shelf import walk
from caslib.progress import Progress
from caslib.records import StepError

log = logs.get()

_DEBUG = "/usr/lib/debug"
# kernel debug images inside a debuginfo package (doc/formats.md section 8)
_IMAGE_MODULES = re.compile(r"/usr/lib/debug/lib/modules/(?P<rel>[^/]+)/vmlinux")
_IMAGE_BOOT = re.compile(r"/usr/lib/debug/boot/vmlinux-(?P<rel>[^/]+?)(?:\.debug)?")
# targets of .build-id links that are kernel images (debug or main)
_IMAGE_TARGET = re.compile(r"(?:/usr/lib/debug)?(?:/lib/modules/(?P<a>[^/]+)/vmlinu[xz]"
                           r"|/boot/vmlinu[xz]-(?P<b>[^/]+?))(?:\.debug)?")
_BUILD_ID_LINK = re.compile(r"/usr/lib/debug/\.build-id/(?P<hi>[0-9a-f]{2})/(?P<lo>[0-9a-f]{6,})"
                            r"(?:\.debug)?")
_MODULE = re.compile(r".*\.ko(?:\.(?:xz|gz|zst))?(?:\.debug)?")
COMMIT_EVERY = 2.0  # seconds between commits, so readers and other writers get a turn


def _images(pkg: read.Package) -> dict:
    """release -> [(rank, member path)] of the kernel images; a link counts as its target."""
    by_path = {m.path: m for m in pkg.members}
    images: dict[str, list] = {}
    for m in pkg.members:
        match = _IMAGE_MODULES.fullmatch(m.path) or _IMAGE_BOOT.fullmatch(m.path)
        if not match or m.kind == "dir":
            continue
        path = m.path
        if m.kind == "link":
            target = by_path.get(package_link(m.path, m.linkto or ""))
            if target is None or target.kind != "file":
                continue  # points outside the package: nothing to extract
            path = target.path
        rank = (m.kind != "file", not m.path.startswith(_DEBUG + "/lib/modules/"), path)
        images.setdefault(match["rel"], []).append((rank, path))
    return images


def _link_build_ids(pkg: read.Package) -> dict:
    """release -> build-id, from the ``.build-id`` links whose target is a kernel image."""
    build_ids: dict[str, str] = {}
    for m in pkg.members:
        link = _BUILD_ID_LINK.fullmatch(m.path)
        if not link or m.kind != "link":
            continue
        target = _IMAGE_TARGET.fullmatch(package_link(m.path, m.linkto or "") or "")
        if target:
            build_ids.setdefault(target["a"] or target["b"], link["hi"] + link["lo"])
    return build_ids


def kernels_in(pkg: read.Package) -> list[dict]:
    """The kernel images in a package, one dict per release, sorted by release."""
    images = _images(pkg)
    build_ids = _link_build_ids(pkg)
    machine_of_package = kernelrelease.uname_machine(pkg.arch)
    out = []
    for rel in sorted(images):
        vmlinux = min(images[rel])[1]
        prefix = f"{_DEBUG}/lib/modules/{rel}/"
        modules = sum(1 for m in pkg.members if m.kind == "file" and m.path.startswith(prefix)
                      and _MODULE.fullmatch(m.path))
        parsed = kernelrelease.parse(rel)
        build_id = pkg.build_ids.get(vmlinux) or build_ids.get(rel)
        out.append({
            "release": rel, "base": parsed.base, "flavour": parsed.flavour,
            "machine": parsed.machine or machine_of_package, "vmlinux": vmlinux,
            "modules_prefix": prefix if modules else None, "modules": modules,
            "build_id": build_id,
        })
    return out


@dataclass
class Summary:
    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0  # readable packages without a kernel image
    errors: int = 0
    dropped: int = 0
    kernels: int = 0

    def line(self) -> str:
        return (f"{self.seen:,} packages seen, {self.indexed:,} indexed, {self.unchanged:,} unchanged, "
                f"{self.skipped:,} skipped (no kernel image), {self.errors:,} errors, "
                f"{self.dropped:,} dropped; {self.kernels:,} kernels in the index")


def _store(conn, found: walk.Found, pkg: read.Package | None, error: str | None,
           kernels: list) -> None:
    conn.execute("DELETE FROM packages WHERE path = ?", (found.path,))
    cur = conn.execute(
        "INSERT INTO packages(path, size, mtime_ns, format, name, epoch, version, release, arch,"
        " payload, files, error, indexed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (found.path, found.size, found.mtime_ns, found.format,
         pkg.name if pkg else None, pkg.epoch if pkg else None, pkg.version if pkg else None,
         pkg.release if pkg else None, pkg.arch if pkg else None, pkg.payload if pkg else None,
         pkg.file_count if pkg else None, error, time.time()))
    conn.executemany(
        "INSERT INTO kernels(package, release, base, flavour, machine, vmlinux, modules_prefix,"
        " modules, build_id) VALUES (?,?,?,?,?,?,?,?,?)",
        [(cur.lastrowid, k["release"], k["base"], k["flavour"], k["machine"], k["vmlinux"],
          k["modules_prefix"], k["modules"], k["build_id"]) for k in kernels])


def _under(path: str, directories) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in directories)


class _Indexer:
    """The work of one ``update``: read each package found unless unchanged, commit often."""

    def __init__(self, conn, known: dict, progress: Progress):
        self.conn, self.known, self.progress = conn, known, progress
        self.summary = Summary()
        self.last_commit = time.monotonic()

    def on_found(self, found: walk.Found) -> None:
        self.summary.seen += 1
        old = self.known.get(found.path)
        if old and old[0] == found.size and old[1] == found.mtime_ns:
            self.summary.unchanged += 1
            if old[2]:
                self.summary.errors += 1
                log.warning("%s (unchanged since the last run)", old[2])
        else:
            self._index(found)
        self.progress.update(self.summary.seen)
        if time.monotonic() - self.last_commit > COMMIT_EVERY:
            self.conn.commit()
            self.conn.execute("BEGIN IMMEDIATE")
            self.last_commit = time.monotonic()

    def _index(self, found: walk.Found) -> None:
        try:
            pkg = read.read_package(found.path)
        except StepError as exc:  # errors.FormatError, the decompressors' errors
            self._failed(found, exc.message)
        except OSError as exc:
            self._failed(found, f"{found.path}: {exc.strerror or exc}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a reader bug must not stop the whole shelf
            log.debug("reading %s", found.path, exc_info=True)
            self._failed(found, f"{found.path}: cannot read package: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())}")
        else:
            for warning in pkg.warnings:
                log.warning("%s", warning)
            kernels = kernels_in(pkg)
            if kernels:
                log.debug("%s: %s", found.path, ", ".join(k["release"] for k in kernels))
            else:
                self.summary.skipped += 1
            _store(self.conn, found, pkg, None, kernels)
            self.summary.indexed += 1

    def _failed(self, found: walk.Found, message: str) -> None:
        self.summary.errors += 1
        log.warning("skipping %s", message)
        _store(self.conn, found, None, message, [])

    def drop_gone(self, scan) -> None:
        """Forget packages no longer on the shelf, except under unreadable directories."""
        seen = {f.path for f in scan.found}
        unreadable = [u[0] for u in scan.unreadable]
        gone = [p for p in self.known if p not in seen and not _under(p, unreadable)]
        for path in gone:
            self.conn.execute("DELETE FROM packages WHERE path = ?", (path,))
            log.info("dropped %s (no longer on the shelf)", path)
        self.summary.dropped = len(gone)


def update(cfg, conn, progress: Progress | None = None) -> Summary:
    """Bring the index in step with the shelf at ``cfg.kernels``; return the counts.

    Raises sqlite3 errors when the database fails, findregex.RegexError for a
    bad filter, StepError when the shelf is missing.
    """
    root = cfg.kernels
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise StepError(f"kernels directory {root} {what} (set kernels in {cfg.source})",
                        "not-found")
    rpm_match, deb_match = walk.filters(cfg)
    known = {row[0]: (row[1], row[2], row[3]) for row in
             conn.execute("SELECT path, size, mtime_ns, error FROM packages")}
    work = _Indexer(conn, known, progress or Progress("indexing", unit="packages"))
    conn.execute("BEGIN IMMEDIATE")
    try:
        scan = walk.walk(root, rpm_match, deb_match, cfg.get("regexExcludeDir") or (),
                         cfg.get("regexExcludeFile") or (), work.on_found)
        for path, reason in scan.unreadable:
            log.warning("cannot read directory %s: %s; keeping what was indexed under it",
                        path, reason)
        for path in scan.loops:
            log.warning("%s: symbolic link loop, not followed", path)
        work.drop_gone(scan)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        work.progress.close()
    work.summary.kernels = conn.execute("SELECT count(*) FROM kernels").fetchone()[0]
    return work.summary
