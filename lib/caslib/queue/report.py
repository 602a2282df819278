"""How cas-jobs shows jobs to a person: the table, and one job in full.

Why separate from jobs.py: the same views serve any queue backend; the
JSON for scripts is the job dict itself (queue.py), plus paths and the log tail.
"""

import os
import time

from caslib.queue import cas_argv

LOG_TAIL = 20
COLUMNS = ("JOB", "IDENTIFIER", "STATE", "KERNEL", "PANIC", "STARTED", "TOOK", "WHERE")


def took(job: dict, now: float | None = None) -> str:
    if not job.get("started"):
        return "-"
    end = job.get("finished") or (now or time.time())
    secs = max(0, int(end - job["started"]))
    text = f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else \
        f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"
    return text if job.get("finished") else text + "+"


def when(stamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def state_text(job: dict) -> str:
    state = job["state"]
    err = job.get("error") or {}
    if state == "failed" and err.get("kind") == "worker-lost":
        return "failed (worker lost)"
    if state == "running" and job.get("cancel_requested"):
        return "running (cancelling)"
    return state


def _cut(text, width: int) -> str:
    text = " ".join(str(text).split()) if text else "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def where_text(job: dict) -> str | None:
    """The worker's host, or for a Slurm job its node (else partition) and Slurm job id."""
    slurm = job.get("slurm")
    if slurm and slurm.get("job_id"):
        return f"{slurm.get('node') or slurm.get('partition')}:{slurm['job_id']}"
    return (job.get("worker") or {}).get("host")


def table(jobs: list) -> str:
    now = time.time()
    rows = [COLUMNS]
    for j in jobs:
        panic = j.get("panic") or ((j.get("error") or {}).get("step") and
                                   f"[{(j['error'] or {}).get('step')}] {(j['error'] or {}).get('message')}")
        rows.append((str(j["job_id"]), _cut(j.get("identifier"), 16), state_text(j),
                     _cut(j.get("kernel"), 28), _cut(panic, 40), when(j.get("started")),
                     took(j, now), _cut(where_text(j), 16)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    counts = {}
    for j in jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    summary = f"{len(jobs)} job(s)" + ("" if not counts else ": " + ", ".join(
        f"{n} {s}" for s, n in sorted(counts.items())))
    return summary + "\n" + "\n".join(lines)


def paths(job: dict) -> dict:
    workdir = job.get("workdir")
    out = {"workdir": workdir, "log": None, "mail": None, "failure_mail": None}
    if workdir:
        for key, name in (("log", f"{job.get('job')}.log"), ("mail", "mail.eml"),
                          ("failure_mail", "failure.eml")):
            path = os.path.join(workdir, name)
            out[key] = path if os.path.exists(path) else None
    return out


def log_tail(path: str | None, n: int = LOG_TAIL) -> list:
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            return fh.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def job_full(job: dict, as_json: bool):
    """One job: the dict with paths and log tail added (JSON), or text for a person."""
    where = paths(job)
    tail = log_tail(where["log"])
    if as_json:
        return dict(job, paths=where, log_tail=tail)
    err = job.get("error") or {}
    worker = job.get("worker") or {}
    slurm = job.get("slurm") or {}
    lines = [
        f"Job {job['job_id']}: {state_text(job)} (attempt {job.get('attempt')}"
        + (f", rerun of job {job['rerun_of']}" if job.get("rerun_of") else "") + ")",
        f"Identifier:    {job.get('identifier')}    job name: {job.get('job')}",
        f"Input:         {job.get('source')}",
        f"Email:         {job.get('email') or '-'}",
        f"Submitted:     {when(job.get('submitted'))}",
        f"Started:       {when(job.get('started'))}",
        f"Finished:      {when(job.get('finished'))} (took {took(job)})",
        (f"Where:         Slurm job {slurm['job_id']} ({slurm.get('state')}) on partition "
         f"{slurm.get('partition')}, node {slurm.get('node') or '-'}" if slurm.get("job_id") else
         f"Where:         {worker.get('host') or '-'}"
         + (f" (worker pid {worker.get('pid')}, runner pid {worker.get('runner')})" if worker else "")),
        f"Kernel:        {job.get('kernel') or '-'}",
        f"Panic:         {job.get('panic') or '-'}",
    ]
    if err:
        lines.append(f"Error:         {err.get('step')} ({err.get('kind')}): {err.get('message')}")
    if job.get("options"):
        lines.append(f"Command:       cas {' '.join(cas_argv(job['options']))}")
    lines += [f"Job directory: {where['workdir'] or '-'}", f"Log:           {where['log'] or '-'}"]
    for key, label in (("mail", "Mail:"), ("failure_mail", "Failure mail:")):
        if where[key]:
            lines.append(f"{label:<15}{where[key]}")
    if tail:
        lines += ["", f"Last {len(tail)} lines of the log:"] + [f"  {t}" for t in tail]
    return "\n".join(lines)
