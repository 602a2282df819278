"""The two halves of a job under Slurm: the head on the submit host, the tail on a node.

Why split there: cas-unpack and cas-ident need no debug kernel and run on any
architecture, and only ident can say which machine the dump is from, that is which
partition must run the rest.  cas-dmesg and cas-findkernel run in the head too: they are
as architecture-neutral, and findkernel reads the kernels index in ``database``, an
SQLite file that stays on the submit host (WAL mode does not work across hosts).
The tail (cas-extract, crash, cas-triage, cas-mail: cas's own steps and argument
rules, cas.step_argvs) runs in the
Slurm job from the head's record kept in the job directory (``head.json``), and leaves
its final record as ``result.json`` for the submit host: the jobs table stays on the
submit host, no node writes it.  The files of the job directory:

  slurm-job.json   what to run: {"job_id", "options", "partition"} (written before sbatch)
  head.json        cas-findkernel's record, the tail's input
  result.json      the tail's final record (written whole, then renamed into place)
  slurm-N.out      the Slurm job's output: every step's log lines
"""

import json
import os
import signal
import subprocess
import sys

from caslib import cas, config, jobdir, logs, records
from caslib.messages import failmail
from caslib.queue import cas_argv
from caslib.records import Interrupted, StepError

SPEC, HEAD, RESULT = "slurm-job.json", "head.json", "result.json"
MAX_RECORD = 16 * 1024 * 1024  # bytes of one record file read back


def _env(cfg) -> dict:
    env = dict(os.environ)
    if cfg.path:
        env["CAS_CONFIG"] = cfg.path
    return env


def _last_record(stream, what: str) -> dict | None:
    last = None
    for line in stream:
        try:
            rec = json.loads(line)
        except ValueError:
            logs.get().error("%s printed a line that is not JSON: %.80s", what, line)
            continue
        if isinstance(rec, dict):
            last = rec
    return last


HEAD_STEPS = ("unpack", "ident", "dmesg", "findkernel")
# a head that failed in these steps has no dump to analyse: the job fails here; an error
# of findkernel (no debuginfo) goes on to the tail, whose cas-mail sends the log-only report
FATAL_IN_HEAD = ("cas-unpack", "cas-ident")


def run_head(options: dict, cfg) -> dict:
    """cas-unpack | cas-ident | cas-dmesg | cas-findkernel on this host; the last record
    (it may be an error record)."""
    args = cas.build_parser().parse_args(cas_argv(options))
    _, argvs = cas.step_argvs(args, cfg)
    pipeline, env = cas.Pipeline(), _env(cfg)
    try:
        prev = subprocess.DEVNULL
        for name in HEAD_STEPS:
            proc = pipeline.spawn(f"cas-{name}", argvs[name], prev, env)
            if prev is not subprocess.DEVNULL:
                prev.close()
            prev = proc.stdout
        record = _last_record(prev, "cas-findkernel")
        for _, proc in pipeline.procs:
            proc.wait()
    except BaseException:
        pipeline.stop()
        raise
    broken = [(n, p.returncode) for n, p in pipeline.procs if p.returncode not in (0, 1)]
    if record is None:
        why = f"{broken[0][0]} exit status {broken[0][1]}" if broken else "no record"
        return {"error": {"step": broken[0][0] if broken else "cas-unpack", "kind": "failed",
                          "message": why}}
    return record


def write_json(path: str, value: dict) -> None:
    """Write whole, then rename: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    """A record file of the job directory; None when absent; StepError when not a record."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RECORD + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StepError(f"{path}: cannot read: {exc.strerror}", "os-error") from None
    if len(data) > MAX_RECORD:
        raise StepError(f"{path}: larger than {MAX_RECORD} bytes: not a record", "bad-record")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise StepError(f"{path}: not JSON", "bad-record") from None
    if not isinstance(value, dict):
        raise StepError(f"{path}: not a JSON object", "bad-record")
    return value


def tail_command(workdir: str, cfg) -> list:
    """argv the Slurm job runs: this CAS's cas-worker in tail mode."""
    here = os.path.dirname(os.path.realpath(sys.argv[0] or __file__))
    sibling = os.path.join(here, "cas-worker")
    argv = [sys.executable, sibling] if os.path.isfile(sibling) else ["cas-worker"]
    argv += ["--slurm-tail", workdir]
    if cfg.path:
        argv += ["--config", cfg.path]
    return argv


def _stop(signum, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def run_tail(workdir: str, cfg) -> int:
    """The Slurm job: the rest of the pipeline from ``head.json``, its record to ``result.json``."""
    log = logs.setup("cas-slurm", cfg.debugLevel)
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir) or not jobdir.inside(cfg.workDirectory, workdir):
        raise StepError(f"{workdir}: not a job directory under {cfg.workDirectory}", "usage")
    spec = read_json(os.path.join(workdir, SPEC))
    if not spec or not isinstance(spec.get("options"), dict) or not isinstance(
            spec.get("job_id"), int):
        raise StepError(f"{os.path.join(workdir, SPEC)}: missing or without job_id and options",
                        "bad-record")
    args = cas.build_parser().parse_args(cas_argv(spec["options"]))
    names, argvs = cas.step_argvs(args, cfg)
    rest = names[names.index(HEAD_STEPS[-1]) + 1:]
    log.info("job %s on %s: %s", spec["job_id"], os.uname().nodename,
             " | ".join(f"cas-{n}" if n in config.PIPELINE_STEPS else n for n in rest))
    signal.signal(signal.SIGTERM, _stop)  # scancel, a time limit, a preemption
    pipeline, env = cas.Pipeline(), _env(cfg)
    try:
        with open(os.path.join(workdir, HEAD), "rb") as head:
            prev = head
            for name in rest:
                label = f"cas-{name}" if name in config.PIPELINE_STEPS else name
                proc = pipeline.spawn(label, argvs[name], prev, env)
                if prev is not head:
                    prev.close()
                prev = proc.stdout
            record = _last_record(prev, rest[-1])
        for _, proc in pipeline.procs:
            proc.wait()
    except (Interrupted, KeyboardInterrupt):
        log.error("job %s: stopped by a signal (Slurm's time limit, scancel or preemption)",
                  spec["job_id"])
        pipeline.stop(grace=5.0)
        return 143
    broken = [(n, p.returncode) for n, p in pipeline.procs if p.returncode not in (0, 1)]
    for name, code in broken:
        log.error("step %s failed: %s", name,
                  f"killed by signal {-code}" if code < 0 else f"exit status {code}")
    if record is None:
        record = {"error": {"step": rest[-1], "kind": "failed",
                            "message": "the pipeline produced no result record"}}
    elif broken and not record.get("error"):
        record["error"] = {"step": broken[0][0], "kind": "failed",
                           "message": f"exit status {broken[0][1]}"}
    write_json(os.path.join(workdir, RESULT), record)
    err = record.get("error")
    if err:
        log.error("step %s failed: %s", err.get("step"), err.get("message"))
        failmail.notify(cfg, spec["job_id"], record, spec["options"].get("email"))
        return records.EXIT_ERROR
    return cas.EXIT_PARTIAL if record.get("analysis") == "log-only" else records.EXIT_OK
