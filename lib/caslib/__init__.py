"""CAS, the Core Analysis System: from a Linux kernel crash dump to a first crash analysis.

Each pipeline step is a module with ``main(argv=None) -> int`` (the
executable in ``bin/``) and a ``process(record, ...) -> record`` function
for scripts; ``records`` holds the contract they share.
"""

# The one version number: setup.cfg reads it (attr:), every command prints it (--version),
# and every man page's .TH footer carries it (tests/test_version.py checks).
__version__ = "0.2.0"
