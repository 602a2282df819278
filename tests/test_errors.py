"""One error vocabulary: every kind a step can put in ``error.kind`` is in
caslib.errors.KINDS and documented in man/cas-records.7, and OSErrors map the
same way everywhere."""

import ast
import errno
import os
import pathlib

import pytest

from caslib import errors

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIB = ROOT / "lib" / "caslib"


def _const(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _const(node.body) + _const(node.orelse)
    return []


def _kinds_in(tree) -> list[tuple[str, int]]:
    """(kind, line) of every literal kind: the 2nd argument or ``kind=`` of an *Error
    call, the 4th argument of error_record, the ``kind`` default of an *Error class, the
    ``kind`` of an error-shaped dict literal (one with a ``message``)."""
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            args = []
            if name.endswith("Error") or name == "UnsafeTar":
                args = n.args[1:2]
            elif name == "error_record":
                args = n.args[3:4]
            if args or name.endswith("Error") or name == "error_record":
                args += [k.value for k in n.keywords if k.arg == "kind"]
            found += [(k, n.lineno) for a in args for k in _const(a)]
        elif isinstance(n, ast.ClassDef) and n.name.endswith("Error"):
            for f in n.body:
                if isinstance(f, ast.FunctionDef) and f.name == "__init__":
                    params = f.args.args[len(f.args.args) - len(f.args.defaults):]
                    found += [(k, f.lineno) for p, d in zip(params, f.args.defaults)
                              if p.arg == "kind" for k in _const(d)]
        elif isinstance(n, ast.Dict):
            keys = {k.value: v for k, v in zip(n.keys, n.values) if isinstance(k, ast.Constant)}
            if "kind" in keys and "message" in keys:
                found += [(k, n.lineno) for k in _const(keys["kind"])]
    return found


def test_every_kind_used_in_lib_is_in_KINDS():
    unknown = []
    for path in sorted(LIB.rglob("*.py")):
        if "_vendor" in path.parts:
            continue
        for kind, line in _kinds_in(ast.parse(path.read_text(), str(path))):
            if kind not in errors.KINDS:
                unknown.append(f"{path.relative_to(LIB)}:{line}: {kind!r}")
    assert not unknown, "kinds missing from caslib.errors.KINDS:\n" + "\n".join(unknown)


def test_the_walk_sees_kinds():
    """The check above would pass on an empty walk: make sure it finds the usual ones."""
    seen = {k for path in LIB.rglob("*.py") if "_vendor" not in path.parts
            for k, _ in _kinds_in(ast.parse(path.read_text()))}
    assert {"bad-record", "not-found", "corrupt", "internal", "disk-full", "unsafe"} <= seen


def test_every_kind_is_documented():
    page = (ROOT / "man" / "cas-records.7").read_text()
    section = page.split('.SH "THE ERROR RECORD"')[1].split(".SH ")[0]
    documented = {line[3:].strip() for line in section.splitlines() if line.startswith(".B ")}
    missing = sorted(set(errors.KINDS) - documented)
    assert not missing, f"kinds not in man/cas-records.7 THE ERROR RECORD: {missing}"


def test_format_error_refuses_an_unknown_kind():
    assert errors.FormatError("x: bad", "truncated").kind == "truncated"
    with pytest.raises(ValueError, match="unknown error kind"):
        errors.FormatError("x: bad", "no-such-kind")


@pytest.mark.parametrize("code, kind", [
    (errno.ENOSPC, "disk-full"), (errno.EDQUOT, "disk-full"), (errno.EFBIG, "disk-full"),
    (errno.EACCES, "permission"), (errno.ENOENT, "not-found"), (errno.EISDIR, "not-a-dump"),
    (errno.EIO, "os-error")])
def test_kind_of_oserror(code, kind):
    assert errors.kind_of_oserror(OSError(code, os.strerror(code))) == kind
