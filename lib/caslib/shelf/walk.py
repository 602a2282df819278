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
    """(rpm matcher, deb matcher) from the config; findregex.RegexError when a filter is bad."""
    regex_type = cfg.regexType
    rpm = seedvalues.rpm_matcher(cfg.get("rpmFilter"), regex_type)
    deb_pattern = cfg.get("debFilter")
    deb = findregex.matcher(deb_pattern, regex_type, "debFilter") if deb_pattern else (lambda p: False)
    return rpm, deb


def _excluded(name: str, path: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(path, g) for g in globs)


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
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.unreadable.append((directory, exc.strerror or str(exc)))
            continue
        subdirs = []
        for entry in entries:
            path = os.path.join(directory, entry.name)
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError:
                if entry.is_symlink():
                    continue  # a dangling link: find -L lists it, but it is no package
                result.vanished += 1
                continue
            if stat.S_ISDIR(info.st_mode):
                if _excluded(entry.name, path, exclude_dirs):
                    continue
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    result.loops.append(path)
                    continue
                subdirs.append((path, ancestors + (key,)))
                continue
            if not stat.S_ISREG(info.st_mode) or _excluded(entry.name, path, exclude_files):
                continue
            if rpm_match(path):
                kind = "rpm"
            elif deb_match(path):
                kind = "deb"
            else:
                continue
            found = Found(path, kind, info.st_size, info.st_mtime_ns)
            result.found.append(found)
            if on_found is not None:
                on_found(found)
        stack.extend(reversed(subdirs))
    return result
