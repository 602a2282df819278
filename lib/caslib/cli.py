"""What every command does first: ``--config``, the log level and the cas user."""

import grp
import os
import pwd

from caslib import config, logs, pathsafety, records
from caslib.records import UsageError


def add_config_option(parser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $CAS_CONFIG, else $XDG_CONFIG_HOME/cas/cas.conf "
                             "for a non-root user, else /etc/cas.conf, else built-in)")


def load_config(args) -> config.Config:
    """Load the config, apply ``debugLevel`` and become ``casuser``; UsageError on trouble."""
    cfg = config.load(getattr(args, "config", None))
    logs.set_level(cfg.debugLevel)
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
