"""cas-crash: run the real crash utility on a job's core and split and summarise what it says.

Python use::

    from caslib.crash import process
    record = process({"core": ..., "vmlinux": ..., "workdir": ..., "kernel": {...}}, cfg)

Keys read: ``core``, ``vmlinux`` (absolute paths), ``workdir`` (the job
directory), ``kernel.machine`` and ``kernel.release``, optional ``modules``
(module debug files; ``mod -S <their module tree>`` runs first).

Writes in the job directory: ``crash`` (an executable sh wrapper opening
this core with this vmlinux, extra arguments passed on: run it by hand for an
interactive session), ``crash.in`` (the commands, built from the snippets
directory by caslib.crashrun.snippets), ``crash.out`` (everything crash printed) and
the split results the snippets redirect to (by default ``traceback``,
``sys``, ``log``, ``modules``, ``memory``, ``bt-lines``, ``taint``, ``slabs``,
``dstate``, ``runq``).  When crash cannot open the dump
it is tried again with ``--zero_excluded``, then ``--minimal`` (the first
output is kept as ``crash.failed.out``) so the kernel log still comes out.
``cores`` (the parts of a split dump) are all given to crash.  When even
``--minimal`` fails and the job holds a kdump directory's ``vmcore_dmesg``, the
record says ``degraded`` with a ``note`` and the panic read from that file.

Adds ``crash``: ``{server, command, exit_status, output, files, panic,
version, degraded, init_error, opened_with, date, crash_time_from, timed_out,
note, failed_commands, warnings, mismatch, seconds}`` (a mismatch with a vmlinux the user
forced, ``debuginfo.override``, is an error of kind ``mismatch`` instead) where ``files`` maps result names to absolute paths, ``panic`` is
caslib.crashrun.panic.summary (message, task, pid, cpu, task_address, rip,
backtrace, oops) and ``failed_commands`` lists ``{command, error}`` for each
command crash reported an error for (a failing command is a result, not a
failure of the job), and ``mismatch`` repeats crash's "kernel version
inconsistency between vmlinux and dumpfile" when it went on despite it.  A run over ``crashTimeout`` seconds is killed with its
whole process group; the record then says ``timed_out`` and keeps the
partial output.

Where crash runs: on this host when the core's machine is this host's; an
i386..i686 core on x86_64 with ``crash_32`` when that is set; otherwise on a
server of that architecture from ``cas-admin --server`` (caslib.crashrun.servers),
through ssh, in the same job directory.

Errors (error record, exit 1): ``bad-record``, ``not-found``, ``missing-tool``
(crash not installed), ``bad-snippet``, ``no-server``, ``mismatch`` (crash
says vmlinux and core do not match), ``bad-vmlinux`` (crash cannot use the
vmlinux: no debug data, not a kernel), ``crash-init`` (crash cannot read the
core, or cannot open it even with --zero_excluded or --minimal), ``ssh`` (the server could not
be reached).
"""

import functools
import os
import platform
import shlex
import shutil
import socket
import stat

from caslib.crashrun import bounded, crashdate, panic, servers, snippets
from caslib import atomicfile, cli, logs, records
from caslib.records import StepError

PROG = "cas-crash"
WRAPPER, COMMANDS, OUTPUT, FAILED_OUTPUT = "crash", "crash.in", "crash.out", "crash.failed.out"
CRASH_PACKAGE = "install the crash package (Debian/Ubuntu: apt-get install crash; Fedora/RHEL: dnf install crash)"
_MISMATCH = ("do not match", "kernel version inconsistency")
RETRY_OPTIONS = ("--zero_excluded", "--minimal")


class Target:
    """Where and with which crash binary the wrapper runs."""

    def __init__(self, crash: str, server: dict | None = None):
        self.crash = crash
        self.server = server

    @property
    def name(self) -> str:
        return servers.server_name(self.server) if self.server else socket.gethostname()


def _need_path(record: dict, key: str, kind: str = "file") -> str:
    value = record.get(key)
    if not value or not isinstance(value, str):
        raise StepError(f"record has no {key}", "bad-record")
    if not os.path.isabs(value):
        raise StepError(f"{key} {value!r} is not an absolute path", "bad-record")
    check = os.path.isdir if kind == "dir" else os.path.isfile
    if not check(value):
        what = "directory" if kind == "dir" else "file"
        raise StepError(f"{value}: no such {what} ({key})", "not-found")
    return value


def local_crash(command: str, what: str = "crashCommand") -> str:
    """The absolute path of the crash program, or StepError naming the package."""
    words = shlex.split(command) if command else []
    if not words:
        raise StepError(f"{what} is empty; {CRASH_PACKAGE}", "missing-tool")
    found = shutil.which(words[0])
    if not found:
        raise StepError(f"crash program {words[0]!r} ({what}) not found; {CRASH_PACKAGE}",
                        "missing-tool")
    return os.path.abspath(found)


def choose_target(cfg, machine: str | None, connect=None) -> Target:
    """This host, crash_32, or a registered server of the core's architecture."""
    host = platform.machine()
    want = servers.family(machine)
    if want is None:
        logs.get().warning("the core's machine is unknown; running crash on this host (%s)", host)
        return Target(local_crash(cfg.crashCommand))
    if want == servers.family(host):
        return Target(local_crash(cfg.crashCommand))
    crash_32 = cfg.get("crash_32")
    if want == "i686" and servers.family(host) == "x86_64" and crash_32:
        return Target(local_crash(crash_32, "crash_32"))
    conn = (connect or _connect)(cfg)
    try:
        server = servers.pick(conn, machine) if conn is not None else None
        rows = servers.listing(conn) if conn is not None else []
    finally:
        if conn is not None:
            conn.close()
    if server is None:
        extra = " and crash_32 is not set" if want == "i686" and servers.family(host) == "x86_64" else ""
        raise StepError(f"no server for architecture {machine} (this host is {host}{extra}); "
                        f"{servers.describe(rows)}", "no-server")
    return Target(server["crash"], server)


def _connect(cfg):
    path = cfg.get("database")
    if not path or not os.path.exists(path):
        return None
    from caslib import db
    return db.connect(path)


def module_tree(modules: list) -> str | None:
    """The directory ``mod -S`` should search: the common ``.../modules/<release>`` tree."""
    paths = [m for m in modules or [] if isinstance(m, str) and os.path.isabs(m)]
    if not paths:
        return None
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    parts = common.split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "modules":
            return os.sep.join(parts[: i + 2])
    return common


def wrapper_text(crash: str, vmlinux: str, core: str, more: tuple = ()) -> str:
    """The job's ``crash`` script: this core (and the further parts of a split dump,
    ``more``) with this vmlinux, arguments passed on."""
    q = shlex.quote
    cores = " ".join(q(c) for c in (core, *more))
    return ("#!/bin/sh\n"
            "# Written by cas-crash: opens this job's core with its vmlinux in crash.\n"
            "# Run it with no arguments for an interactive session; arguments are passed on\n"
            f"# (cas-crash runs it in this directory as: ./crash -i {COMMANDS}).\n"
            f"exec {q(crash)} {q(vmlinux)} {cores} \"$@\"\n")


def _more_cores(record: dict, core: str, workdir: str) -> tuple:
    """The further parts of a split dump (``cores`` from cas-unpack/cas-ident), checked."""
    cores = record.get("cores")
    if cores is None:
        return ()
    if not isinstance(cores, list) or core not in cores:
        raise StepError("cores must be a list of paths that holds core", "bad-record")
    from caslib import jobdir
    for c in cores:
        if not isinstance(c, str) or not os.path.isabs(c) or not jobdir.inside(workdir, c):
            raise StepError(f"cores: {c!r} is not a path inside {workdir}", "bad-record")
        if not os.path.isfile(c):
            raise StepError(f"{c}: no such file (cores)", "not-found")
    return tuple(c for c in cores if c != core)


def _lines(path: str) -> list:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readlines()
    except OSError:
        return []


def _remove(path: str) -> None:
    try:
        if os.path.lexists(path) and not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _started(out_lines: list, workdir: str, targets: list) -> bool:
    """Did crash get as far as running commands (an echoed ``crash> `` line anywhere)?"""
    if any(line.startswith(panic.PROMPT) for line in out_lines):
        return True
    return any(any(line.startswith(panic.PROMPT) for line in _lines(os.path.join(workdir, t)))
               for t in targets)


def _run(cfg, target: Target, workdir: str, args: list, out_path: str) -> tuple:
    timeout = cfg.crashTimeout
    if target.server:
        argv = servers.remote_argv(cfg, target.server, workdir, args, timeout)
        outcome = servers.run_remote(cfg, target.server, workdir, args, out_path, timeout)
    else:
        argv = [os.path.join(workdir, WRAPPER)] + args
        outcome = bounded.run(argv, workdir, out_path, timeout)
    return outcome, argv


def _warnings(out_lines: list) -> list:
    seen = []
    for line in out_lines:
        if line.startswith(panic.PROMPT):
            break
        text = line.strip()
        if text.startswith("WARNING:") and text not in seen:
            seen.append(text)
    return seen


def _prepare(record: dict, cfg, workdir: str, core: str, vmlinux: str) -> tuple:
    """Pick where crash runs, build crash.in and write it and the wrapper: (target, plan)."""
    kernel = record.get("kernel") if isinstance(record.get("kernel"), dict) else {}
    target = choose_target(cfg, kernel.get("machine"))
    module_dir = module_tree(record.get("modules")) if record.get("modules") else None
    env = {"CAS_CORE": core, "CAS_VMLINUX": vmlinux, "CAS_RELEASE": kernel.get("release"),
           "CAS_MACHINE": kernel.get("machine"), "CAS_WORKDIR": workdir}
    plan = snippets.build(snippets.default_directories(cfg), env, workdir, module_dir)
    if os.path.basename(core) in plan.targets and os.path.dirname(core) == workdir:
        raise StepError(f"a snippet writes {os.path.basename(core)!r}, the name of the core; "
                        "rename the snippet's target (the core is never overwritten)", "usage")
    for name in plan.targets + [OUTPUT, FAILED_OUTPUT]:
        _remove(os.path.join(workdir, name))  # results of an earlier run of this job
    atomicfile.write_text(os.path.join(workdir, COMMANDS), plan.text(), perm=0o644)
    more = _more_cores(record, core, workdir)
    atomicfile.write_text(os.path.join(workdir, WRAPPER), wrapper_text(target.crash, vmlinux, core, more),
                 0o755)
    return target, plan


def _why_not_started(out_lines: list, outcome, core: str, vmlinux: str, partial: dict) -> str:
    """crash stopped before any command: raise when --minimal cannot help, else say why."""
    first_error = panic.init_error(out_lines) or (
        f"crash exited with status {outcome.exit_status} before running any command")
    said = [w.removeprefix("WARNING:").strip() for w in _warnings(out_lines)
            if any(word in w for word in _MISMATCH)]
    if said or any(word in first_error for word in _MISMATCH):
        raise StepError(f"crash says {vmlinux} does not match {core}: "
                        + "; ".join(dict.fromkeys(said + [first_error])), "mismatch", partial)
    # crash names the file it cannot use: --minimal would not help
    if vmlinux in first_error or "no debugging data" in first_error:
        raise StepError(f"crash cannot use {vmlinux}: {first_error}", "bad-vmlinux", partial)
    if core in first_error:
        raise StepError(f"crash cannot read {core}: {first_error}", "crash-init", partial)
    return first_error


def _summarise(result: dict, plan, workdir: str, out_lines: list, outcome, cfg) -> None:
    """Fill in files, panic, version, failed_commands, ... from what crash wrote."""
    files = {name: os.path.join(workdir, name) for name in plan.targets
             if os.path.isfile(os.path.join(workdir, name))}
    sys_lines = _lines(files["sys"]) if "sys" in files else []
    result.update({
        "files": files,
        "panic": panic.summary(sys_lines + out_lines, _lines(files.get("traceback", "")),
                               _lines(files.get("log", ""))),
        "version": panic.crash_version(out_lines),
        "timed_out": outcome.timed_out,
        "note": None,
        "failed_commands": panic.failed_commands([out_lines] + [_lines(p) for p in files.values()]),
        "warnings": _warnings(out_lines),
        "mismatch": None,
        "seconds": round(outcome.seconds, 1),
    })
    # crash goes on after this warning; what it then says may be wrong, so the record says so
    inconsistent = [w for w in result["warnings"] if _MISMATCH[1] in w]
    if inconsistent:
        result["mismatch"] = inconsistent[0].removeprefix("WARNING:").strip()
    if outcome.timed_out:
        result["note"] = f"timed out after {cfg.crashTimeout} s; the output is partial"
    elif outcome.exit_status not in (0, None):
        result["note"] = f"crash exited with status {outcome.exit_status}; the output may be partial"


def process(record: dict, cfg) -> dict:
    core = _need_path(record, "core")
    vmlinux = _need_path(record, "vmlinux")
    workdir = _need_path(record, "workdir", "dir")
    log = logs.get()
    target, plan = _prepare(record, cfg, workdir, core, vmlinux)
    log.info("running crash on %s (%s): %d commands from %s", target.name, target.crash,
             len(plan.commands), ", ".join(os.path.basename(p) for p in plan.sources))
    out_path = os.path.join(workdir, OUTPUT)
    outcome, argv = _run(cfg, target, workdir, ["-i", COMMANDS], out_path)
    out_lines = _lines(out_path)
    result = {"server": target.name, "command": shlex.join(argv),
              "exit_status": outcome.exit_status, "output": out_path,
              "degraded": False, "init_error": None, "opened_with": None}
    partial = dict(record, crash=result)
    started = outcome.timed_out or _started(out_lines, workdir, plan.targets)
    if target.server and outcome.exit_status == 255 and not started:
        raise StepError(f"ssh to {target.name} failed: "
                        f"{servers.ssh_failure(''.join(out_lines), 255)}", "ssh", partial)
    if not started:
        first_error = _why_not_started(out_lines, outcome, core, vmlinux, partial)
        os.replace(out_path, os.path.join(workdir, FAILED_OUTPUT))
        result["init_error"] = first_error
        for option in RETRY_OPTIONS:  # excluded pages read as zeros, then the minimal mode
            log.warning("crash cannot open the dump (%s); trying again with %s", first_error,
                        option)
            for name in plan.targets:
                _remove(os.path.join(workdir, name))
            outcome, argv = _run(cfg, target, workdir, [option, "-i", COMMANDS], out_path)
            out_lines = _lines(out_path)
            result.update(command=shlex.join(argv), exit_status=outcome.exit_status,
                          degraded=option == "--minimal", opened_with=option)
            if outcome.timed_out or _started(out_lines, workdir, plan.targets):
                break
        else:
            again = panic.init_error(out_lines) or first_error
            message = (f"crash cannot open {core} with {vmlinux}, even with "
                       f"{' or '.join(RETRY_OPTIONS)}: {again}")
            from caslib.dumps.kdumpdir import dmesg_panic
            quoted = dmesg_panic(record)
            if not quoted:
                raise StepError(message, "crash-init", partial)
            # the kdump directory's vmcore-dmesg.txt still tells the panic: the job goes on
            result.update(files={}, panic=panic.summary([], [], quoted), timed_out=False,
                          version=panic.crash_version(out_lines), failed_commands=[],
                          warnings=_warnings(out_lines), mismatch=None, degraded=True,
                          opened_with=None, seconds=round(outcome.seconds, 1),
                          note=f"{message}; the panic is taken from vmcore-dmesg.txt")
            log.warning("%s", result["note"])
            record["crash"] = result
            return record
        log.info("crash opened the dump with %s", result["opened_with"])
    _summarise(result, plan, workdir, out_lines, outcome, cfg)
    crashdate.fill(record, result, _lines(result["files"].get("sys", "")) + out_lines)
    if result["note"]:
        log.warning("%s (%s)", result["note"], out_path)
    if result["mismatch"]:
        log.warning("crash says %s does not match %s: %s", vmlinux, core, result["mismatch"])
        forced = (record.get("debuginfo") or {}).get("override")
        if forced:  # the user chose this vmlinux: crash's doubt ends the job, no analysis
            for name in plan.targets:  # split results that would look like one
                _remove(os.path.join(workdir, name))
            result.pop("panic", None)
            result["files"] = {}
            raise StepError(f"crash says the vmlinux of the {forced} override does not match "
                            f"{core}: {result['mismatch']}; its output in {out_path} is not an "
                            "analysis", "mismatch", dict(record, crash=result))
    for failed in result["failed_commands"]:
        log.info("crash command %r reported: %s", failed["command"], failed["error"])
    record["crash"] = result
    return record


def _initial(args) -> list | None:
    if not args.files:
        return None
    if len(args.files) < 2:
        raise records.UsageError(f"{PROG}: give a core and its vmlinux (got one file)")
    core, vmlinux, *modules = [os.path.abspath(f) for f in args.files]
    record = {"core": core, "vmlinux": vmlinux,
              "workdir": os.path.abspath(args.workdir or os.path.dirname(core))}
    if args.machine or args.release:
        record["kernel"] = {"release": args.release, "machine": args.machine}
    if modules:
        record["modules"] = modules
    return [record]


def main(argv=None) -> int:
    """cas-crash's command line (man cas-crash)."""
    return records.main_wrapper(PROG, run_command, argv)


def run_command(argv) -> int:
    parser = cli.argument_parser(
        PROG, "Run the crash utility on a job's core; split and summarise what it says.",
        epilog="With no files, reads records (from cas-extract) on stdin.")
    parser.add_argument("--workdir", metavar="DIR",
                        help="job directory for the results (default: the core's directory)")
    cli.option(parser, "--machine", metavar="ARCH",
               help="the core's architecture as uname -m prints it (default: this host's)")
    cli.option(parser, "--release", metavar="RELEASE", help="the core's kernel release")
    parser.add_argument("files", nargs="*", metavar="CORE VMLINUX [MODULE...]",
                        help="a core, its debug vmlinux and optional module debug files")
    args = parser.parse_args(argv)
    initial = _initial(args)
    if initial is None:
        cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    return records.run(PROG, functools.partial(process, cfg=cfg), initial)

