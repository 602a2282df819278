"""The mail a requester gets when a job fails: what failed, why, what was kept, what to try.

Why a separate message from cas-mail's: a failed record passes through
cas-mail untouched (the filter contract), so without this the requester
hears nothing and waits.  The message is plain text (8bit UTF-8), summary
first, kept as ``failure.eml`` in the job directory when there is one, and
sent through the same relay settings as the results (smtp.py).  Trouble
sending is a warning in the log: the job's state is already recorded.
"""

import email.policy
import email.utils
import os
from email.message import EmailMessage

from caslib import logs
from caslib.mail import body_cte, check_address, default_sender, send_or_reason
from caslib.records import StepError
from caslib.queue.report import log_tail

# step -> what to try next; {rerun} is the cas-jobs command for this job
ADVICE = {
    "cas-unpack": ["check that the file or URL is complete and readable (a cut transfer is the "
                   "usual cause), then: {rerun}"],
    "cas-ident": ["the file may not be a kernel dump or may be damaged: ask for the dump again "
                  "(makedumpfile -c -d 31 output is smallest), then queue it with cas --queue"],
    "cas-findkernel": ["add the kernel's debuginfo package to the shelf and run cas-admin, then: "
                       "{rerun}",
                       "or force the kernel: {rerun} --release RELEASE "
                       "(or --package FILE, or --vmlinux FILE)"],
    "cas-extract": ["the debuginfo package may be damaged: replace it on the shelf, run cas-admin, "
                    "then: {rerun}", "or give the debug kernel directly: {rerun} --vmlinux FILE"],
    "cas-crash": ["read the crash output in the job directory; if the debug kernel does not match "
                  "the dump, {rerun} --vmlinux FILE (or --release RELEASE)",
                  "for a dump of another architecture, check the crash servers with cas-admin -s"],
    "cas-mail": ["the analysis is complete in the job directory; send it with: "
                 "cas-mail --resend JOBDIR"],
    "worker": ["the worker running the job was lost: {rerun}"],
    "slurm": ["Slurm ended the job (time limit, node failure, preemption): read the "
              "slurm-N.out file in JOBDIR, then: {rerun} (a time limit: a longer --time in "
              "slurmArgs of cas.conf)"],
}
DEFAULT_ADVICE = ["read the job's log, then: {rerun}"]
# error kind -> what to try, before the step's advice
KIND_ADVICE = {
    "truncated": ["the dump is cut short (an interrupted copy or upload): get the whole file "
                  "(compare its size with the original's), then queue it again with cas --queue"],
    "download": ["the download failed: check the URL and the server, then: {rerun}"],
    "timeout": ["a step ran out of time: {rerun} (crashTimeout and downloadTimeout in cas.conf)"],
}


def body(job_id, record: dict, error: dict) -> str:
    crash = record.get("crash") or {}
    workdir = record.get("workdir")
    log = os.path.join(workdir, f"{record.get('job')}.log") if workdir and record.get("job") else None
    rerun = f"cas-jobs --rerun {job_id}" if job_id is not None else "cas --queue -i ID -f FILE"
    kernel = (record.get("kernel") or {}).get("release")
    lines = [
        f"CAS job {job_id if job_id is not None else '-'} FAILED "
        f"(identifier {record.get('id')}, job name {record.get('job') or '-'})",
        "",
        f"Failed step: {error.get('step') or 'unknown'}",
        f"Reason:      {error.get('message') or 'unknown'}",
        f"Kind:        {error.get('kind') or 'unknown'}",
        f"Kernel:      {kernel or 'not identified'}",
        "",
        "What was kept:",
        f"  Job directory: {workdir or '(none: the job failed before it had one)'}",
        f"  Log:           {log if log and os.path.exists(log) else '(none)'}",
        f"  Input:         {record.get('source') or record.get('input') or '(as queued)'}",
        "",
        "Next thing to try:",
    ]
    for advice in KIND_ADVICE.get(error.get("kind"), []) + ADVICE.get(error.get("step"),
                                                                       DEFAULT_ADVICE):
        lines.append("  - " + advice.format(rerun=rerun).replace("JOBDIR", workdir or "JOBDIR"))
    failed = crash.get("failed_commands") or []
    if failed:
        lines += ["", "Crash commands that failed:"]
        lines += [f"  - {c.get('command', c) if isinstance(c, dict) else c}"
                  + (f": {c.get('error')}" if isinstance(c, dict) and c.get("error") else "")
                  for c in failed[:40]]
    warnings = crash.get("warnings") or []
    if warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in warnings[:40]]
    tail = log_tail(log)
    if tail:
        lines += ["", f"Last {len(tail)} lines of the log:"] + [f"  {t}" for t in tail]
    return "\n".join(lines) + "\n"


def build(job_id, record: dict, error: dict, to: str | None, sender: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    ident = record.get("id") or "?"
    msg["Subject"] = f"CAS job {job_id} failed: {ident} ({error.get('step') or 'unknown step'})"
    msg["From"] = sender
    if to:
        msg["To"] = to
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid("cas", domain=sender.rpartition("@")[2] or "localhost")
    text = body(job_id, record, error)
    msg.set_content(text, charset="utf-8", cte=body_cte(text))
    return msg


def notify(cfg, job_id, record: dict | None, to: str | None, error: dict | None = None) -> dict:
    """Save and send the failure message; returns {to, sent, file, reason}."""
    record = dict(record or {})
    error = error or record.get("error") or {"step": None, "kind": None, "message": "failed"}
    log = logs.get()
    try:
        if to:
            check_address(to)
        msg = build(job_id, record, error, to, cfg.mailFrom or default_sender(cfg))
    except StepError as exc:
        log.warning("failure mail not made: %s", exc.message)
        return {"to": to, "sent": False, "file": None, "reason": exc.message}
    path = None
    workdir = record.get("workdir")
    if workdir and os.path.isdir(workdir):
        path = os.path.join(workdir, "failure.eml")
        try:
            with open(path, "wb") as fh:
                fh.write(msg.as_bytes(policy=email.policy.SMTP))
        except OSError as exc:
            log.warning("%s: cannot save the failure mail: %s", path, exc.strerror)
            path = None
    result = {"to": to, "sent": False, "file": path, "reason": None}
    if not to:
        result["reason"] = "no recipient"
    elif not cfg.smtphost:
        result["reason"] = "no smtphost configured"
    else:
        result["reason"] = send_or_reason(msg, cfg)
        result["sent"] = result["reason"] is None
    if result["sent"]:
        log.info("job %s failed: told %s", job_id, to)
    elif to:
        log.warning("job %s failed; failure mail to %s not sent: %s", job_id, to, result["reason"])
    return result
