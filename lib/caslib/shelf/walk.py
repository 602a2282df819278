"""Walk the ``kernels`` shelf as ``find -L`` does and pick the debuginfo packages.

Why: sites point ``kernels`` at an NFS tree full of symlinks (one per
release, per product, ...), so links are followed, with loop detection by
(device, inode) as find does.  A directory or file whose name or whole path
matches a ``regexExcludeDir``/``regexExcludeFile`` glob is skipped.  A file
is a package when its whole path (as find prints it, starting with the
``kernels`` path) matches ``rpmFilter`` or ``debFilter`` under ``regexType``
(see findregex).  Unreadable directories are reported, not fatal: the
caller keeps what it knew under them instead of dropping it.
"""

import fnmatch
import os
import stat
from dataclasses import dataclass, field

from caslib.shelf import findregex
from caslib import seedvalues


@dataclass
class Found:
    path: str
    format: str  # "rpm" or "deb"
    size: int
    mtime_ns: int


@dataclass
class Walk:
    """What a walk saw: packages, and the directories it could not read."""

    found: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # (path, reason)
    loops: list = field(default_factory=list)
    vanished: int = 0  # files that disappeared or could not be stat'ed during the walk


def filters(cfg) -> tuple:
    """(rpm matcher, deb matcher) from the config; FormatError 'config' when a filter is bad."""
    regex_type = cfg.regexType
    rpm = seedvalues.rpm_matcher(cfg.get("rpmFilter"), regex_type)
    deb_pattern = cfg.get("debFilter")
    deb = findregex.matcher(deb_pattern, regex_type, "debFilter") if deb_pattern else (lambda p: False)
    return rpm, deb


def _excluded(name: str, path: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(path, g) for g in globs)


def _entries(directory: str, result: Walk) -> list:
    """The directory's entries by name; none (noted as unreadable) when it cannot be listed."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        result.unreadable.append((directory, exc.strerror or str(exc)))
        return []


def _stat(entry, result: Walk):
    """The entry's stat through symlinks; None for a dangling link or a vanished file."""
    try:
        return entry.stat(follow_symlinks=True)
    except OSError:
        if not entry.is_symlink():   # a dangling link: find -L lists it, but it is no package
            result.vanished += 1
        return None


def _descend(path: str, info, ancestors: tuple, result: Walk) -> list:
    """``[(path, ancestors)]`` to walk next, or none for a symlink loop (noted)."""
    key = (info.st_dev, info.st_ino)
    if key in ancestors:
        result.loops.append(path)
        return []
    return [(path, ancestors + (key,))]


def _package(name: str, path: str, info, rpm_match, deb_match, exclude_files):
    """A Found for a regular file the filters select as an RPM or a .deb, else None."""
    if not stat.S_ISREG(info.st_mode) or _excluded(name, path, exclude_files):
        return None
    kind = "rpm" if rpm_match(path) else "deb" if deb_match(path) else None
    return Found(path, kind, info.st_size, info.st_mtime_ns) if kind else None


def walk(root: str, rpm_match, deb_match, exclude_dirs=(), exclude_files=(),
         on_found=None) -> Walk:
    """Walk ``root`` following symlinks; call ``on_found(Found)`` as packages turn up.

    Paths keep the spelling under ``root`` (the symlinks' names, not their
    targets), as ``find -L`` prints them.
    """
    result = Walk()
    try:
        top = os.stat(root)
    except OSError as exc:
        result.unreadable.append((root, exc.strerror or str(exc)))
        return result
    stack = [(root, ((top.st_dev, top.st_ino),))]
    while stack:
        directory, ancestors = stack.pop()
        subdirs = []
        for entry in _entries(directory, result):
            path = os.path.join(directory, entry.name)
            info = _stat(entry, result)
            if info is None:
                continue
            if stat.S_ISDIR(info.st_mode):
                if not _excluded(entry.name, path, exclude_dirs):
                    subdirs += _descend(path, info, ancestors, result)
                continue
            found = _package(entry.name, path, info, rpm_match, deb_match, exclude_files)
            if found is not None:
                result.found.append(found)
                if on_found is not None:
                    on_found(found)
        stack.extend(reversed(subdirs))
    return result
