"""The project as a newcomer meets it: one version everywhere, --version on every command,
one line (not a traceback) when this Python lacks a dependency, and nothing that points
outside the repository."""

import os
import re
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, run

import caslib

COMMANDS = sorted(os.listdir(BIN))
PAGES = sorted(os.path.join(ROOT, "man", p) for p in os.listdir(os.path.join(ROOT, "man")))


def test_version_has_one_source():
    assert re.fullmatch(r"\d+\.\d+\.\d+", caslib.__version__)
    with open(os.path.join(ROOT, "setup.cfg")) as fh:
        setup = fh.read()
    assert re.search(r"^version = attr: caslib\.__version__$", setup, re.M), \
        "setup.cfg must read the version from caslib.__version__"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_answers_version(name):
    res = run(name, "--version")
    assert res.returncode == 0, res
    assert res.stdout == f"{name} {caslib.__version__}\n", res


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_footer_carries_the_version(page):
    with open(page) as fh:
        th = fh.readline()
    fields = re.findall(r'"[^"]*"|\S+', th)
    assert fields[0] == ".TH", page
    assert fields[4] == f'"cas {caslib.__version__}"', f"{page}: .TH footer is {th!r}"
    assert fields[5] == '"Core Analysis System"', f"{page}: .TH manual is {th!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_a_python_without_the_dependencies_gets_one_line(name):
    """-S: no site-packages, so no zstandard (the venv's or the system's); rpmfile is not
    named: caslib/_vendor carries a copy."""
    proc = subprocess.run([sys.executable, "-S", os.path.join(BIN, name), "-h"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{name}: ") and "rpmfile" not in lines[0] \
        and "zstandard" in lines[0] and ".venv/bin/activate" in lines[0], lines[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_version_answers_without_the_dependencies(name):
    """--version needs nothing but caslib: it answers on a Python that lacks zstandard."""
    from caslib import __version__

    proc = subprocess.run([sys.executable, "-S", os.path.join(BIN, name), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"{name} {__version__}\n", proc


def test_every_wrapper_goes_through_the_launcher():
    for name in COMMANDS:
        with open(os.path.join(BIN, name)) as fh:
            text = fh.read()
        assert "from caslib.launch import launch" in text, f"bin/{name} bypasses caslib.launch"


def tracked_files() -> list:
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True,
                         check=True).stdout.decode()
    return [f for f in out.split("\0") if f]


def test_nothing_refers_to_a_path_outside_the_repository():
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(
            os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: no list of tracked files")
    outside = re.compile(rb"\.\./shared|/work/shared|\b(?:DESIGN|FORMATS)\.md\b")
    offenders = []
    for rel in tracked_files():
        path = os.path.join(ROOT, rel)
        if rel == "tests/test_project.py" or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if outside.search(line):
                    offenders.append(f"{rel}:{lineno}: {line.strip()[:100].decode(errors='replace')}")
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)


def test_setup_cfg_installs_every_man_page():
    with open(os.path.join(ROOT, "setup.cfg")) as fh:
        setup = fh.read()
    for page in PAGES:
        name = os.path.basename(page)
        section = name.rsplit(".", 1)[1]
        assert re.search(rf"^share/man/man{section} =\n(?:    .*\n)*    man/{re.escape(name)}\n",
                         setup, re.M), f"setup.cfg does not install {name}"
