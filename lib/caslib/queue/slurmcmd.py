"""Slurm's own commands (sbatch, sinfo, scontrol, sacct, scancel), run with a deadline and
read back into plain dicts.

Why programs and not the REST API or libslurm: the commands are what every Slurm site
has and trusts, they read the site's slurm.conf (``SLURM_CONF``) and munge setup, and
their output formats are documented and stable across releases.  Every call has a
timeout: a slurmctld that does not answer is an error naming the command, never a hang.
Arguments are argv lists; nothing here builds a shell line except ``--wrap``, which is
made with ``shlex.join``.
"""

import re
import shlex
import shutil
import subprocess

from caslib.records import StepError

TIMEOUT = 60.0  # seconds any one Slurm command may take (slurmctld's own RPC timeouts are less)

# Slurm job state -> CAS state (job_state_string() of Slurm 22.05; suffixes like "+" dropped)
QUEUED = ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
          "SPECIAL_EXIT")
RUNNING = ("RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING",
           "STOPPED", "UPDATE_DB")
# states in which Slurm ended the job itself: the CAS job failed with this reason
KILLED = {"TIMEOUT": "timeout", "NODE_FAIL": "node-fail", "PREEMPTED": "preempted",
          "BOOT_FAIL": "boot-fail", "DEADLINE": "deadline", "OUT_OF_MEMORY": "out-of-memory",
          "REVOKED": "revoked"}
ENDED = ("COMPLETED", "FAILED", "CANCELLED") + tuple(KILLED)


def cas_state(slurm_state: str | None) -> str | None:
    """The CAS state a Slurm state stands for; None when it is not known."""
    base = (slurm_state or "").split()[0].rstrip("+") if slurm_state else ""
    if base in QUEUED:
        return "queued"
    if base in RUNNING:
        return "running"
    if base == "COMPLETED":
        return "done"
    if base == "CANCELLED":
        return "cancelled"
    if base in ENDED:
        return "failed"
    return None


def run(argv: list, timeout: float = TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Run one Slurm command; StepError (kind ``slurm``) when it is missing, hangs or fails."""
    path = shutil.which(argv[0])
    if path is None:
        raise StepError(f"{argv[0]}: not found on PATH (is slurm-client installed?)", "slurm")
    try:
        res = subprocess.run([path] + list(argv[1:]), capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        raise StepError(f"{shlex.join(argv[:3])}: no answer from Slurm within {timeout:g} s",
                        "slurm") from None
    except OSError as exc:
        raise StepError(f"{argv[0]}: cannot run: {exc.strerror}", "slurm") from None
    if check and res.returncode != 0:
        why = " ".join(res.stderr.split())[:300] or f"exit status {res.returncode}"
        raise StepError(f"{argv[0]} failed: {why}", "slurm")
    return res


def partitions() -> list:
    """Names of the cluster's partitions (``sinfo -h -o %R``), without duplicates."""
    out = run(["sinfo", "-h", "-o", "%R"]).stdout
    names = []
    for line in out.split():
        if line and line not in names:
            names.append(line)
    return names


def parse_sbatch(stdout: str) -> int:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    first = stdout.strip().split(";")[0]
    if not first.isdigit():
        raise StepError(f"sbatch printed {stdout.strip()[:80]!r}, not a job id", "slurm")
    return int(first)


def sbatch(options: list, command: list) -> int:
    """Submit ``command`` (an argv list) as a batch job; the Slurm job id."""
    return parse_sbatch(run(["sbatch", "--parsable"] + list(options)
                            + ["--wrap", shlex.join(command)]).stdout)


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol(text: str) -> dict:
    """``scontrol -o show job`` (one job per line) -> {job id: {key: value}}."""
    jobs = {}
    for line in text.splitlines():
        marks = list(_FIELD.finditer(line))
        fields = {}
        for n, m in enumerate(marks):
            end = marks[n + 1].start() if n + 1 < len(marks) else len(line)
            fields[m.group(1)] = line[m.end():end].strip()
        if fields.get("JobId", "").isdigit():
            jobs[int(fields["JobId"])] = fields
    return jobs


def parse_sacct(text: str) -> dict:
    """``sacct -n -P -X -o JobID,State,NodeList,Start`` -> {job id: {key: value}}."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 4 and parts[0].isdigit():
            jobs[int(parts[0])] = {"JobState": parts[1].split()[0] if parts[1] else "",
                                   "Reason": parts[1], "NodeList": parts[2],
                                   "StartTime": parts[3]}
    return jobs


def job_states(ids) -> dict:
    """{job id: {"state", "reason", "node", "start"}} for the jobs Slurm still knows:
    slurmctld's memory first (scontrol), then accounting (sacct) where it is kept."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    res = run(["scontrol", "-o", "show", "job"], check=False)
    if res.returncode != 0 and "No jobs" not in res.stdout + res.stderr:
        raise StepError(f"scontrol show job failed: {' '.join(res.stderr.split())[:300]}", "slurm")
    known = {i: f for i, f in parse_scontrol(res.stdout).items() if i in ids}
    rest = [i for i in ids if i not in known]
    if rest:
        acct = run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,NodeList,Start",
                    "-j", ",".join(map(str, rest))], check=False)
        if acct.returncode == 0:  # no accounting storage: the jobs are simply unknown
            known.update(parse_sacct(acct.stdout))
    out = {}
    for job_id, f in known.items():
        node = f.get("NodeList") or f.get("BatchHost")
        out[job_id] = {"state": f.get("JobState") or None,
                       "reason": None if f.get("Reason") in (None, "", "None") else f["Reason"],
                       "node": None if node in (None, "", "(null)", "None assigned") else node,
                       "start": f.get("StartTime")}
    return out


def scancel(job_id: int) -> None:
    run(["scancel", str(int(job_id))])
