"""Records are input: every name and path a filter takes from one is checked here, once.

Why: a record on stdin may come from anyone who can write to the pipe (a
queue, a web form, a hand-typed line).  Before a step opens a log file or
touches a path, ``check_record`` makes sure that

- ``id`` and ``job`` are names as on the command line (``jobdir.check_name``),
- ``workdir`` is a job directory ``<workDirectory>/<job>/<stamp>``, resolved
  (a symlink cannot lead out),
- every file the record names lies where that kind of file lives: the core,
  vmlinux, module files, crash output and the saved mail inside the job
  directory; the debuginfo package on the shelf (``kernels``),
- every value has the type the contract gives it.

A violation is ``StepError(kind="bad-record")`` naming the key.  Records a
filter builds from its own command-line arguments are the user's order and
only get the type checks.  The same module holds the name rules for archive
members and the rule for which files' bytes an error message may show.
"""

import os
import posixpath
import stat

from caslib import jobdir
from caslib.errors import FormatError
from caslib.records import StepError

KIND = "bad-record"
_ROOTS: dict = {}  # "work", "shelf", "cache": set from the config by configure()
_AS_GIVEN: dict = {}  # the same, as the config spells them (the shelf may be a symlink)

# key -> (expected type, where the file must lie); dotted keys are inside a dict
PATH_KEYS = {
    "core": "job",
    "vmlinux": "job",
    "modules": "job",            # a list of paths
    "crash.output": "job",
    "crash.files": "job",        # a dict name -> path
    "mail.file": "job",
    "debuginfo.rpm": "shelf",
}
# The record paths each step opens: only those must lie in their place (a key a step
# passes on untouched is checked by the step that uses it).  ``workdir`` is always checked:
# the job's log file is opened there.  A step not listed (a replacement) checks them all.
USES = {
    "cas-unpack": (),
    "cas-ident": ("core",),
    "cas-findkernel": (),
    "cas-extract": ("debuginfo.rpm",),
    "cas-strip": ("core", "vmlinux"),
    "cas-crash": ("core", "vmlinux", "modules"),
    "cas-mail": ("crash.output", "crash.files", "mail.file"),
}
DICT_KEYS = ("kernel", "debuginfo", "crash", "mail", "strip", "ident", "error")


def configure(cfg) -> None:
    """Remember where jobs, the shelf and the cache live (``cli.load_config`` calls this)."""
    _ROOTS.clear()
    _AS_GIVEN.clear()
    for name, key in (("work", "workDirectory"), ("shelf", "kernels"), ("cache", "debugs")):
        value = cfg.get(key) if cfg is not None else None
        if isinstance(value, str) and value:
            _ROOTS[name] = os.path.realpath(value)
            _AS_GIVEN[name] = os.path.normpath(os.path.abspath(value))


def bad(key: str, why: str) -> StepError:
    return StepError(f"record key {key!r}: {why}", KIND)


within = jobdir.inside   # ``path`` resolved (symlinks followed) lies inside ``base`` resolved


def _text(key: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise bad(key, f"expected a non-empty string, got {_shown(value)}")
    if "\0" in value or "\n" in value or "\r" in value:
        raise bad(key, "contains a NUL, CR or LF character")
    return value


def _shown(value) -> str:
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, bool) or value is None:
        return repr(value).lower() if value is not None else "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_names(record: dict) -> None:
    """``id`` and ``job`` as on the command line: before any log file is named after them."""
    if "id" in record and record["id"] is not None:
        ident = record["id"]
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise bad("id", f"expected a string, got {_shown(ident)}")
        _name(str(ident), "id", "identifier")
    if "job" in record and record["job"] is not None:
        if not isinstance(record["job"], str):
            raise bad("job", f"expected a string, got {_shown(record['job'])}")
        _name(record["job"], "job", "job name")


def _name(value: str, key: str, what: str) -> None:
    if not jobdir.is_valid_name(value):
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise bad(key, f"bad {what} {shown!r}: use 1-64 characters of A-Z a-z 0-9 . _ -, "
                       "not starting with '.' or '-'")


def check_workdir(value, key: str = "workdir") -> str:
    """``value`` must be ``<workDirectory>/<job>/<stamp>``, an existing directory."""
    path = _text(key, value)
    if not os.path.isabs(path):
        raise bad(key, f"{path!r} is not an absolute path")
    work = _ROOTS.get("work")
    if work is None:
        raise bad(key, "no workDirectory is configured to check it against")
    real = os.path.realpath(path)
    rel = os.path.relpath(real, work)
    parts = rel.split(os.sep)
    if rel.startswith("..") or len(parts) != 2 or not jobdir.is_valid_name(parts[0]) \
            or jobdir.parse_stamp(parts[1]) is None:
        raise bad(key, f"{path} is not a job directory under {work} (<job>/<YYYY.MM.DD.HH.MM.SS>)")
    if not os.path.isdir(real) or os.path.islink(path):
        raise bad(key, f"{path}: no such job directory")
    return path


def _get(record: dict, dotted: str):
    """(present, value) of a dotted key whose parents are dicts (types checked already)."""
    node = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _inside(key: str, path, place: str, workdir: str | None) -> None:
    path = _text(key, path)
    if not os.path.isabs(path):
        raise bad(key, f"{path!r} is not an absolute path")
    if place == "job":
        if workdir is None:
            raise bad(key, "names a file but the record has no workdir")
        base = workdir
    else:
        base = _ROOTS.get(place)
        if base is None:
            raise bad(key, f"no {'kernels' if place == 'shelf' else place} directory configured")
    if place == "shelf":  # the admin's shelf may hold symlinks; cas-admin indexed them
        given = _AS_GIVEN.get(place, base)
        inside = os.path.normpath(path).startswith(given.rstrip(os.sep) + os.sep) \
            or within(base, path)
    else:
        inside = within(base, path)
    if not inside:
        where = {"job": "the job directory", "shelf": "the shelf (kernels)",
                 "cache": "the extraction cache (debugs)"}[place]
        raise bad(key, f"{path} is outside {where} {base}")


def check_types(record: dict) -> None:
    """Values of the contract's keys have the contract's types."""
    for key in DICT_KEYS:
        if key in record and record[key] is not None and not isinstance(record[key], dict):
            raise bad(key, f"expected an object, got {_shown(record[key])}")
    for key in ("source", "workdir", "core", "vmlinux"):
        if key in record and record[key] is not None:
            _text(key, record[key])
    if record.get("email") is not None and not isinstance(record["email"], str):
        raise bad("email", f"expected a string, got {_shown(record['email'])}")
    for dotted in ("debuginfo.rpm", "debuginfo.vmlinux", "debuginfo.modules_prefix",
                   "crash.output", "mail.file", "kernel.release", "kernel.machine",
                   "kernel.build_id"):
        present, value = _get(record, dotted)
        if present and value is not None and not isinstance(value, str):
            raise bad(dotted, f"expected a string, got {_shown(value)}")
    present, mods = _get(record, "modules")
    if present and mods is not None and not (
            isinstance(mods, list) and all(isinstance(m, str) for m in mods)):
        raise bad("modules", f"expected a list of paths, got {_shown(mods)}")
    present, files = _get(record, "crash.files")
    if present and files is not None and not (
            isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
        raise bad("crash.files", f"expected an object of paths, got {_shown(files)}")


def check_record(record: dict, trusted: bool = False, step: str | None = None) -> None:
    """All checks of the module docstring; ``trusted`` records (from argv) get types only;
    ``step`` limits the path checks to the keys that step opens (``USES``)."""
    check_types(record)
    if trusted:  # the command line's own checks say "usage"
        return
    check_names(record)
    workdir = record.get("workdir")
    if workdir is not None:
        check_workdir(workdir)
        job = record.get("job")
        parent = os.path.basename(os.path.dirname(os.path.realpath(workdir)))
        if isinstance(job, str) and job != parent:
            raise bad("workdir", f"{workdir} is not a directory of job {job!r}")
    uses = USES.get(step, tuple(PATH_KEYS))
    for dotted, place in PATH_KEYS.items():
        if dotted not in uses:
            continue
        present, value = _get(record, dotted)
        if not present or value is None:
            continue
        if isinstance(value, list):
            for item in value:
                _inside(dotted, item, place, workdir)
        elif isinstance(value, dict):
            for name, item in value.items():
                _inside(f"{dotted}.{name}", item, place, workdir)
        elif dotted == "debuginfo.rpm" and record["debuginfo"].get("override") == "package":
            _readable_anyway(dotted, value)  # cas --package: the user's own package
        else:
            _inside(dotted, value, place, workdir)


def _readable_anyway(key: str, path) -> None:
    """A package forced with ``--package`` lies wherever the user keeps it: take it only when
    everyone may read it or it is the (non-root) effective user's own regular file."""
    path = _text(key, path)
    if not os.path.isabs(path):
        raise bad(key, f"{path!r} is not an absolute path")
    try:
        st = os.stat(path)
    except OSError:
        return  # opening it reports it, with the usual words
    euid = os.geteuid()
    if not stat.S_ISREG(st.st_mode):
        raise bad(key, f"{path}: not a regular file")
    if not (st.st_mode & stat.S_IROTH or (st.st_uid == euid and euid != 0)):
        raise bad(key, f"{path}: a forced package must be readable by everyone or the "
                       "user's own file")


def check_source(source: str) -> None:
    """A local dump named by a record (not the command line): readable by anyone anyway,
    or the effective user's own file (and then not root's), and a regular file."""
    try:
        st = os.stat(source)
    except OSError:
        return  # open() reports it, with the usual words
    if not stat.S_ISREG(st.st_mode):
        raise bad("source", f"{source}: not a regular file")
    euid = os.geteuid()
    if st.st_mode & stat.S_IROTH or (st.st_uid == euid and euid != 0):
        return
    raise bad("source", f"{source}: not readable by everyone and not this user's own file; "
                        "give it on the command line to take it")


def may_show_bytes(path: str, workdir: str | None = None) -> bool:
    """May an error message quote bytes of ``path``?  Only of files the caller owns or the
    job's own files: CAS may run with more privilege than whoever asked."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if workdir and within(workdir, path):
        return True
    return st.st_uid == os.getuid() or bool(st.st_mode & stat.S_IROTH)


def link_allowed(path: str) -> bool:
    """Hard-link a user's file into a job only when it is the effective user's own."""
    try:
        return os.stat(path).st_uid == os.geteuid()
    except OSError:
        return False


# -- archive member names (tar, zip, cpio, packages) ------------------------

def member_escapes(name: str, windows: bool = True) -> str | None:
    """Why an archive member name would write outside a directory, else None.
    ``windows``: also take ``\\`` as a separator and ``C:`` as absolute (zip)."""
    clean = name.replace("\\", "/") if windows else name
    if clean.startswith("/") or (windows and len(clean) > 1 and clean[1] == ":"):
        return "absolute path"
    if ".." in clean.split("/"):
        return "'..' leads out"
    return None


def link_escapes(name: str, target: str) -> bool:
    """True when a symlink ``name -> target`` inside an archive points outside it."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved == ".." or resolved.startswith("../")


def _unsafe(where: str, what: str, name: str, why: str) -> FormatError:
    return FormatError(f"{where}: unsafe {what} member {name!r}: {why}", "unsafe")


def check_tar_member(m, where: str) -> None:
    """Refuse a ``tarfile.TarInfo`` that would write outside a directory if someone
    extracted it: an escaping name or link, a device or fifo, an unknown type."""
    name = m.name
    why = member_escapes(name, windows=False)
    if why:
        raise _unsafe(where, "tar", name, why)
    if m.issym() and link_escapes(name, m.linkname):
        raise _unsafe(where, "tar", name, f"symlink to {m.linkname!r} points outside")
    if m.islnk() and member_escapes(m.linkname, windows=False):
        raise _unsafe(where, "tar", name, f"hard link to {m.linkname!r} points outside")
    if m.ischr() or m.isblk() or m.isfifo():
        raise _unsafe(where, "tar", name, "device or fifo")
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise FormatError(f"{where}: unsupported tar member {name!r} (type {m.type!r})",
                          "unsafe")


def check_zip_member(name: str, mode: int, target: str | None, where: str) -> None:
    """Refuse a zip member (``mode`` from its external attributes, ``target`` the text of
    a symlink member) that would write outside a directory, or a device or fifo."""
    why = member_escapes(name)
    if why:
        raise _unsafe(where, "zip", name, why)
    if target is not None and link_escapes(name, target):
        raise _unsafe(where, "zip", name, f"symlink to {target!r} points outside")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        raise _unsafe(where, "zip", name, "device or fifo")


# -- names CAS writes in a job directory ---------------------------------------

# Every fixed name a step writes (crash.py, the package snippets, mail.py, the
# extracted tree's top directories) and the patterns of its temporary files.
JOB_NAMES = {"crash", "crash.in", "crash.out", "crash.failed.out", "mail.eml", "traceback",
             "sys", "log", "modules", "memory", "usr", "boot", "lib", "lib64", "opt",
             "vmlinux", "dmesg", "failure.eml", "vmcore-dmesg.txt", "log-tail", "report.html"}
_JOB_PREFIXES = ("crash.", "mail.", ".")
_JOB_SUFFIXES = (".log", ".part", ".tmp", ".eml")


def cas_writes(name: str, job: str | None = None) -> bool:
    """True when CAS itself writes (or might write) a file called ``name`` in a job."""
    if name in JOB_NAMES or name == f"{job}.log" or name.startswith(_JOB_PREFIXES):
        return True
    if name.endswith(_JOB_SUFFIXES) or ".tmp." in name:
        return True
    stem, dot, tail = name.rpartition(".")
    return bool(dot) and tail.startswith("part") and tail[4:].isdigit()


# ---- package members (r13pkg) ----
# Names inside a debuginfo package (RPM header and cpio payload, a .deb's md5sums and
# data.tar) are package paths, ``/usr/lib/debug/...``, as ``rpm -qpl`` prints them.  The
# index lists them, cas-extract writes them under the job or the cache: the one rule is
# that no name and no symlink may climb above the package's root.

def package_path(name) -> str | None:
    """A member name (``./usr/x``, ``usr/x``, ``/usr//x``) as ``/usr/x`` (``/`` for the root);
    None when it holds ``..`` or a NUL: it would climb out of the package."""
    if not isinstance(name, str) or "\0" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/" + "/".join(parts)


def package_link(path: str, target: str) -> str | None:
    """Where the package symlink ``path -> target`` points, as a package path; None when
    the target climbs above the root, even half-way (``/a/../../a``)."""
    joined = target if target.startswith("/") else posixpath.dirname(path) + "/" + target
    out: list = []
    for part in joined.split("/"):
        if part == "..":
            if not out:
                return None
            out.pop()
        elif part not in ("", "."):
            out.append(part)
    return "/" + "/".join(out)


def check_package_path(name, what: str) -> str:
    """``package_path`` of a name CAS was asked for: ``bad-record`` when it names nothing,
    ``unsafe`` when it climbs out."""
    if not isinstance(name, str) or not name.strip("./"):
        raise StepError(f"bad {what} {name!r}", "bad-record")
    clean = package_path(name)
    if clean is None:
        raise StepError(f"{what} {name!r} climbs out of its directory: refused", "unsafe")
    return clean


def check_package_link(path: str, target: str) -> str:
    """``package_link``, refusing (``unsafe``) a symlink that points outside the package."""
    out = package_link(path, target)
    if out is None:
        raise StepError(f"symlink {path} -> {target} points outside the package: refused",
                        "unsafe")
    return out
