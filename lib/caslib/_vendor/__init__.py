"""Third-party code CAS ships because distributions do not package it.

rpmfile 2.2.1 (MIT, LICENSE beside it) reads RPM headers; no distribution
packages it, so the RPM and the Debian package carry this copy.  It is
unmodified except for its two absolute self-imports, made relative so the
copy can live inside caslib.  ``load_rpmfile()`` prefers an installed rpmfile (a
pip or site install, which the maintainer may keep newer) and falls back to
this copy.
"""

import importlib


def load_rpmfile():
    """The rpmfile module: the installed one when present, else the vendored copy.

    (Not named ``rpmfile``: importing the submodule ``caslib._vendor.rpmfile`` rebinds
    that attribute of this package to the module.)"""
    try:
        return importlib.import_module("rpmfile")
    except ImportError:
        return importlib.import_module("caslib._vendor.rpmfile")
