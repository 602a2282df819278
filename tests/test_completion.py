"""bash completion (completion/cas.bash): every option of every command, files, choices, jobs."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, run
from test_manpages import options_from_help

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
COMMANDS = sorted(os.listdir(BIN))

SCRIPT = r"""
source {bc}
source {comp}
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
_cas_complete
printf '%s\n' "${{COMPREPLY[@]}}"
"""


@pytest.fixture(scope="module")
def shims(tmp_path_factory):
    """The checkout's commands on PATH, as the installed ones would be."""
    if not os.path.exists(BASH_COMPLETION):
        pytest.fail("bash-completion is not installed (tests/install-deps installs it)",
                    pytrace=False)
    top = tmp_path_factory.mktemp("bin")
    for name in COMMANDS:
        (top / name).write_text(f'#!/bin/sh\nexec {sys.executable} {os.path.join(BIN, name)} "$@"\n')
        os.chmod(top / name, 0o755)
    return str(top)


@pytest.fixture
def jobs_shim(shims, tmp_path):
    """A cas-jobs printing two records in the --json form the completion reads ("job" keys),
    first on PATH: the job names then do not depend on a database."""
    (tmp_path / "cas-jobs").write_text(
        "#!/bin/sh\n[ \"$1\" = --json ] || exit 2\n"
        "echo '{\"job\": \"12345\", \"state\": \"done\"}'\necho '{\"job\": \"INC-7\"}'\n")
    os.chmod(tmp_path / "cas-jobs", 0o755)
    return str(tmp_path) + os.pathsep + shims


def complete(shims, *words, cwd=ROOT):
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = SCRIPT.format(bc=BASH_COMPLETION, comp=os.path.join(ROOT, "completion", "cas.bash"),
                           words=quoted)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=dict(os.environ, PATH=shims + os.pathsep + os.environ["PATH"]))
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_completes(shims, name):
    res = run(name, "-h")
    assert complete(shims, name, "-") >= options_from_help(res.stdout)


def test_files_choices_and_jobs(shims, jobs_shim):
    assert complete(shims, "cas", "--config", "etc/cas.conf.m") == {"etc/cas.conf.minimal"}
    assert complete(shims, "cas-ident", "tests/test_complet") == {"tests/test_completion.py"}
    assert complete(shims, "cas-unpack", "--compress-format", "") == {"xz", "zstd"}
    # job names come from "cas-jobs --json" (a stand-in here prints two records)
    assert complete(jobs_shim, "cas", "--job", "") == {"12345", "INC-7"}
    assert complete(jobs_shim, "cas-jobs", "IN") == {"INC-7"}
    assert complete(shims, "cas-mail", "--resend", "completio") == {"completion"}


def test_every_command_is_registered():
    with open(os.path.join(ROOT, "completion", "cas.bash")) as fh:
        text = fh.read()
    registered = text.split("complete -F _cas_complete", 1)[1].replace("\\", " ").split()
    assert set(COMMANDS) <= set(registered)
    assert shutil.which("bash")
