"""Every command has a man page that mentions each option its -h lists."""

import os
import re

import pytest

from conftest import BIN, ROOT, run

COMMANDS = sorted(os.listdir(BIN))


def options_from_help(text: str) -> set:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text.split("options:", 1)[-1]))


@pytest.mark.parametrize("name", COMMANDS)
def test_man_page_documents_every_option(name):
    page = os.path.join(ROOT, "man", f"{name}.1")
    assert os.path.exists(page), f"{name} has no man page"
    with open(page) as fh:
        text = fh.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace(
            "\\fI", "")
    assert text.startswith(".TH "), page
    res = run(name, "-h")
    assert res.returncode == 0, res
    for option in options_from_help(res.stdout):
        assert option in text, f"{page} does not mention {option}"


def test_setup_cfg_installs_every_command_and_page():
    with open(os.path.join(ROOT, "setup.cfg")) as fh:
        setup = fh.read()
    for name in COMMANDS:
        assert f"bin/{name}\n" in setup
        assert f"man/{name}.1\n" in setup


@pytest.mark.parametrize("page", sorted(os.listdir(os.path.join(ROOT, "man"))))
def test_man_page_has_environment_files_and_exit_status(page):
    with open(os.path.join(ROOT, "man", page)) as fh:
        text = fh.read()
    sections = re.findall(r'^\.SH "?([^"\n]+)"?$', text, re.M)
    for wanted in ("ENVIRONMENT", "FILES", "EXIT STATUS"):
        assert wanted in sections, f"{page} has no {wanted} section"
    assert "CAS_CONFIG" in text.split(".SH ENVIRONMENT", 1)[1]


def test_man_page_footers_agree_with_the_version():
    from caslib import __version__
    footers = set()
    for page in sorted(os.listdir(os.path.join(ROOT, "man"))):
        with open(os.path.join(ROOT, "man", page)) as fh:
            th = fh.readline().split('"')
        footers.add((th[1], th[3], th[5]))
    assert footers == {(footers.copy().pop()[0], f"cas {__version__}", "Core Analysis System")}
