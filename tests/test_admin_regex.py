"""rpmFilter semantics: our translation against GNU find itself, side by side.

For every regexType find supports, each pattern is run through
``find ROOT -regextype T -regex P`` and through caslib.shelf.findregex over the
same listing; the selected paths must be the same.
"""

import os
import subprocess

import pytest

from caslib.errors import FormatError
from caslib.shelf import findregex

NAMES = ["kernel-debuginfo-3.10.0-1160.el7.x86_64.rpm", "kernel-debuginfo-common-x86_64-1.rpm",
         "kernel-debug-debuginfo-5.14.0-362.el9.x86_64.rpm", "kernel-2.6.9-78.EL.i686.rpm",
         "aa", "a+", "a{2}", "a(b)", "ab", "abb", "x|y", "x", "y", "a?", "a", "a.b", "a^b", "a$b",
         "A1", "a]b", "a-b", "a\\b", "ab*", "*ab", "abab", "kernel.rpm", "{x}"]
DIRS = ["sub", "el7", "deep/er"]

COMMON = [r".*\.rpm", r".*kernel.*debuginfo.*\.rpm", r".*/a.", r".*/a*", r".*/[ab]*",
          r".*/[^ab]*", r".*/a[]]b", r".*/a[a-c]", r".*/A[0-9]", r".*/a[.]b", r".*/a\.b",
          r".*/[[:alpha:]]*", r".*/[[:upper:]][[:digit:]]", r".*/a[-]b", r".*/a[\]b",
          r".*el7/.*", r".*/a^b", r".*/a$b", r".*/*ab", r".*/kernel.*",
          r".*kernel-debug(info)?-.*\.rpm"]
SPECIFIC = {
    "posix-basic": [r".*/a\{2\}", r".*/a{2}", r".*/ab\+", r".*/ab+", r".*/a\?", r".*/a?",
                    r".*/x\|y", r".*/x|y", r".*/a\(b\)", r".*/a(b)", r".*/\(ab\)\1",
                    r".*/a\{1,\}b*", r".*/\w\w", r".*/ab\{0,1\}", r".*kernel-debug\(info\)\{0,1\}-.*"],
    "posix-extended": [r".*/a{2}", r".*/a\{2\}", r".*/ab+", r".*/ab\+", r".*/a?", r".*/(x|y)",
                       r".*/a\(b\)", r".*/a(b)", r".*/(ab)\1", r".*/a{1,}b*", r".*/\w\w",
                       r".*/(a|b){2,3}", r".*/a+?", r".*kernel-(debug-)?debuginfo-[0-9.]+-.*"],
    "emacs": [r".*/a\{2\}", r".*/a{2}", r".*/ab+", r".*/ab\+", r".*/a?", r".*/x\|y", r".*/a\(b\)",
              r".*/a(b)", r".*/[[:alpha:]]*", r".*/\(ab\)\1", r".*/\w\w"],
    "awk": [r".*/a{2}", r".*/(x|y)", r".*/\w", r".*/a[\]]b", r".*/a[\\]b"],
    "posix-awk": [r".*/a{2}", r".*/(x|y)", r".*/a[\]]b"],
    "gnu-awk": [r".*/a{2}", r".*/\w\w", r".*/a[\]]b"],
    "egrep": [r".*/a{2}", r".*/a{x", r".*/(x|y)+"],
}
TYPES = ["posix-basic", "grep", "ed", "sed", "posix-extended", "posix-egrep", "egrep", "emacs",
         "findutils-default", "awk", "posix-awk", "gnu-awk"]
FAMILY = {"grep": "posix-basic", "ed": "posix-basic", "sed": "posix-basic",
          "posix-egrep": "egrep", "findutils-default": "emacs"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("shelf")
    for d in [""] + DIRS:
        os.makedirs(root / d, exist_ok=True)
        for name in NAMES:
            (root / d / name).write_text("x")
    listing = subprocess.run(["find", str(root)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    return str(root), listing


def _find(root, regex_type, pattern):
    proc = subprocess.run(["find", root, "-regextype", regex_type, "-regex", pattern],
                          capture_output=True, text=True)
    return proc.returncode, sorted(proc.stdout.splitlines())


CASES = [(t, p) for t in TYPES for p in COMMON + SPECIFIC.get(FAMILY.get(t, t), [])]


@pytest.mark.parametrize("regex_type,pattern", CASES)
def test_same_selection_as_find(tree, regex_type, pattern):
    root, listing = tree
    status, expected = _find(root, regex_type, pattern)
    if status != 0:  # find rejects the pattern: so must we
        with pytest.raises(FormatError):
            findregex.compile(pattern, regex_type)
        return
    match = findregex.matcher(pattern, regex_type)
    assert sorted(p for p in listing if match(p)) == expected


@pytest.mark.parametrize("regex_type,pattern", [
    ("posix-extended", "*a"), ("posix-basic", r"a\(b"), ("posix-extended", "a(b"),
    ("posix-extended", "[abc"), ("posix-basic", r"\(a\)\2"), ("posix-extended", "[[:nope:]]"),
    ("posix-extended", "a\\")])
def test_rejected_like_find(tree, regex_type, pattern):
    root, _ = tree
    status, _ = _find(root, regex_type, pattern)
    assert status != 0
    with pytest.raises(FormatError) as err:
        findregex.compile(pattern, regex_type, "rpmFilter")
    assert "rpmFilter" in str(err.value) and "\n" not in str(err.value)


def test_unsupported_type_is_a_clear_error():
    with pytest.raises(FormatError, match="regexType 'perl' is not supported"):
        findregex.compile(".*", "perl")
