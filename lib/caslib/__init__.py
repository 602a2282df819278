"""CAS, the Core Analysis System: from a Linux kernel crash dump to a first crash analysis.

Each pipeline step is a module with ``main(argv=None) -> int`` (the
executable in ``bin/``) and a ``process(record, ...) -> record`` function
for scripts; ``records`` holds the contract they share.
"""

__version__ = "0.1.0"
