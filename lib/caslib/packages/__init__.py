"""Debuginfo packages: ``read.read_package`` (what one holds, for the index), ``rpm`` and
``deb`` (one reader per format), ``cpio`` (the RPM payload), ``pkgmembers`` (cas-extract's
one pass), ``kernelrelease`` (what a ``uname -r`` says)."""
