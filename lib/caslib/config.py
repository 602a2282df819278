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

import os
import pwd
import re
import shlex

from caslib import logs, seedvalues
from caslib.records import UsageError

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
    """As getpass.getuser() (the environment, then the password file), without importing
    getpass and termios at every start-up."""
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


# Every key's built-in default: the one place a default is written (callers never repeat
# one: ``cfg.crashTimeout``, never a second default at the call).  The keys that depend
# on the user ($HOME, XDG_*, DEBUGINFOD_URLS) are computed at load time by _default.
DEFAULTS = {
    "regexExcludeDir": [],
    "regexExcludeFile": [],
    "regexType": "posix-extended",
    "rpmFilter": r".*kernel.*debuginfo.*\.rpm",
    "debFilter": r".*linux-image-.*-dbg(sym)?_.*\.d?deb",
    "debugLevel": "INFO",
    "smtphost": None,
    "snippets": None,
    "knownIssues": None,
    "crashCommand": "crash",
    "crashTimeout": 1800,
    "servers": [],
    "mailFrom": None,
    "cacheLimit": 20 * 1024 ** 3,
    "downloadTimeout": 60,
    "transferDeadline": 6 * 3600,  # a 100 GB dump at 5 MB/s fits
    "purgeLimit": 90,
    "autoPurge": False,
    "crash_32": None,
    "buffersize": 64 * 1024 ** 2,
    "maxCoreSize": 64 * 1024 ** 4,
    "maxJobs": None,
    "smtpPort": None,
    "smtpTls": "auto",
    "smtpUser": None,
    "smtpPasswordFile": None,
    "smtpCaFile": None,
    "backend": "local",
    "partitionMap": {},
    "slurmArgs": [],
    "webListen": "127.0.0.1:8080",
    "webUsers": None,
    "maxUpload": 64 * 1024 ** 3,
}


def _default(name: str):
    """A key's built-in default, computed now so $HOME and XDG_* are honoured."""
    if name in DEFAULTS:
        value = DEFAULTS[name]
        return list(value) if isinstance(value, list) else value
    data = os.path.join(_xdg("XDG_DATA_HOME", ".local/share"), "cas")
    cache = os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), "cas")
    return {
        "casuser": _current_user,
        "sshkey": lambda: os.path.join(os.path.expanduser("~"), ".ssh", "id_rsa"),
        "kernels": lambda: os.path.join(data, "kernels"),
        "workDirectory": lambda: os.path.join(data, "work"),
        "database": lambda: os.path.join(data, "cas.db"),
        "debugs": lambda: os.path.join(cache, "debugs"),
        # as elfutils reads it
        "debuginfodUrls": lambda: os.environ.get("DEBUGINFOD_URLS", "").split(),
    }[name]()


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
    # the queue's backend: this machine's SQLite queue, or Slurm (slurmqueue.py)
    "backend": ("queue", "backend"),
    "partitionMap": ("queue", "partitionmap"),
    "slurmArgs": ("queue", "argv"),
    # cas-web (web.py): where it listens, who may use it, how large an upload may be
    "webListen": ("settings", "str"),
    "webUsers": ("settings", "optpath"),
    "maxUpload": ("settings", "size"),
}
# Sizes a typo must not turn into an exhausted machine: key -> (least, most) bytes.
SIZE_BOUNDS = {"buffersize": (4096, 4 * 1024 ** 3)}
_BY_LOWER = {k.lower(): k for k in KEYS}
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgt]?)(?:i?b)?\s*")


def parse_size(text: str) -> int:
    """Bytes from ``67108864``, ``64M``, ``64MiB``, ``2G``, ``1T`` (powers of 1024): the one
    size parser (config values, ``--buffersize``); ValueError if it is not a size > 0."""
    m = _SIZE.fullmatch(text.lower())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(text)
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


class Config:
    """Typed settings; ``get(name)`` or attribute access by the documented key name.

    (A plain class, not a dataclass: importing dataclasses costs every command's start-up.)
    """

    def __init__(self, values: dict, path: str | None = None):
        self.values, self.path = values, path
        self.pipeline: dict = {}  # [pipeline] step -> argv
        self.warnings: list = []

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name):
        """The key's value (its default is in DEFAULTS, never at the caller)."""
        return self.values.get(name)

    @property
    def source(self) -> str:
        return self.path or "built-in defaults"


class _Bad(ValueError):
    """A value of the wrong form; the argument says what was expected."""


def _size(raw: str, key: str) -> int:
    try:
        value = parse_size(raw)
    except ValueError:
        raise _Bad("a size like 67108864, 64M or 2G") from None
    least, most = SIZE_BOUNDS.get(key, (1, None))
    if value < least or (most is not None and value > most):
        raise _Bad(f"a size from {least:,} to {most:,} bytes")
    return value


def _path(raw: str, optional: bool) -> str | None:
    if not raw:
        if optional:
            return None
        raise _Bad("a path")
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        raise _Bad("an absolute path (or ~/...)")
    return os.path.normpath(path)


def _number(text: str, least: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Bad(expected) from None
    if value < least:
        raise _Bad(f"a number >= {least}" if least == 0 else "a number > 0")
    return value


def _choice(value: str, choices, expected: str) -> str:
    if value not in choices:
        raise _Bad(expected)
    return value


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise _Bad("Yes or No")


def _count(raw: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise _Bad("a whole number >= 1")
    return int(raw)


def _nonempty(raw: str) -> str:
    if not raw:
        raise _Bad("a non-empty value")
    return raw


def _words(raw: str) -> list:
    try:
        return shlex.split(raw.replace(",", " "))
    except ValueError:
        raise _Bad("space- or comma-separated words") from None


def _partition_map(raw: str) -> dict:
    """``x86_64 = x86_64, aarch64 = arm``: machine -> Slurm partition."""
    pairs = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        machine, eq, part = (x.strip() for x in item.partition("="))
        if not eq or not machine or not part or " " in machine + part:
            raise _Bad("machine = partition pairs separated by commas")
        pairs[machine] = part
    return pairs


def _argv(raw: str) -> list:
    try:
        return shlex.split(raw)
    except ValueError:
        raise _Bad("arguments as a shell would split them") from None


# value type -> parser(raw, key); each raises _Bad(what was expected)
_PARSERS = {
    "str": lambda raw, key: _nonempty(raw),
    "optstr": lambda raw, key: raw or None,
    "path": lambda raw, key: _path(raw, False),
    "optpath": lambda raw, key: _path(raw, True),
    "int": lambda raw, key: _number(raw, 0, "a whole number"),
    "optcount": lambda raw, key: _count(raw),
    "seconds": lambda raw, key: _number(raw.lower().rstrip("s"), 1, "seconds"),
    "size": _size,
    # the original documented "None" (or nothing) as the default
    "optsize": lambda raw, key: _default(key) if raw.lower() in ("", "none") else _size(raw, key),
    "sshkey": lambda raw, key: seedvalues.sshkey(raw) if raw else _default(key),
    "tls": lambda raw, key: _choice(raw.lower(), ("auto", "starttls", "tls", "none"),
                                    "auto, starttls, tls or none"),
    "bool": lambda raw, key: _bool(raw),
    "level": lambda raw, key: _choice(raw.upper(), DEBUG_LEVELS, " or ".join(DEBUG_LEVELS)),
    "regextype": lambda raw, key: _choice(raw, REGEX_TYPES, "one of " + ", ".join(REGEX_TYPES)),
    "globs": lambda raw, key: _words(raw),
    "words": lambda raw, key: _words(raw),
    "backend": lambda raw, key: _choice(raw.lower(), ("local", "slurm"), "local or slurm"),
    "partitionmap": lambda raw, key: _partition_map(raw),
    "argv": lambda raw, key: _argv(raw),
}


def _parse(kind: str, raw: str, key: str, where: str):
    """The typed value of ``key = raw``; UsageError naming the file, key and value."""
    raw = raw.strip()
    try:
        if ("\n" in raw or "\r" in raw) and kind not in ("globs", "words"):
            raise _Bad("a value on one line")
        return _PARSERS[kind](raw, key)
    except _Bad as exc:
        raise UsageError(f"{where}: {key} = {raw!r}: expected {exc}") from None


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


def _read(path: str):
    """The file as a ConfigParser; UsageError naming the file and the line on trouble."""
    import configparser  # only when there is a file to read

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
    return parser


def _pipeline(cfg: Config, items, path: str) -> None:
    """``[pipeline]``: step = command replacing that step's executable."""
    for step, command in items:
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


def _settings(cfg: Config, section: str, items, path: str, seen: set) -> str | None:
    """One section's keys into ``cfg``; the ssh key type named (``sshkey = rsa``), if any."""
    key_type = None
    for raw_key, raw_value in items:
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
    return key_type


def load(explicit: str | None = None, environ=None) -> Config:
    """Load the config in force; raise UsageError with one line on any problem."""
    path = find_path(explicit, environ)
    cfg = defaults()
    if path is None:
        return cfg
    parser = _read(path)
    cfg.path = os.path.abspath(path)
    key_type = None
    seen: set = set()  # a file sets only the keys it changes; the rest keep their defaults
    for section in parser.sections():
        if section.lower() == "pipeline":
            _pipeline(cfg, parser.items(section), path)
        else:
            key_type = _settings(cfg, section, parser.items(section), path, seen) or key_type
    if key_type:  # casuser may come later in the file
        cfg.values["sshkey"] = seedvalues.sshkey(key_type, cfg.values["casuser"])
    for line in cfg.warnings:
        logs.get().warning("%s", line)
    return cfg


def _unknown(raw_key: str) -> str:
    """"unknown key 'kernal' (did you mean 'kernels'?)": the nearest known key, if any is close."""
    import difflib

    near = difflib.get_close_matches(raw_key.lower(), list(_BY_LOWER), n=1, cutoff=0.75)
    hint = f" (did you mean {_BY_LOWER[near[0]]!r}?)" if near else ""
    return f"unknown key {raw_key!r}{hint}"
