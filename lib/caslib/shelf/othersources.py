"""Debuginfo from elsewhere than the shelf: a forced vmlinux or package, the customer's
vmlinux, debuginfod.

Why: identification can be wrong, the customer may have sent the vmlinux,
and a support queue's kernels are often on nobody's shelf.  cas-findkernel
calls these; each returns the ``debuginfo`` value cas-extract understands:

- ``--vmlinux FILE``: ``{source: "vmlinux", file, build_id, match: "forced",
  override: "vmlinux"}``; the file is checked like any input path (a
  readable regular ELF file), and crash's own version check still guards it;
- ``--package PKG``: the shelf's usual keys for the kernel image in PKG
  (``match: "package"``, ``override: "package"``);
- the customer's archive held a ``vmlinux`` (``customer_vmlinux``, kept by
  cas-unpack) whose build-id is the dump's: ``{source: "archive", file,
  member, build_id, match: "build_id", override: "vmlinux"}``;
- debuginfod: ``{source: "debuginfod", url, server, size, build_id,
  vmlinux, match: "build_id"}`` (see debuginfod.py).
"""

import os
import stat

from caslib.shelf import debuginfod, index
from caslib.dumps import elfnote
from caslib import jobdir, logs, magic
from caslib.packages import read
from caslib.records import StepError

log = logs.get()


def elf_file(path, what: str) -> tuple[str, str | None]:
    """(real path, build-id) of a readable regular ELF file; StepError naming it otherwise."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise StepError(f"bad {what} path {path!r}", "bad-record")
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise StepError(f"{path}: no such {what}", "not-found") from None
    except OSError as exc:
        raise StepError(f"{path}: cannot read {what}: {exc.strerror}", "unreadable") from None
    with fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StepError(f"{path}: {what} is not a regular file", "bad-vmlinux")
        if fh.read(4) != magic.ELF:
            raise StepError(f"{path}: {what} is not an ELF file", "bad-vmlinux")
        fh.seek(0)
        build_id = elfnote.build_id(fh)
    return os.path.realpath(path), build_id


def forced_vmlinux(path: str, kernel: dict) -> dict:
    real, build_id = elf_file(path, "vmlinux")
    dump_id = (kernel or {}).get("build_id")
    if dump_id and build_id and dump_id.lower() != build_id:
        log.warning("forced vmlinux %s has build-id %s, the dump %s: crash decides", real,
                    build_id, dump_id)
    return {"source": "vmlinux", "file": real, "build_id": build_id, "match": "forced",
            "override": "vmlinux"}


def forced_package(path: str, kernel: dict) -> dict:
    """The kernel image in the package ``path``: the dump's build-id, else its release, else
    the only one."""
    if not os.path.isfile(path):
        raise StepError(f"{path}: no such package", "not-found")
    try:
        pkg = read.read_package(path)
    except OSError as exc:
        raise StepError(f"{path}: cannot read package: {exc.strerror}", "unreadable") from None
    images = index.kernels_in(pkg)
    if not images:
        raise StepError(f"{path}: the package holds no kernel debug image", "not-found")
    kernel = kernel or {}
    chosen = ([i for i in images if kernel.get("build_id") and i["build_id"] == kernel["build_id"]]
              or [i for i in images if kernel.get("release") and i["release"] == kernel["release"]]
              or (images if len(images) == 1 else []))
    if not chosen:
        raise StepError(f"{path}: holds {', '.join(i['release'] for i in images)}; none is the "
                        "dump's kernel", "not-found")
    image = chosen[0]
    return {"rpm": os.path.realpath(path), "name": pkg.name, "epoch": pkg.epoch,
            "version": pkg.version, "release": pkg.release, "arch": pkg.arch,
            "payload": pkg.payload, "format": pkg.format, "vmlinux": image["vmlinux"],
            "modules_prefix": image["modules_prefix"], "match": "package", "override": "package"}


def customer_vmlinux(record: dict, kernel: dict) -> dict | None:
    """The vmlinux cas-unpack kept from the customer's archive, if its build-id is the dump's."""
    kept = record.get("customer_vmlinux")
    dump_id = (kernel or {}).get("build_id")
    if kept is None or not dump_id:
        return None
    workdir = record.get("workdir")
    path = kept.get("file") if isinstance(kept, dict) else None
    if not isinstance(workdir, str) or not isinstance(path, str) or not jobdir.inside(workdir, path):
        raise StepError(f"customer_vmlinux {path!r} is not inside the job directory",
                        "bad-record")
    real, build_id = elf_file(path, "vmlinux")
    if build_id != dump_id.lower():
        log.info("the archive's %s has build-id %s, the dump %s: not used", kept.get("member"),
                 build_id, dump_id)
        return None
    return {"source": "archive", "file": real, "member": kept.get("member"),
            "build_id": build_id, "match": "build_id", "override": "vmlinux"}


def beyond_shelf(record: dict, kernel: dict, cfg, missed: StepError) -> dict:
    """The customer's vmlinux, else debuginfod; else ``missed`` with what each server said."""
    found = customer_vmlinux(record, kernel)
    if found:
        log.info("using the customer's %s (build-id %s)", found["member"], found["build_id"])
        return found
    raw = (kernel or {}).get("build_id")
    if not raw or not debuginfod.servers(cfg):
        raise missed
    build_id = debuginfod.check_build_id(raw)
    hit, said = debuginfod.locate(cfg, build_id)
    if hit is None:
        raise StepError(f"{missed.message}; debuginfod: " + "; ".join(said), missed.kind)
    return {"source": "debuginfod", "url": hit["url"], "server": hit["server"],
            "size": hit["size"], "build_id": build_id,
            "vmlinux": debuginfod.member_path(build_id), "match": "build_id"}
