"""Members out of a package in one forward pass, each checked against the package's digest.

The engine under cas-extract (see extract.py for the step and the cache):
``take(package, fh, kind, member, prefix, vm_target, mod_target)`` streams an
RPM (cpio payload: newc, or rpm's 07070X for packages with 4 GiB files) or a
Debian package (data.tar) once, writing the wanted members into ``Target``
staging directories.  Decoding runs in other threads (``decompress.Readahead``,
``xzblocks``) while this thread hashes and writes.  Member paths are
normalised by pathsafety's package-member rule, and ``..`` or a symlink that
climbs out of the package is refused (kind ``unsafe``); a file whose digest
differs from the package's is removed (kind ``digest``); a full disk is one
clear line (kind ``disk-full``).
"""

import contextlib
import errno
import hashlib
import os

from caslib import logs, magic
from caslib.errors import FormatError
from caslib.pathsafety import check_package_link, check_package_path, package_path
from caslib.records import StepError
from caslib.shelf import extcache

CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

class Target:
    """Where the files of one cache entry (or one job) are built before they go live."""

    def __init__(self, key: str | None, stage: str, kind: str):
        self.key, self.stage, self.kind = key, stage, kind
        self.files: list = []    # relative paths, in the order written
        self.bytes = 0

    def dest(self, rel: str) -> str:
        path = os.path.join(self.stage, rel)
        extcache.safe_makedirs(self.stage, os.path.dirname(path))
        return path


def write_verified(read, dest: str, algo: str | None, expected: str | None, label: str,
                   progress=None, where=None) -> tuple:
    """Stream ``read(n)`` into the new file ``dest``, hashing as it goes.

    Returns (bytes, hexdigest).  On a digest mismatch or any failure the
    file is removed.  ENOSPC (and EDQUOT, EFBIG) become one clear line.
    """
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    digest = hashlib.new(algo) if algo else None
    done = 0
    ok = False
    try:
        while True:
            data = read(CHUNK)
            if not data:
                break
            if digest is not None:
                digest.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            done += len(data)
            if progress is not None and where is not None:
                progress.update(where())
        got = digest.hexdigest() if digest is not None else ""
        if expected and got != expected.lower():
            raise StepError(f"{label}: {algo} digest mismatch: the package says {expected}, "
                            f"the payload gives {got}; file removed", "digest")
        ok = True
        return done, got
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise StepError(f"{dest}: no space left writing {label} ({exc.strerror}) after "
                            f"{done:,} bytes; partial file removed", "disk-full") from None
        raise
    finally:
        os.close(fd)
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(dest)


class Plan:
    """What one pass must take: package path -> [(target, relpath, expected digest)]."""

    def __init__(self):
        self.wanted: dict = {}

    def add(self, src: str, target: Target, rel: str, digest: str | None = None):
        self.wanted.setdefault(src, []).append((target, rel, digest))

    def take(self, src: str, read, algo: str | None, digest: str | None, label: str,
             progress=None, where=None) -> None:
        """Write the member ``src`` to every place that wants it."""
        places = self.wanted.pop(src)
        first = None
        for target, rel, expected in places:
            dest = target.dest(rel)
            if first is None:
                size, _ = write_verified(read, dest, algo, expected or digest, label,
                                         progress, where)
                first = dest
            else:
                extcache.place(first, dest, target.stage)
                size = os.path.getsize(dest)
            target.files.append(rel)
            target.bytes += size


# -- RPM ----------------------------------------------------------------------------------
def _rpm_plan(pkg, member: str, prefix: str | None, vm_target, mod_target) -> tuple:
    """Fill a Plan from the RPM header: returns (plan, module package paths)."""
    entry = pkg.by_path.get(member)
    if entry is None:
        raise StepError(f"{pkg.path}: no member {member} in the package", "not-found")
    seen = set()
    while entry.islnk():
        if entry.path in seen or len(seen) > 16:
            raise StepError(f"{pkg.path}: {member}: symlink loop", "corrupt")
        seen.add(entry.path)
        target = check_package_link(entry.path, entry.linkto)
        entry = pkg.by_path.get(target)
        if entry is None:
            raise StepError(f"{pkg.path}: {member} is a symlink to {target}, which is not in "
                            "the package", "not-found")
    if not entry.isreg():
        raise StepError(f"{pkg.path}: {member} is not a regular file", "not-found")
    carriers = {fx: pkg.files[c].path for fx, c in pkg.carriers().items()}
    plan = Plan()
    if vm_target is not None:
        plan.add(carriers[entry.fx], vm_target, member.lstrip("/"), entry.digest)
    modules = []
    if prefix is not None:
        for f in pkg.files:
            if f.isreg() and f.path.startswith(prefix) and f.path not in (member, entry.path):
                modules.append(f.path)
                if mod_target is not None:
                    plan.add(carriers[f.fx], mod_target, f.path.lstrip("/"), f.digest)
    return plan, modules


def _rpm_pass(path: str, fh, plan: Plan, progress) -> None:
    from caslib.packages import cpio, rpm
    pkg = plan.pkg
    stripped = None
    if pkg.large:
        sizes = pkg.payload_sizes()
        stripped = lambda fx: (pkg.files[fx].path, pkg.files[fx].mode, sizes[fx])  # noqa: E731
    source = rpm.open_payload(pkg, fh)
    where = lambda: pkg.data_offset + source.compressed_pos  # noqa: E731
    with _overlapped(source) as stream:
        for m in cpio.walk(stream, path, stripped):
            # a name that climbs out is None: never one we asked for
            name = package_path(m.name if m.fx is None else pkg.files[m.fx].path)
            if name in plan.wanted and m.isreg():
                entry = pkg.by_path.get(name)
                plan.take(name, m.read, pkg.digest_algo, entry.digest if entry else None,
                          f"{path}: {name}", progress, where)
                if not plan.wanted:
                    break  # modules sort before vmlinux: often done before the end
    if plan.wanted:
        missing = sorted(plan.wanted)[0]
        raise FormatError(f"{path}: the payload has no data for {missing}, which the header "
                          "lists")


@contextlib.contextmanager
def _overlapped(source):
    """Decoding overlapped with our writing: the source's own threads, else a Readahead."""
    from caslib.streams.decompress import Readahead
    stream = source if getattr(source, "threaded", False) else Readahead(source, depth=8)
    try:
        yield stream
    finally:
        stream.close()
        if stream is not source:
            source.close()


# -- Debian -------------------------------------------------------------------------------
class _DebPass:
    """One pass over a .deb's data.tar, taking what the plan wants.

    When the vmlinux is a link to a file the pass has already gone by, a second
    pass takes that file (``again``).
    """

    def __init__(self, path: str, fh, member: str, prefix: str | None, vm_target, mod_target):
        from caslib.packages import deb
        self.path, self.fh, self.member, self.prefix = path, fh, member, prefix
        self.deb = deb.Archive(path, fh)
        self.mod_target, self.wants_vm = mod_target, vm_target is not None
        self.plan = Plan()
        if vm_target is not None:
            self.plan.add(member, vm_target, member.lstrip("/"), self.deb.md5sums.get(member))
        self.modules, self.seen, self.again = [], set(), None

    def run(self) -> list:
        """Returns the module package paths seen."""
        from caslib.packages import deb
        from caslib.progress import Progress
        progress = Progress(f"extracting {os.path.basename(self.member)}", st_size(self.fh))
        with progress, _overlapped(self.deb.data_stream()) as stream:
            for info, fobj in deb.tar_entries(stream, self.path):
                name = package_path(info.name)
                if name is None:
                    continue  # never one we asked for
                self.seen.add(name)
                if name == self.member and self.wants_vm and not info.isreg():
                    self._vmlinux_link(info, name)
                    continue
                self._entry(info, fobj, name, progress)
                if not self.plan.wanted and self.prefix is None and self.again is None:
                    break
        self._finish()
        return self.modules

    def _vmlinux_link(self, info, name: str) -> None:
        if not (info.issym() or info.islnk()):
            raise StepError(f"{self.path}: {self.member} is not a regular file", "not-found")
        target = (check_package_link(name, info.linkname) if info.issym()
                  else check_package_path(info.linkname, "hard link target"))
        places = self.plan.wanted.pop(self.member)
        if target in self.seen:
            self.again = (target, places)
        else:
            for t, rel, _ in places:
                self.plan.add(target, t, rel, self.deb.md5sums.get(target))

    def _entry(self, info, fobj, name: str, progress) -> None:
        if (self.prefix is not None and info.isreg() and name.startswith(self.prefix)
                and name != self.member):
            self.modules.append(name)
            if self.mod_target is not None:
                self.plan.add(name, self.mod_target, name.lstrip("/"),
                              self.deb.md5sums.get(name))
        if name in self.plan.wanted and info.isreg():
            digest = self.deb.md5sums.get(name)
            if digest is None:
                logs.get().info("%s: %s: no md5sums entry, unverified", self.path, name)
            self.plan.take(name, fobj.read, "md5", digest, f"{self.path}: {name}", progress,
                           lambda: self.deb.raw_done)

    def _finish(self) -> None:
        if self.member not in self.seen and self.wants_vm:
            raise StepError(f"{self.path}: no member {self.member} in the package", "not-found")
        if self.again is not None:
            target, places = self.again
            self.fh.seek(0)
            for t, rel, _ in places:
                self.plan.add(target, t, rel, None)
            _deb_second(self.path, self.fh, target, self.plan)
        if self.plan.wanted:
            raise StepError(f"{self.path}: {sorted(self.plan.wanted)[0]} is a link to a file "
                            "that is not in the package", "not-found")


def _deb_second(path: str, fh, target: str, plan: Plan) -> None:
    from caslib.packages import deb
    archive = deb.Archive(path, fh)
    with _overlapped(archive.data_stream()) as stream:
        for info, fobj in deb.tar_entries(stream, path):
            if package_path(info.name) == target and info.isreg():
                plan.take(target, fobj.read, "md5", archive.md5sums.get(target),
                          f"{path}: {target}")
                return


def kind_of(fh, path: str) -> str:
    """``rpm`` or ``deb``, by the magic bytes of the open package."""
    head = fh.read(8)
    fh.seek(0)
    kind = magic.package(head)
    if kind is None:
        raise FormatError(f"{path}: neither an RPM nor a Debian package", "unsupported")
    return kind


def take(package, fh, kind, member, prefix, vm_target, mod_target) -> None:
    """Extract ``member`` (into ``vm_target``) and the files under ``prefix`` (into
    ``mod_target``) from the open package; either target may be None."""
    from caslib.packages import rpm
    from caslib.progress import Progress
    if kind == "rpm":
        pkg = rpm.open_package(package)
        plan, _ = _rpm_plan(pkg, member, prefix, vm_target, mod_target)
        plan.pkg = pkg
        with Progress(f"extracting {os.path.basename(member)}", st_size(fh)) as progress:
            _rpm_pass(package, fh, plan, progress)
    else:
        _DebPass(package, fh, member, prefix, vm_target, mod_target).run()


def st_size(fh) -> int:
    return os.fstat(fh.fileno()).st_size
