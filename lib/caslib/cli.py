"""The command-line vocabulary every CAS command shares, and what each does first.

One spelling per meaning across all commands: ``-i/--identifier``, ``-j/--job``,
``-f/--file``, ``-r/--release``, ``-M/--machine``, ``-b/--build-id``, ``-c/--config``,
``-q/--quiet``, ``-v/--verbose``, ``-V/--version``, ``--json``.  A spelling a command used
before keeps working, unlisted in ``-h``, for one release (:func:`add_alias`).
"""

import argparse
import grp
import os
import pwd
import sys

from caslib import config, logs, records
from caslib.records import UsageError

# where an option's long name means the same thing everywhere: its short form
SHORT = {"--identifier": "-i", "--job": "-j", "--file": "-f", "--release": "-r",
         "--machine": "-M", "--build-id": "-b", "--config": "-c"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the width so that building a parser does not import
    shutil (and with it bz2 and lzma): every command builds one, few print help."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", ""))
            except ValueError:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 80
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() decides."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


QUIET = "log only errors on stderr (overrides debugLevel)"


def argument_parser(prog: str, description: str, epilog: str | None = None,
                    quiet: str = QUIET) -> ArgumentParser:
    """The parser every command starts from: ``-V/--version`` (``cas-ident 0.2.0``),
    ``-c/--config``, ``-q/--quiet`` and ``-v/--verbose``.  ``description`` is the -h first
    line: one sentence in the imperative, ending with a full stop."""
    from caslib import __version__
    parser = ArgumentParser(prog=prog, description=description, epilog=epilog,
                            formatter_class=_Formatter)
    parser.add_argument("-V", "--version", action="version", version=f"{prog} {__version__}",
                        help="print the command's name and the CAS version, and exit")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="config file (default: $CAS_CONFIG, else "
                             "$XDG_CONFIG_HOME/cas/cas.conf for a non-root user, else "
                             "/etc/cas.conf, else built-in)")
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress; twice: debug lines too (overrides debugLevel)")
    return parser


def option(parser, name: str, **kwargs) -> None:
    """Add the shared option ``--name`` with its shared short form (``SHORT``)."""
    short = SHORT.get(name)
    parser.add_argument(*((short,) if short else ()), name, **kwargs)


def add_files(parser, what: str) -> None:
    """Dump files given as ``-f FILE`` (repeatable) or positionally, in that order: read
    them back with ``files(args)``."""
    option(parser, "--file", action="append", dest="file_opt", metavar="FILE",
           help=f"{what} (same as FILE; may be repeated)")
    parser.add_argument("files", nargs="*", metavar="FILE", help=what + "s")


def files(args) -> list:
    """The dump files of ``add_files``: every ``-f`` first, then the positional ones."""
    return (args.file_opt or []) + args.files


def add_alias(parser, spelling: str, dest: str, **kwargs) -> None:
    """Keep an old ``spelling`` of the option stored in ``dest`` working, unlisted in -h
    (kept for one release after 0.2)."""
    parser.add_argument(spelling, dest=dest, help=argparse.SUPPRESS, **kwargs)


def one_of(args, dest: str, positional: str):
    """The value given as option ``dest`` or as the ``positional`` argument (never both)."""
    opt, pos = getattr(args, dest), getattr(args, positional)
    if opt is not None and pos is not None:
        raise UsageError(f"give the {positional} once, as an argument or as an option")
    return opt if opt is not None else pos


def refuse_terminal(parser, stdin=None) -> None:
    """A filter told to read records from a terminal would wait silently: print its usage
    instead (exit 2).  Call where the filter is about to read stdin."""
    stdin = sys.stdin if stdin is None else stdin
    try:
        tty = stdin.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        raise UsageError(f"{parser.format_usage().rstrip()}\n{parser.prog}: reads records "
                         f"(JSON lines) on stdin, which is a terminal; pipe records in or give "
                         f"arguments (see {parser.prog} -h)")


def log_level(args, cfg_level: str) -> str:
    """The log level: -q or -v on the command line, else the config's debugLevel."""
    if getattr(args, "quiet", False):
        return "ERROR"
    verbose = getattr(args, "verbose", 0) or 0
    if verbose:
        return "DEBUG" if verbose > 1 else "INFO"
    return cfg_level


def load_config(args) -> config.Config:
    """Load the config, set the log level and become ``casuser``; UsageError on trouble."""
    from caslib import pathsafety  # loaded once the arguments are known to be sound
    cfg = config.load(getattr(args, "config", None))
    logs.set_level(log_level(args, cfg.debugLevel))
    if become_casuser(cfg):
        # built-in defaults live under the cas user's home, not root's
        cfg = config.load(getattr(args, "config", None))
    pathsafety.configure(cfg)
    records.set_record_check(pathsafety.check_record)
    return cfg


def become_casuser(cfg: config.Config) -> bool:
    """As root, switch to ``casuser`` (and its groups); as anyone else, insist on being it.

    Returns True when it switched.
    """
    want = cfg.casuser
    try:
        entry = pwd.getpwnam(want)
    except KeyError:
        if want.isdigit():
            entry = None
        else:
            raise UsageError(f"{cfg.source}: casuser {want!r}: no such user") from None
    want_uid = entry.pw_uid if entry else int(want)
    uid = os.geteuid()
    if uid == want_uid:
        return False
    if uid != 0:
        me = pwd.getpwuid(uid).pw_name if _has_uid(uid) else str(uid)
        raise UsageError(f"must run as casuser {want!r} (from {cfg.source}) or root, not {me!r}")
    if entry is None:
        raise UsageError(f"{cfg.source}: casuser {want!r}: no such user")
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    os.setgroups(groups)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = entry.pw_name
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        os.environ.pop(var, None)
    logs.get().debug("switched to casuser %s (uid %d, groups %s)", entry.pw_name, entry.pw_uid,
                     ",".join(_group_name(g) for g in groups))
    return True


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
