"""The CAS configuration file (every key in man/cas.conf.5).

Lookup order: ``--config FILE``, else ``$CAS_CONFIG``, else (for a user other
than root) ``$XDG_CONFIG_HOME/cas/cas.conf``, else ``/etc/cas.conf``, else
built-in defaults that work for an unprivileged user (everything under the
user's XDG data and cache directories).  A file need only set the keys it
changes: every other key keeps its built-in default.  Values are typed here, once, so
no step parses a string again; a bad value is a one-line error naming the
key and the file.  Keys are matched without regard to case, and written in
the original's camelCase in documentation.
"""

import configparser
import difflib
import getpass
import logging
import os
import shlex
from dataclasses import dataclass, field

from . import seedvalues
from .records import UsageError

SYSTEM_CONFIG = "/etc/cas.conf"
REGEX_TYPES = ("posix-extended", "posix-egrep", "egrep", "posix-basic", "grep", "ed", "sed",
               "emacs", "posix-awk", "awk", "gnu-awk", "findutils-default")
DEBUG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PIPELINE_STEPS = ("unpack", "ident", "dmesg", "findkernel", "extract", "crash", "triage", "mail")


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), fallback)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _default(name: str):
    """Built-in defaults, computed at load time so $HOME and XDG_* are honoured."""
    data = os.path.join(_xdg("XDG_DATA_HOME", ".local/share"), "cas")
    cache = os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "cas")
    return {
        "casuser": _current_user(),
        "sshkey": os.path.join(os.path.expanduser("~"), ".ssh", "id_rsa"),
        "kernels": os.path.join(data, "kernels"),
        "regexExcludeDir": [],
        "regexExcludeFile": [],
        "regexType": "posix-extended",
        "rpmFilter": r".*kernel.*debuginfo.*\.rpm",
        "debFilter": r".*linux-image-.*-dbg(sym)?_.*\.d?deb",
        "debugLevel": "INFO",
        "workDirectory": os.path.join(data, "work"),
        "smtphost": None,
        "database": os.path.join(data, "cas.db"),
        "debugs": os.path.join(cache, "debugs"),
        "snippets": None,
        "knownIssues": None,
        "crashCommand": "crash",
        "crashTimeout": 1800,
        "servers": [],
        "mailFrom": None,
        "cacheLimit": 20 * 1024 ** 3,
        "downloadTimeout": 60,
        "transferDeadline": 6 * 3600,
        "purgeLimit": 90,
        "autoPurge": False,
        "crash_32": None,
        "buffersize": 64 * 1024 ** 2,
        "debuginfodUrls": os.environ.get("DEBUGINFOD_URLS", "").split(),  # as elfutils reads it
        "maxCoreSize": 64 * 1024 ** 4,
        "maxJobs": None,
        "smtpPort": None,
        "smtpTls": "auto",
        "smtpUser": None,
        "smtpPasswordFile": None,
        "smtpCaFile": None,
        "webListen": "127.0.0.1:8080",
        "webUsers": None,
        "maxUpload": 64 * 1024 ** 3,
    }[name]


# key -> (section, type); the types are parsed by _parse below.
KEYS = {
    "casuser": ("settings", "str"),
    "sshkey": ("settings", "sshkey"),
    "kernels": ("settings", "path"),
    "regexExcludeDir": ("settings", "globs"),
    "regexExcludeFile": ("settings", "globs"),
    "regexType": ("settings", "regextype"),
    "rpmFilter": ("settings", "str"),
    "debFilter": ("settings", "str"),
    "debugLevel": ("settings", "level"),
    "workDirectory": ("settings", "path"),
    "smtphost": ("settings", "optstr"),
    "database": ("settings", "path"),
    "debugs": ("settings", "path"),
    "snippets": ("settings", "optpath"),
    "knownIssues": ("settings", "optpath"),
    "crashCommand": ("settings", "str"),
    "crashTimeout": ("settings", "seconds"),
    "servers": ("settings", "words"),
    "mailFrom": ("settings", "optstr"),
    "cacheLimit": ("settings", "size"),
    "downloadTimeout": ("settings", "seconds"),
    "debuginfodUrls": ("settings", "words"),
    "transferDeadline": ("settings", "seconds"),
    "purgeLimit": ("maintenance", "int"),
    "autoPurge": ("maintenance", "bool"),
    "crash_32": ("advanced", "optpath"),
    "buffersize": ("advanced", "optsize"),
    "maxCoreSize": ("advanced", "size"),
    # the job service (cas --queue, cas-worker) and SMTP the way sites run it (smtp.py)
    "maxJobs": ("settings", "optcount"),
    "smtpPort": ("settings", "optcount"),
    "smtpTls": ("settings", "tls"),
    "smtpUser": ("settings", "optstr"),
    "smtpPasswordFile": ("settings", "optpath"),
    "smtpCaFile": ("settings", "optpath"),
    # cas-web (web.py): where it listens, who may use it, how large an upload may be
    "webListen": ("settings", "str"),
    "webUsers": ("settings", "optpath"),
    "maxUpload": ("settings", "size"),
}
# Sizes a typo must not turn into an exhausted machine: key -> (least, most) bytes.
SIZE_BOUNDS = {"buffersize": (4096, 4 * 1024 ** 3)}
_BY_LOWER = {k.lower(): k for k in KEYS}
_SIZE_SUFFIX = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


@dataclass
class Config:
    """Typed settings; ``get(name)`` or attribute access by the documented key name."""

    values: dict
    path: str | None = None
    pipeline: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name, default=None):
        return self.values.get(name, default)

    @property
    def source(self) -> str:
        return self.path or "built-in defaults"


def _parse(kind: str, raw: str, key: str, where: str):
    raw = raw.strip()

    def bad(expected: str):
        return UsageError(f"{where}: {key} = {raw!r}: expected {expected}")

    if ("\n" in raw or "\r" in raw) and kind not in ("globs", "words"):
        raise bad("a value on one line")
    if kind == "optsize":  # the original documented "None" (or nothing) as the default
        if raw.lower() in ("", "none"):
            return _default(key)
        kind = "size"
    if kind == "sshkey":
        if not raw:
            return _default(key)
        return seedvalues.sshkey(raw)
    if kind == "str":
        if not raw:
            raise bad("a non-empty value")
        return raw
    if kind == "optstr":
        return raw or None
    if kind in ("path", "optpath"):
        if not raw:
            if kind == "optpath":
                return None
            raise bad("a path")
        path = os.path.expanduser(raw)
        if not os.path.isabs(path):
            raise bad("an absolute path (or ~/...)")
        return os.path.normpath(path)
    if kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise bad("a whole number") from None
        if value < 0:
            raise bad("a number >= 0")
        return value
    if kind == "optcount":
        if not raw:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise bad("a whole number >= 1")
        return int(raw)
    if kind == "tls":
        if raw.lower() not in ("auto", "starttls", "tls", "none"):
            raise bad("auto, starttls, tls or none")
        return raw.lower()
    if kind in ("size", "seconds"):
        text = raw.lower().rstrip("b") if kind == "size" else raw.lower().rstrip("s")
        suffix = text[-1:] if kind == "size" and text[-1:] in "kmgt" else ""
        try:
            value = int(text[: len(text) - len(suffix)]) * _SIZE_SUFFIX[suffix]
        except (ValueError, KeyError):
            raise bad("a size like 67108864, 64M or 2G" if kind == "size" else "seconds") from None
        if value <= 0:
            raise bad("a number > 0")
        least, most = SIZE_BOUNDS.get(key, (1, None))
        if value < least or (most is not None and value > most):
            raise bad(f"a size from {least:,} to {most:,} bytes")
        return value
    if kind == "bool":
        low = raw.lower()
        if low in ("yes", "true", "on", "1"):
            return True
        if low in ("no", "false", "off", "0"):
            return False
        raise bad("Yes or No")
    if kind == "level":
        if raw.upper() not in DEBUG_LEVELS:
            raise bad(" or ".join(DEBUG_LEVELS))
        return raw.upper()
    if kind == "regextype":
        if raw not in REGEX_TYPES:
            raise bad("one of " + ", ".join(REGEX_TYPES))
        return raw
    if kind in ("globs", "words"):
        try:
            words = shlex.split(raw.replace(",", " "))
        except ValueError:
            raise bad("space- or comma-separated words") from None
        return words
    raise AssertionError(kind)


def user_config(environ) -> str | None:
    """``$XDG_CONFIG_HOME/cas/cas.conf`` (default ``~/.config``) for a user other than root."""
    if os.geteuid() == 0:
        return None
    base = environ.get("XDG_CONFIG_HOME")
    if not base or not os.path.isabs(base):
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    return os.path.join(base, "cas", "cas.conf")


def find_path(explicit: str | None, environ=None) -> str | None:
    """The config file in force, or None for the built-in defaults."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit
    if environ.get("CAS_CONFIG"):
        return environ["CAS_CONFIG"]
    mine = user_config(environ)
    if mine and os.path.exists(mine):
        return mine
    if os.path.exists(SYSTEM_CONFIG):
        return SYSTEM_CONFIG
    return None


def defaults() -> Config:
    return Config({k: _default(k) for k in KEYS})


def load(explicit: str | None = None, environ=None) -> Config:
    """Load the config in force; raise UsageError with one line on any problem."""
    path = find_path(explicit, environ)
    cfg = defaults()
    if path is None:
        return cfg
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       inline_comment_prefixes=None)
    parser.optionxform = str  # keep camelCase for messages
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config: {exc.strerror}") from None
    except configparser.MissingSectionHeaderError as exc:
        raise UsageError(f"{path}: line {exc.lineno}: a setting before any section header "
                         "(start the file with [settings])") from None
    except configparser.DuplicateOptionError as exc:
        raise UsageError(f"{path}: {exc.option} is set twice in [{exc.section}] "
                         f"(line {exc.lineno}); keep one") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise UsageError(f"{path}: not a valid config file: {first}") from None
    cfg.path = os.path.abspath(path)
    key_type = None
    seen = set()  # a file sets only the keys it changes; the rest keep their defaults
    for section in parser.sections():
        if section.lower() == "pipeline":
            for step, command in parser.items(section):
                if step.lower() not in PIPELINE_STEPS:
                    cfg.warnings.append(f"{path}: [pipeline] {step}: unknown step, ignored")
                    continue
                try:
                    argv = shlex.split(command)
                except ValueError:
                    raise UsageError(f"{path}: [pipeline] {step}: cannot split {command!r}") from None
                if not argv:
                    raise UsageError(f"{path}: [pipeline] {step}: empty command")
                cfg.pipeline[step.lower()] = argv
            continue
        for raw_key, raw_value in parser.items(section):
            key = _BY_LOWER.get(raw_key.lower())
            if key is None:
                cfg.warnings.append(f"{path}: [{section}] {_unknown(raw_key)}, ignored")
                continue
            want = KEYS[key][0]
            if section.lower() != want:
                cfg.warnings.append(f"{path}: {raw_key} belongs in [{want}], read from [{section}]")
            if key in seen:
                raise UsageError(f"{path}: {key} is set twice (again as {raw_key!r} in "
                                 f"[{section}]); keep one")
            cfg.values[key] = _parse(KEYS[key][1], raw_value, key, path)
            seen.add(key)
            if key == "sshkey":
                key_type = raw_value.strip() if seedvalues.is_key_type(raw_value) else None
    if key_type:  # casuser may come later in the file
        cfg.values["sshkey"] = seedvalues.sshkey(key_type, cfg.values["casuser"])
    for line in cfg.warnings:
        logging.getLogger("cas").warning("%s", line)
    return cfg


def _unknown(raw_key: str) -> str:
    """"unknown key 'kernal' (did you mean 'kernels'?)": the nearest known key, if any is close."""
    near = difflib.get_close_matches(raw_key.lower(), list(_BY_LOWER), n=1, cutoff=0.75)
    hint = f" (did you mean {_BY_LOWER[near[0]]!r}?)" if near else ""
    return f"unknown key {raw_key!r}{hint}"
