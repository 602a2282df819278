"""Members out of a package in one forward pass, each checked against the package's digest.

The engine under cas-extract (see extract.py for the step and the cache):
``take(package, fh, kind, member, prefix, vm_target, mod_target)`` streams an
RPM (cpio payload: newc, or rpm's 07070X for packages with 4 GiB files) or a
Debian package (data.tar) once, writing the wanted members into ``Target``
staging directories.  Decoding runs in other threads (``decompress.Readahead``,
``xzblocks``) while this thread hashes and writes.  Member paths are
normalised and ``..`` or a symlink that climbs out of the package is refused
(kind ``unsafe``); a file whose digest differs from the package's is removed
(kind ``digest``); a full disk is one clear line (kind ``no-space``).
"""

import contextlib
import errno
import hashlib
import os
import posixpath

from caslib.shelf import extcache
from caslib import logs
from caslib.records import StepError

CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

def normalize(path: str, what: str) -> str:
    """``/usr/...`` for a member path given as ``./usr/...``, ``usr/...`` or ``/usr/...``.

    ``..`` anywhere is refused (kind ``unsafe``): nothing may climb out.
    """
    if not isinstance(path, str) or not path.strip("./"):
        raise StepError(f"bad {what} {path!r}", "bad-record")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in path:
        raise StepError(f"{what} {path!r} climbs out of its directory: refused", "unsafe")
    return "/" + "/".join(parts)


def resolve_link(path: str, target: str) -> str:
    """Where the package symlink ``path`` -> ``target`` points, as a package path."""
    joined = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
    out = posixpath.normpath(joined)
    if out.startswith("//"):
        out = out[1:]
    parts = [p for p in posixpath.join("/", joined).split("/") if p]
    depth = 0
    for p in parts:  # ``..`` above / in the middle of a path is an escape too
        depth = depth - 1 if p == ".." else depth + (p != ".")
        if depth < 0:
            raise StepError(f"symlink {path} -> {target} points outside the package: refused",
                            "unsafe")
    return out


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
                            f"{done:,} bytes; partial file removed", "no-space") from None
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
        target = resolve_link(entry.path, entry.linkto)
        entry = pkg.by_path.get(target)
        if entry is None:
            raise StepError(f"{pkg.path}: {member} is a symlink to {target}, which is not in "
                            "the package", "not-found")
    if not entry.isreg():
        raise StepError(f"{pkg.path}: {member} is not a regular file", "not-found")
    carriers = _carriers(pkg)
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


def _carriers(pkg) -> dict:
    """fx -> package path of the entry that carries the data (the last hard link)."""
    last = {}
    for f in pkg.files:
        if f.isreg():
            last[(f.device, f.inode)] = f.path
    return {f.fx: last[(f.device, f.inode)] for f in pkg.files if f.isreg()}


def _rpm_pass(path: str, fh, plan: Plan, progress) -> None:
    from caslib.packages import cpio, rpmpayload
    pkg = plan.pkg
    stripped = None
    if pkg.large:
        sizes = pkg.payload_sizes()
        stripped = lambda fx: (pkg.files[fx].path, pkg.files[fx].mode, sizes[fx])  # noqa: E731
    source = rpmpayload.open_payload(pkg, fh)
    where = lambda: pkg.data_offset + source.compressed_pos  # noqa: E731
    with _overlapped(source) as stream:
        for m in cpio.walk(stream, path, stripped):
            name = m.name if m.fx is None else pkg.files[m.fx].path
            try:
                name = normalize(name, "archive member")
            except StepError:
                continue  # never one we asked for
            if name in plan.wanted and m.isreg():
                entry = pkg.by_path.get(name)
                plan.take(name, m.read, pkg.digest_algo, entry.digest if entry else None,
                          f"{path}: {name}", progress, where)
                if not plan.wanted:
                    break  # modules sort before vmlinux: often done before the end
    if plan.wanted:
        missing = sorted(plan.wanted)[0]
        raise StepError(f"{path}: the payload has no data for {missing}, which the header "
                        "lists", "corrupt")


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
def _deb_pass(path: str, fh, member: str, prefix: str | None, vm_target, mod_target) -> list:
    """One pass over data.tar; returns the module package paths seen."""
    from caslib.packages import debpkg
    from caslib.progress import Progress
    deb = debpkg.Package(path, fh)
    log = logs.get()
    progress = Progress(f"extracting {os.path.basename(member)}", os.fstat(fh.fileno()).st_size)
    plan = Plan()
    if vm_target is not None:
        plan.add(member, vm_target, member.lstrip("/"), deb.md5sums.get(member))
    modules, unverified, seen = [], 0, {}
    again = None  # vmlinux is a link to something already passed: second pass
    with progress, _overlapped(deb.data_stream()) as stream:
        for info, fobj in debpkg.tar_entries(stream, path):
            try:
                name = normalize(info.name, "archive member")
            except StepError:
                continue
            seen[name] = True
            if name == member and vm_target is not None and not info.isreg():
                if info.issym() or info.islnk():
                    link = info.linkname
                    target = (resolve_link(name, link) if info.issym()
                              else normalize(link, "hard link target"))
                    places = plan.wanted.pop(member)
                    if target in seen:
                        again = (target, places)
                    else:
                        for t, rel, _ in places:
                            plan.add(target, t, rel, deb.md5sums.get(target))
                    continue
                raise StepError(f"{path}: {member} is not a regular file", "not-found")
            is_module = (prefix is not None and info.isreg() and name.startswith(prefix)
                         and name != member)
            if is_module:
                modules.append(name)
                if mod_target is not None:
                    plan.add(name, mod_target, name.lstrip("/"), deb.md5sums.get(name))
            if name in plan.wanted and info.isreg():
                digest = deb.md5sums.get(name)
                if digest is None:
                    unverified += 1
                    log.info("%s: %s: no md5sums entry, unverified", path, name)
                plan.take(name, fobj.read, "md5", digest, f"{path}: {name}", progress,
                          lambda: deb.raw_done)
            if not plan.wanted and prefix is None and again is None:
                break
    if member not in seen and vm_target is not None:
        raise StepError(f"{path}: no member {member} in the package", "not-found")
    if again is not None:
        target, places = again
        fh.seek(0)
        for t, rel, _ in places:
            plan.add(target, t, rel, None)
        _deb_second(path, fh, target, plan)
    if plan.wanted:
        raise StepError(f"{path}: {sorted(plan.wanted)[0]} is a link to a file that is not "
                        "in the package", "not-found")
    return modules


def _deb_second(path: str, fh, target: str, plan: Plan) -> None:
    from caslib.packages import debpkg
    deb = debpkg.Package(path, fh)
    with _overlapped(deb.data_stream()) as stream:
        for info, fobj in debpkg.tar_entries(stream, path):
            try:
                name = normalize(info.name, "archive member")
            except StepError:
                continue
            if name == target and info.isreg():
                plan.take(name, fobj.read, "md5", deb.md5sums.get(name), f"{path}: {name}")
                return


def kind_of(fh, path: str) -> str:
    head = fh.read(8)
    fh.seek(0)
    if head[:4] == b"\xed\xab\xee\xdb":
        return "rpm"
    if head == b"!<arch>\n":
        return "deb"
    raise StepError(f"{path}: neither an RPM nor a Debian package", "unsupported")


def take(package, fh, kind, member, prefix, vm_target, mod_target) -> None:
    """Extract ``member`` (into ``vm_target``) and the files under ``prefix`` (into
    ``mod_target``) from the open package; either target may be None."""
    from caslib.packages import rpmpayload
    from caslib.progress import Progress
    if kind == "rpm":
        pkg = rpmpayload.open_package(package)
        plan, _ = _rpm_plan(pkg, member, prefix, vm_target, mod_target)
        plan.pkg = pkg
        with Progress(f"extracting {os.path.basename(member)}", st_size(fh)) as progress:
            _rpm_pass(package, fh, plan, progress)
    else:
        _deb_pass(package, fh, member, prefix, vm_target, mod_target)


def st_size(fh) -> int:
    return os.fstat(fh.fileno()).st_size
