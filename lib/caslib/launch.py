"""How every executable in bin/ starts: check the run-time dependencies, then run the
command's ``main()``.

The wrappers in bin/ are copies of one another and go through here, so a Python that lacks
``rpmfile`` or ``zstandard`` (a checkout run with the system python3, say) gets one line
naming what to install, not a ModuleNotFoundError traceback from deep inside a step.
"""

import importlib
import importlib.util
import os
import sys

# the packages setup.cfg's install_requires names; everything else is the standard library
# (rpmfile is also vendored in caslib/_vendor, so it is never missing: see VENDORED)
REQUIRED = ("rpmfile", "zstandard")
VENDORED = ("rpmfile",)
EXIT_CANNOT_START = 2  # as for an unreadable config: nothing was read or written


def missing() -> list:
    """The required packages this Python cannot import (found without importing them)."""
    return [name for name in REQUIRED
            if name not in VENDORED and importlib.util.find_spec(name) is None]


def launch(module: str) -> int:
    """Run ``caslib.<module>.main()``, or say in one line what this Python lacks."""
    prog = os.path.basename(sys.argv[0]) or "cas"
    if sys.argv[1:] in (["--version"], ["-V"]):  # needs no dependency: answer it even without them
        from caslib import __version__

        print(f"{prog} {__version__}")  # as cli.argument_parser's --version prints it
        return 0
    lacking = missing()
    if lacking:
        print(f"{prog}: this Python ({sys.executable}) lacks {' and '.join(lacking)}: "
              f"install them ('python3 -m pip install {' '.join(lacking)}' in a venv), or use "
              f"the checkout's venv ('make demo', then '. .venv/bin/activate')",
              file=sys.stderr)
        return EXIT_CANNOT_START
    return importlib.import_module(f"caslib.{module}").main()
