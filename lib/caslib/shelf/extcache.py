"""The shared extraction cache (the ``debugs`` directory of the config).

The same kernel crashes again and again; its vmlinux is extracted once and
every later job links it.  An entry is keyed by the package's identity
(real path, size, mtime in ns) and what was taken from it (one member, or
the module debug files under a prefix).  Layout::

    <debugs>/<key>/entry.json        what the entry holds (written last)
    <debugs>/<key>/usr/...           the files, mirroring the package paths
    <debugs>/.locks/<xx>             flock files, 256 buckets by key, never removed
    <debugs>/.tmp/                   staging and eviction, renamed in and out

An entry is built under ``.tmp`` and renamed into place in one step, so a
reader sees a whole entry or none.  Concurrent extractions of one key take
the same flock: the first extracts, the others wait and then find the
entry.  Lock files are never deleted (deleting a lock file someone waits on
lets two holders in).  Jobs get a hard link, else a reflink (FICLONE), else
a copy.  Use touches the entry; eviction drops least recently used entries
until the total is under ``cacheLimit`` bytes, skipping entries in use.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time

from caslib import atomicfile, logs
from caslib.records import StepError

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
STALE_STAGE = 6 * 3600  # seconds: no extraction takes this long, a killed one leaves this


def identity(path: str, st: os.stat_result) -> dict:
    return {"package": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def make_key(ident: dict, kind: str, what: str) -> str:
    text = "\0".join([ident["package"], str(ident["size"]), str(ident["mtime_ns"]), kind, what])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Cache:
    def __init__(self, root: str, limit: int):
        self.root = os.path.abspath(root)
        self.limit = limit
        self.log = logs.get()
        for sub in (".locks", ".tmp"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    # -- locking -----------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, keys, what: str = "this kernel"):
        """Hold the locks of ``keys`` (sorted buckets, so two holders never deadlock)."""
        fds = []
        try:
            for bucket in sorted({k[:2] for k in keys}):
                fd = os.open(os.path.join(self.root, ".locks", bucket),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.log.info("waiting for another extraction of %s to finish", what)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
                os.close(fd)  # closing drops the flock

    # -- entries -----------------------------------------------------------------------
    def entry_dir(self, key: str) -> str:
        return os.path.join(self.root, key)

    def lookup(self, key: str) -> dict | None:
        """The entry's description if the entry is whole and its files are there."""
        path = os.path.join(self.entry_dir(key), "entry.json")
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.log.warning("%s: unreadable cache entry, rebuilding it (%s)", path, exc)
            self.remove(key)
            return None
        for rel in entry.get("files", []):
            if not os.path.isfile(os.path.join(self.entry_dir(key), rel)):
                self.log.warning("%s: cache entry lost %s, rebuilding it", self.entry_dir(key), rel)
                self.remove(key)
                return None
        self.touch(key)
        return entry

    def touch(self, key: str) -> None:
        now = time.time()
        for path in (os.path.join(self.entry_dir(key), "entry.json"), self.entry_dir(key)):
            with contextlib.suppress(OSError):
                os.utime(path, (now, now))

    def stage(self, key: str) -> str:
        """A fresh private directory to build an entry in (call with the key's lock held:
        any other staging directory of this key is then a killed run's, and goes)."""
        tmp = os.path.join(self.root, ".tmp")
        with os.scandir(tmp) as it:
            for d in it:
                if d.name.startswith(f"{key}.") and d.is_dir(follow_symlinks=False):
                    self.log.info("cache: removing %s, left by a killed extraction", d.path)
                    shutil.rmtree(d.path, ignore_errors=True)
        path = os.path.join(tmp, f"{key}.{os.getpid()}.{time.monotonic_ns()}")
        os.mkdir(path, 0o755)
        return path

    def commit(self, key: str, stage: str, entry: dict) -> None:
        """Describe the staged files and rename the whole entry into place."""
        for rel in entry["files"]:
            os.chmod(os.path.join(stage, rel), 0o444)  # jobs share these inodes
        with open(os.path.join(stage, "entry.json"), "w", encoding="utf-8") as fh:
            json.dump(entry, fh, indent=1)
        target = self.entry_dir(key)
        if os.path.exists(target):  # a stale or damaged one we hold the lock for
            self.remove(key)
        os.rename(stage, target)

    def remove(self, key: str) -> None:
        target = self.entry_dir(key)
        trash = os.path.join(self.root, ".tmp", f"evict.{key}.{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def discard(self, stage: str) -> None:
        shutil.rmtree(stage, ignore_errors=True)

    # -- handing files to a job --------------------------------------------------------
    def link_into(self, key: str, entry: dict, workdir: str) -> list:
        """Place the entry's files under ``workdir``; return their absolute paths."""
        out = []
        for rel in entry["files"]:
            src = os.path.join(self.entry_dir(key), rel)
            dst = os.path.join(workdir, rel)
            place(src, dst, workdir)
            out.append(dst)
        return out

    # -- eviction ----------------------------------------------------------------------
    def entries(self) -> list:
        """(mtime, bytes, key) of every whole entry."""
        out = []
        with os.scandir(self.root) as it:
            for d in it:
                if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                    continue
                meta = os.path.join(d.path, "entry.json")
                try:
                    mtime = os.stat(meta).st_mtime
                    with open(meta, encoding="utf-8") as fh:
                        size = int(json.load(fh).get("bytes", 0))
                except (OSError, ValueError):
                    continue
                out.append((mtime, size, d.name))
        return sorted(out)

    def staging_bytes(self) -> int:
        """Bytes on disk under ``.tmp`` (staging and eviction in progress)."""
        total = 0
        for top, _dirs, files in os.walk(os.path.join(self.root, ".tmp")):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, name)).st_blocks * 512
        return total

    def sweep(self, older_than: float = STALE_STAGE) -> None:
        """Remove staging directories left by a killed extraction (SIGKILL, power loss)."""
        tmp = os.path.join(self.root, ".tmp")
        now = time.time()
        with os.scandir(tmp) as it:
            for d in it:
                with contextlib.suppress(OSError):
                    if now - d.stat(follow_symlinks=False).st_mtime > older_than:
                        self.log.info("cache: removing stale %s", d.path)
                        shutil.rmtree(d.path, ignore_errors=True)

    def evict(self, keep=()) -> int:
        """Drop least recently used entries until the total fits ``limit``; bytes freed."""
        self.sweep()
        entries = self.entries()
        # staging space counts too: a killed extraction's leftovers fill the same disk
        total = sum(size for _, size, _ in entries) + self.staging_bytes()
        freed = 0
        for _, size, key in entries:
            if total <= self.limit:
                break
            if key in keep:
                continue
            fd = os.open(os.path.join(self.root, ".locks", key[:2]),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # someone is extracting or linking in this bucket
                self.remove(key)
            finally:
                os.close(fd)
            total -= size
            freed += size
            self.log.info("cache: evicted %s (%s bytes, least recently used)", key, f"{size:,}")
        if total > self.limit:
            self.log.warning("cache %s holds %s bytes, over cacheLimit %s, with entries in use",
                             self.root, f"{total:,}", f"{self.limit:,}")
        return freed


def place(src: str, dst: str, base: str) -> str:
    """Put ``src`` at ``dst`` (inside ``base``): hard link, else reflink, else copy.

    Written under a temporary name and renamed, so ``dst`` is never half there.
    Returns the method used.
    """
    parent = os.path.dirname(dst)
    safe_makedirs(base, parent)
    method = "hardlink"
    with atomicfile.renaming(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES,
                                 errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            method = _clone_or_copy(src, tmp)
    logs.get().debug("%s -> %s (%s)", src, dst, method)
    return method


def safe_makedirs(base: str, path: str) -> None:
    """Create ``path`` below ``base`` one level at a time, refusing symlinks on the way.

    ``os.makedirs`` would follow a symlinked ``usr`` in a job directory and
    create (and then write) outside it; this refuses instead (kind ``unsafe``).
    """
    rel = os.path.relpath(path, base)
    if rel == os.curdir:
        return
    if rel.startswith(os.pardir) or os.path.isabs(rel):
        raise StepError(f"{path}: refusing to write outside {base}", "unsafe")
    cur = base
    for part in rel.split(os.sep):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            try:
                os.mkdir(cur, 0o755)
            except FileExistsError:  # a concurrent mkdir: check what it made
                st = os.lstat(cur)
            else:
                continue
        if not stat.S_ISDIR(st.st_mode):
            raise StepError(f"{cur} is a symlink or not a directory: refusing to write "
                            f"through it (outside {base}?)", "unsafe")


def _clone_or_copy(src: str, dst: str) -> str:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            return "reflink"
        except OSError:
            pass
        shutil.copyfileobj(fin, fout, 1 << 20)
    return "copy"
