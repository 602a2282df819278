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
