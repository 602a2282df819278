"""Build ``crash.in`` from the snippets directory, as the original CAS did.

Why snippets: sites add their own first-look commands without touching
CAS.  The directory is the config key ``snippets``; without it, the shipped
snippets (``/usr/share/cas/snippets`` from the packages, else
``/var/lib/cas/snippets`` as the original CAS kept them, else the copy in this
package) merged with the site's ``/etc/cas/snippets.d``, where a file of the
same name replaces a shipped one (an empty file masks it).  Files are read in
sorted order of their names:

- a plain file holds crash commands, one a line; ``# comments`` and blank
  lines are dropped; ``cmd >> name`` writes the split result ``name`` in the
  job directory (only plain file names: results never land outside it);
- an executable file is run with ``CAS_CORE``, ``CAS_VMLINUX``,
  ``CAS_RELEASE``, ``CAS_MACHINE`` and ``CAS_WORKDIR`` in its environment,
  in the job directory, and its stdout is read as such commands.

Hidden files and editor or package-manager leftovers (``~``, ``.swp``,
``.bak``, ``.orig``, ``.rpmnew``, ``.rpmsave``, ``.dpkg-*``) are skipped.  With
module debug files, ``mod -S <dir>`` comes first; ``exit`` always comes last.
"""

import os
import re
import subprocess
from dataclasses import dataclass, field

from caslib import logs
from caslib.records import StepError

SHARE_SNIPPETS = "/usr/share/cas/snippets"
SYSTEM_SNIPPETS = "/var/lib/cas/snippets"
SITE_SNIPPETS = "/etc/cas/snippets.d"
PACKAGE_SNIPPETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snippets")
SNIPPET_TIMEOUT = 60  # seconds an executable snippet may take
_SKIP_SUFFIXES = ("~", ".swp", ".bak", ".orig", ".rej", ".rpmnew", ".rpmsave", ".tmp")
# crash's own output redirection: "cmd > file" or "cmd >> file" (not inside a "| pipe")
_REDIRECT = re.compile(r"^(?P<cmd>[^|>]*?)\s*(?P<op>>>?)\s*(?P<target>\S+)\s*$")
_EXIT_WORDS = ("exit", "quit", "q")


@dataclass
class Plan:
    """What crash will be told: the commands, and the result files they write."""

    commands: list = field(default_factory=list)
    targets: list = field(default_factory=list)   # result file names, first-seen order
    sources: list = field(default_factory=list)   # snippet paths used

    def text(self) -> str:
        return "".join(line + "\n" for line in self.commands)


def default_directory(cfg) -> str:
    """The shipped snippets directory in force: config, else the first that exists."""
    configured = cfg.get("snippets") if cfg is not None else None
    if configured:
        return configured
    for candidate in (SHARE_SNIPPETS, SYSTEM_SNIPPETS):
        if os.path.isdir(candidate):
            return candidate
    return PACKAGE_SNIPPETS


def default_directories(cfg, site: str = SITE_SNIPPETS) -> list:
    """The directories read, in order: the configured one alone, else shipped then site."""
    first = default_directory(cfg)
    if cfg is not None and cfg.get("snippets"):
        return [first]
    return [first, site] if os.path.isdir(site) else [first]


def _skipped(name: str) -> bool:
    return (name.startswith(".") or name.endswith(_SKIP_SUFFIXES) or ".dpkg-" in name
            or name.startswith("#"))


def snippet_files(directory) -> list:
    """Snippet files of one directory, or of several merged by name (a later one wins).

    Sorted by file name; an empty file in a later directory masks the name.
    StepError when a directory cannot be listed or nothing is left.
    """
    if not isinstance(directory, str):
        chosen = {}
        for one in directory:
            try:
                for path in _files_of(one):
                    chosen[os.path.basename(path)] = path
            except StepError as exc:
                if one == directory[0] or "holds no snippet files" not in str(exc):
                    raise
        paths = [chosen[n] for n in sorted(chosen) if not _masked(chosen[n], directory[0])]
        if not paths:
            raise StepError(f"snippets directories {', '.join(directory)}: hold no snippet files",
                            "config")
        return paths
    return _files_of(directory)


def _masked(path: str, first: str) -> bool:
    """A site file that is empty (or a link to /dev/null) switches a shipped snippet off."""
    if os.path.dirname(path) == first.rstrip("/"):
        return False
    try:
        return os.path.realpath(path) == "/dev/null" or os.path.getsize(path) == 0
    except OSError:
        return False


def _files_of(directory: str) -> list:
    """Regular files of ``directory`` in sorted order; StepError when it cannot be listed."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise StepError(f"snippets directory {directory}: no such directory", "config") from None
    except NotADirectoryError:
        raise StepError(f"snippets directory {directory}: not a directory", "config") from None
    except PermissionError:
        raise StepError(f"snippets directory {directory}: permission denied", "permission") from None
    paths = []
    for name in names:
        path = os.path.join(directory, name)
        # a dangling symlink is kept, so that it is reported rather than silently ignored
        if _skipped(name) or os.path.isdir(path) or not (os.path.isfile(path)
                                                        or os.path.islink(path)):
            continue
        paths.append(path)
    if not paths:
        raise StepError(f"snippets directory {directory}: holds no snippet files", "config")
    return paths


def _is_executable(path: str) -> bool:
    return os.access(path, os.X_OK)


def _run_executable(path: str, env_vars: dict, cwd: str) -> str:
    env = dict(os.environ)
    env.update({k: "" if v is None else str(v) for k, v in env_vars.items()})
    try:
        proc = subprocess.run([path], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=SNIPPET_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise StepError(f"snippet {path}: still running after {SNIPPET_TIMEOUT} s",
                        "bad-snippet") from None
    except OSError as exc:
        raise StepError(f"snippet {path}: cannot run: {exc.strerror}", "bad-snippet") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = f": {err[-1]}" if err else ""
        raise StepError(f"snippet {path}: exited with status {proc.returncode}{why}",
                        "bad-snippet")
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise StepError(f"snippet {path}: output is not UTF-8 text", "bad-snippet") from None


def _read_plain(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError:
        raise StepError(f"snippet {path}: not UTF-8 text", "bad-snippet") from None
    except OSError as exc:
        raise StepError(f"snippet {path}: cannot read: {exc.strerror}", "bad-snippet") from None


def redirect_target(line: str) -> str | None:
    """The file a crash command line redirects to with ``>``/``>>``, or None.

    With a pipe (``ps -m | grep UN >> dstate``) the shell at its end does the writing,
    in crash's directory, the job directory: its last ``>``/``>>`` names the result.
    """
    if "|" in line:
        m = _REDIRECT.match(line.split("|", 1)[0]) or _REDIRECT.match(line.rsplit("|", 1)[1])
    else:
        m = _REDIRECT.match(line)
    return m.group("target") if m else None


def _check_target(target: str, path: str, lineno: int) -> None:
    if "/" in target or target in (".", "..") or target.startswith("-"):
        raise StepError(f"snippet {path} line {lineno}: redirects to {target!r}: results must be "
                        "plain file names in the job directory", "bad-snippet")


def add_lines(plan: Plan, text: str, path: str) -> None:
    """Append the commands of one snippet's text to ``plan``."""
    log = logs.get()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] in _EXIT_WORDS:
            log.warning("snippet %s line %d: %r ignored (exit is added at the end)",
                        path, lineno, line)
            continue
        target = redirect_target(line)
        if target is not None:
            _check_target(target, path, lineno)
            if target not in plan.targets:
                plan.targets.append(target)
        plan.commands.append(line)


def crash_word(path: str) -> str:
    """A path as one crash command-line word (double-quoted when it holds blanks)."""
    if '"' in path or "\n" in path:
        raise StepError(f"{path}: a path crash cannot be given (quote or newline in it)", "unsafe")
    return f'"{path}"' if re.search(r"\s", path) else path


def build(directory, env_vars: dict, workdir: str, module_dir: str | None = None) -> Plan:
    """Read the snippets of ``directory`` (or a list, merged) into a Plan; StepError names a bad one."""
    plan = Plan()
    if module_dir:
        plan.commands.append(f"mod -S {crash_word(module_dir)}")
    for path in snippet_files(directory):
        text = _run_executable(path, env_vars, workdir) if _is_executable(path) else _read_plain(path)
        add_lines(plan, text, path)
        plan.sources.append(path)
    plan.commands.append("exit")
    return plan
