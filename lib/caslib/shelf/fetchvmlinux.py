"""cas-extract for a vmlinux that is not in a package: from debuginfod, given, or the customer's.

Why: cas-findkernel may answer with ``debuginfo.source`` ``debuginfod``
(a URL), ``vmlinux`` (``cas --vmlinux FILE``) or ``archive`` (the customer's
vmlinux, already in the job directory).  A debuginfod download goes through
the extraction cache like a package member (keyed by build-id, built under
``.tmp``, renamed in whole, locked against a parallel download of the same
kernel), so the second job for that kernel only links; its build-id note
must be the dump's.  A given vmlinux is linked (or copied) into the job.
"""

import os

from caslib.shelf import debuginfod, extcache, othersources
from caslib import atomicfile, jobdir, logs
from caslib.records import StepError

SOURCES = ("debuginfod", "vmlinux", "archive")


def _from_debuginfod(record: dict, info: dict, workdir: str, cfg) -> str:
    log = logs.get()
    build_id = debuginfod.check_build_id(info.get("build_id"))
    dump_id = (record.get("kernel") or {}).get("build_id")
    if dump_id and str(dump_id).lower() != build_id:
        raise StepError(f"debuginfo build-id {build_id} is not the dump's {dump_id}",
                        "bad-record")
    url = debuginfod.check_url(info.get("url"), cfg, build_id)
    member = debuginfod.member_path(build_id)
    rel = member.lstrip("/")
    key = extcache.make_key({"package": "debuginfod", "size": 0, "mtime_ns": 0}, "build-id",
                            build_id)
    try:
        cache = extcache.Cache(cfg.debugs, cfg.cacheLimit)
    except OSError as exc:
        log.warning("cache %s unusable (%s); downloading straight into the job directory",
                    cfg.debugs, exc.strerror or exc)
        dest = os.path.join(workdir, rel)
        extcache.safe_makedirs(workdir, os.path.dirname(dest))
        with atomicfile.renaming(dest) as part:
            debuginfod.download(url, part, build_id)
        return dest
    with cache.locked([key], f"build-id {build_id}"):
        entry = cache.lookup(key)
        if entry is None:
            log.info("downloading %s from %s", build_id, url)
            stage = cache.stage(key)
            try:
                dest = os.path.join(stage, rel)
                extcache.safe_makedirs(stage, os.path.dirname(dest))
                size = debuginfod.download(url, dest, build_id)
                entry = {"package": url, "kind": "vmlinux", "member": member, "prefix": None,
                         "files": [rel], "bytes": size, "build_id": build_id}
                cache.commit(key, stage, entry)
            finally:
                if os.path.exists(stage):
                    cache.discard(stage)
        else:
            log.info("build-id %s: cache hit (from %s)", build_id, entry.get("package"))
        path = cache.link_into(key, entry, workdir)[0]
    cache.evict(keep={key})
    return path


def place(record: dict, info: dict, workdir: str, cfg) -> str:
    """The vmlinux for ``info`` in the job directory; its absolute path."""
    source = info.get("source")
    if source == "debuginfod":
        return _from_debuginfod(record, info, workdir, cfg)
    if source == "archive":
        path = info.get("file")
        if not isinstance(path, str) or not jobdir.inside(workdir, path):
            raise StepError(f"debuginfo file {path!r} is not inside the job directory",
                            "bad-record")
        return othersources.elf_file(path, "vmlinux")[0]
    real, build_id = othersources.elf_file(info.get("file"), "vmlinux")
    member = debuginfod.member_path(build_id) if build_id else "/usr/lib/debug/vmlinux"
    dest = os.path.join(workdir, member.lstrip("/"))
    extcache.place(real, dest, workdir)
    return dest
