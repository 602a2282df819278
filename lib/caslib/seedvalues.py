"""Config values in the original CAS's own spellings, read as it documented them.

Why: sites keep their old cas.conf.  The original manual says ``sshkey``
names a key *type* (``rsa``, ``dss``, ``ed25519``, ...: the key is then
``~/.ssh/id_<type>``), and its ``rpmFilter`` could be a comma-separated list
of package names, matched without regard to case, instead of a regex.  Both
forms are accepted here beside the newer ones (a key path; a ``find -regex``).
"""

import os
import pwd
import re


# key types ssh-keygen -t takes; "dss" is the original's spelling of dsa
KEY_TYPES = ("rsa", "dsa", "dss", "ecdsa", "ecdsa-sk", "ed25519", "ed25519-sk")
# a package-name item of the comma-separated form: no regex or glob operators
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def is_key_type(raw: str) -> bool:
    return raw.strip().lower() in KEY_TYPES


def sshkey(raw: str, casuser: str | None = None) -> str:
    """The key file: ``~/.ssh/id_<type>`` for a key type, else the path as given.

    For a key type the ``~`` is ``casuser``'s home when root runs the command
    (it becomes casuser before it uses the key), else the caller's.
    """
    low = raw.lower()
    if low in KEY_TYPES:
        kind = "dsa" if low == "dss" else low.replace("-", "_")
        return os.path.join(_home(casuser), ".ssh", f"id_{kind}")
    return os.path.abspath(os.path.expanduser(raw))


def _home(casuser: str | None) -> str:
    if casuser and os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(casuser)
        except KeyError:
            entry = None  # cli.become_casuser reports the missing user
        if entry is not None and entry.pw_uid != 0:  # root stays root: its own $HOME
            return entry.pw_dir
    return os.path.expanduser("~")


def name_list(value: str) -> list | None:
    """The package names of the comma-separated form, or None when ``value`` is a regex."""
    items = [item.strip() for item in value.split(",")]
    if all(_NAME.fullmatch(item) for item in items if item) and any(items):
        return [item.lower() for item in items if item]
    return None


def rpm_matcher(value: str, regex_type: str):
    """A function path -> bool: file names beginning with one of the names, or find's -regex."""
    names = name_list(value)
    if names is None:
        from caslib.shelf import findregex  # the indexer's, not every command's start-up

        return findregex.matcher(value, regex_type, "rpmFilter")
    prefixes = tuple(names)

    def match(path: str) -> bool:
        base = os.path.basename(path).lower()
        return base.endswith(".rpm") and base.startswith(prefixes)
    return match
