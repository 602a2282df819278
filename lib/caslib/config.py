"""The CAS configuration file (every key in man/cas.conf.5).

Lookup order: ``--config FILE``, else ``$CAS_CONFIG``, else ``/etc/cas.conf``,
else built-in defaults that work for an unprivileged user (everything under
the user's XDG data and cache directories).  Values are typed here, once, so
no step parses a string again; a bad value is a one-line error naming the
key and the file.  Keys are matched without regard to case, and written in
the original's camelCase in documentation.
"""

import configparser
import getpass
import logging
import os
import shlex
from dataclasses import dataclass, field

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
    }[name]


# key -> (section, type); the types are parsed by _parse below.
KEYS = {
    "casuser": ("settings", "str"),
    "sshkey": ("settings", "path"),
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
    "buffersize": ("advanced", "size"),
    "maxCoreSize": ("advanced", "size"),
    # the job service (cas --queue, cas-worker) and SMTP the way sites run it (smtp.py)
    "maxJobs": ("settings", "optcount"),
    "smtpPort": ("settings", "optcount"),
    "smtpTls": ("settings", "tls"),
    "smtpUser": ("settings", "optstr"),
    "smtpPasswordFile": ("settings", "optpath"),
    "smtpCaFile": ("settings", "optpath"),
}
# Sizes a typo must not turn into an exhausted machine: key -> (least, most) bytes.
SIZE_BOUNDS = {"buffersize": (4096, 4 * 1024 ** 3)}
# Keys a config file must set: where the shelf, the jobs and the database live.
REQUIRED = ("kernels", "workDirectory", "database")
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


def find_path(explicit: str | None, environ=None) -> str | None:
    """The config file in force, or None for the built-in defaults."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit
    if environ.get("CAS_CONFIG"):
        return environ["CAS_CONFIG"]
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
    except configparser.DuplicateOptionError as exc:
        raise UsageError(f"{path}: {exc.option} is set twice in [{exc.section}] "
                         f"(line {exc.lineno}); keep one") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise UsageError(f"{path}: not a valid config file: {first}") from None
    cfg.path = os.path.abspath(path)
    seen = set()
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
                cfg.warnings.append(f"{path}: [{section}] {raw_key}: unknown key, ignored")
                continue
            want = KEYS[key][0]
            if section.lower() != want:
                cfg.warnings.append(f"{path}: {raw_key} belongs in [{want}], read from [{section}]")
            if key in seen:
                raise UsageError(f"{path}: {key} is set twice (again as {raw_key!r} in "
                                 f"[{section}]); keep one")
            cfg.values[key] = _parse(KEYS[key][1], raw_value, key, path)
            seen.add(key)
    missing = [k for k in REQUIRED if k not in seen]
    if missing:
        raise UsageError(f"{path}: required key {missing[0]} is missing from [settings]")
    for line in cfg.warnings:
        logging.getLogger("cas").warning("%s", line)
    return cfg
