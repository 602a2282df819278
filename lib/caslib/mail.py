"""cas-mail: mail the first analysis of a job to the engineer who asked for it.

Reads records (from cas-crash) and adds ``mail``: ``{to, sent, message_id,
file, reason}``.  The message is an RFC 5322 text mail built with the
standard library: ``Subject: CAS results for <job>``, a short summary
(kernel, host, crash time, panic, task) above the original CAS body
(``Location:``, ``Server:``, ``Output data:`` with the crash output).  A copy
is always kept as ``mail.eml`` in the job directory; it is sent through
``smtphost`` (STARTTLS when offered) when one is configured.  An SMTP
failure keeps the results on disk and says ``sent: false`` with the reason;
``cas-mail --resend JOBDIR`` sends the saved message later.

Nothing read from the dump goes into a header: the recipient is validated,
the job name was validated when the job was made, everything else is body.

With a ``triage`` (cas-triage) the mail starts with its five-line summary (a
"Known issue:" line first when one matched) and lists the result files.

Keys read: ``job``, ``id``, ``workdir``, ``kernel``, ``crash``, ``triage``, ``email``
(the address, when ``-e`` is not given).  Error records pass through
untouched, as for every filter, except one: an error of cas-findkernel,
cas-extract or cas-crash on a record that carries ``dmesg`` (cas-dmesg's
log) is mailed as a log-only report (logonly.py) and the record goes on
with ``analysis: "log-only"`` and the error as ``analysis_error``; other
records get ``analysis: "full"``.
"""

import email.policy
import email.utils
import functools
import os
import re
import smtplib
import socket
import sys
from email.message import EmailMessage

from caslib import atomicfile, cli, deadline, jobdir, logs, records
from caslib.dumps import kdumpdir
from caslib.messages import htmlreport, logonly, smtp, summary
from caslib.records import StepError

PROG = "cas-mail"
MAX_BODY_OUTPUT = 512 * 1024
# A deliberately plain address syntax: local@domain, no comments, quotes or spaces.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_address(address) -> str:
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address) or ".." in address:
        raise StepError(f"bad email address {address!r}: expected user@domain", "usage")
    return address


def default_sender(cfg) -> str:
    host = socket.getfqdn() or "localhost"
    if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        host = "localhost"
    user = cfg.casuser if jobdir.is_valid_name(cfg.casuser) else "cas"
    return f"{user}@{host}"


RESULT_ORDER = ("traceback", "sys", "log", "modules", "memory")


def _output_data(crash: dict) -> str:
    """The crash results for the mail: the split files in the seed's order, then crash.out.

    Redirected commands write only to their result file, so crash.out alone
    would miss the backtrace.  The whole is cut at MAX_BODY_OUTPUT.
    """
    files = dict(crash.get("files") or {})
    parts = [(name, files.get(name)) for name in RESULT_ORDER if files.get(name)]
    parts.append(("crash.out", crash.get("output")))
    text, budget = [], MAX_BODY_OUTPUT
    for name, path in parts:
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read(budget + 1)
        except OSError as exc:
            text.append(f"==> {name}: unreadable: {exc.strerror}\n")
            continue
        cut = len(data) > budget
        data = data[:budget]
        budget -= len(data)
        chunk = data.decode("utf-8", "replace")
        text.append(f"==> {name} <==\n{chunk}" + ("" if chunk.endswith("\n") else "\n"))
        if cut:
            text.append(f"[... cut at {MAX_BODY_OUTPUT // 1024} KiB; the whole output is in "
                        f"{os.path.dirname(path)}]\n")
            break
    return "\n".join(text) if text else "(no crash output)\n"


def body(record: dict) -> str:
    """The text of the mail: a summary for a person, then the original CAS body."""
    if record.get("analysis") == "log-only":
        return logonly.body(record)
    kernel = record.get("kernel") or {}
    crash = record.get("crash") or {}
    panic = crash.get("panic") or {}
    task = None
    if panic.get("task") or panic.get("pid") is not None:
        task = f"{panic.get('task') or '?'} (pid {panic.get('pid')}, cpu {panic.get('cpu')})"
    triage = record.get("triage") if isinstance(record.get("triage"), dict) else None
    lines = (summary.lines(triage) + [""]) if triage else []
    lines += [
        f"CAS results for job {record.get('job')} (identifier {record.get('id')})",
        "",
        f"Kernel:      {kernel.get('release') or 'unknown'} ({kernel.get('machine') or '?'})",
        f"Host:        {kernel.get('hostname') or 'unknown'}",
        f"Crash time:  {kernel.get('crash_time') or 'unknown'}",
        f"Panic:       {panic.get('message') or 'unknown'}",
        f"Task:        {task or 'unknown'}",
    ]
    if panic.get("rip"):
        lines.append(f"RIP:         {panic['rip']}")
    if panic.get("backtrace") and not (triage and triage.get("backtrace")):
        lines.append("Backtrace:")  # crash's, stale frames and all: triage's replaces it
        lines += [f"    {frame}" for frame in panic["backtrace"][:12]]
    if crash.get("timed_out"):
        lines.append("Note:        crash timed out; the output is partial")
    if crash.get("degraded") and "opened_with" in crash and not crash["opened_with"]:
        lines.append(f"Note:        {crash.get('note') or 'crash could not open the dump'}")
    elif crash.get("degraded"):
        lines.append("Note:        crash could only open the dump in --minimal mode")
    elif crash.get("opened_with"):
        lines.append(f"Note:        crash could only open the dump with {crash['opened_with']}")
    split = record.get("split")
    if isinstance(split, dict) and isinstance(split.get("parts"), list):
        lines.append(f"Dump:        split by makedumpfile --split into {len(split['parts'])}"
                     " parts, all given to crash"
                     + ("" if split.get("complete") else " (a part is missing)"))
    if not panic.get("message") or crash.get("degraded"):
        quoted = kdumpdir.dmesg_panic(record)
        if quoted:
            lines.append("From vmcore-dmesg.txt:")
            lines += [f"    {line}" for line in quoted]
    failed = [c for c in crash.get("failed_commands") or [] if isinstance(c, dict)]
    if failed:
        lines.append("Failed crash commands:")
        lines += [f"    {c.get('command')}: {c.get('error')}" for c in failed[:40]]
    if crash.get("warnings"):
        lines.append("Warnings:")
        lines += [f"    {w}" for w in crash["warnings"][:40]]
    if triage:
        lines += summary.details(triage)
    lines += [
        "",
        f"Location: {record.get('workdir')}",
        f"Server: {crash.get('server') or 'localhost'}",
        "Output data:",
        "",
    ]
    return "\n".join(lines) + "\n" + _output_data(crash)


def build_message(record: dict, to: str | None, sender: str) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = f"CAS results for {jobdir.check_name(record.get('job'), 'job name')}"
    msg["From"] = sender
    if to:
        msg["To"] = to
    msg["Date"] = email.utils.formatdate(localtime=True)
    domain = sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = email.utils.make_msgid("cas", domain=domain)
    text = body(record)
    msg.set_content(text, charset="utf-8", cte=body_cte(text))
    page = htmlreport.render(record)  # the same report as report.html, for mail clients
    msg.add_alternative(page, subtype="html", charset="utf-8", cte=body_cte(page))
    return msg


def body_cte(text: str) -> str:
    """8bit, readable in less and any mail client; base64 only when a line is too long for SMTP."""
    longest = max((len(line.encode("utf-8")) for line in text.splitlines()), default=0)
    return "8bit" if longest <= 998 else "base64"


def save(msg: EmailMessage, workdir: str) -> str:
    """Write ``mail.eml`` atomically into the job directory."""
    path = os.path.join(workdir, "mail.eml")
    with atomicfile.replacing(path, perm=0o600) as fh:
        fh.write(msg.as_bytes(policy=email.policy.SMTP))
    return path


SMTP_TOTAL = 120.0  # the whole conversation, however slowly the server trickles


def send_or_reason(msg, cfg) -> str | None:
    """Send through the configured relay (smtp.py); None when sent, else the one-line reason."""
    total = min(cfg.transferDeadline, SMTP_TOTAL)
    try:
        with deadline.alarm(total, "SMTP conversation"):
            smtp.deliver(msg, cfg)
    except StepError as exc:
        return f"{cfg.smtphost}: {exc.message}"
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return f"{cfg.smtphost}: {' '.join(str(exc).split()) or type(exc).__name__}"
    return None


def process(record: dict, cfg, to: str | None = None) -> dict:
    workdir = record.get("workdir")
    if not workdir or not os.path.isdir(workdir):
        raise StepError(f"record has no job directory (workdir {workdir!r})", "bad-record")
    to = to or record.get("email")
    if to:
        check_address(to)
    msg = build_message(record, to, cfg.mailFrom or default_sender(cfg))
    path = save(msg, workdir)
    htmlreport.save(record)
    result = {"to": to, "sent": False, "message_id": msg["Message-ID"], "file": path, "reason": None}
    log = logs.get()
    if not cfg.smtphost:
        result["reason"] = "no smtphost configured: message saved only"
        log.info("no smtphost: message saved as %s", path)
    elif not to:
        result["reason"] = "no recipient (-e): message saved only"
        log.info("no recipient: message saved as %s", path)
    else:
        reason = send_or_reason(msg, cfg)
        if reason:
            record["mail"] = dict(result, reason=reason)
            raise StepError(f"mail to {to} not sent: {reason}; saved as {path}, "
                            f"send later with cas-mail --resend {workdir}", "smtp", partial=record)
        result["sent"] = True
        log.info("mailed %s to %s via %s", path, to, cfg.smtphost)
    record["mail"] = result
    record.setdefault("analysis", "full")
    return record


def resend(workdir: str, cfg, to: str | None = None) -> dict:
    """Send a job's saved ``mail.eml`` again (to ``to`` when given); returns the record to print."""
    record = {"workdir": os.path.abspath(workdir)}
    path = os.path.join(record["workdir"], "mail.eml")
    try:
        with open(path, "rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.SMTP)
    except OSError as exc:
        raise StepError(f"{path}: cannot read saved message: {exc.strerror}", "not-found") from None
    if to:
        del msg["To"]
        msg["To"] = to
    to = msg.get("To")
    if not to:
        raise records.UsageError(f"{PROG}: {path}: saved message has no recipient; give one with -e")
    if not cfg.smtphost:
        raise records.UsageError(f"{PROG}: {path}: no smtphost configured to resend through")
    reason = send_or_reason(msg, cfg)
    record["mail"] = {"to": str(to), "sent": reason is None, "message_id": msg.get("Message-ID"),
                      "file": path, "reason": reason}
    if reason:
        raise StepError(f"mail to {to} not sent: {reason}", "smtp")
    return record


def main(argv=None) -> int:
    """cas-mail's command line (man cas-mail)."""
    return records.main_wrapper(PROG, run_command, argv)


def _resent(result: "dict | StepError", _record: dict) -> dict:
    """The record of a --resend (or its failure), as the one record records.run prints."""
    if isinstance(result, StepError):
        raise result
    return result


def run_command(argv) -> int:
    parser = cli.argument_parser(
        PROG, "Mail a job's first crash analysis (records on stdin).",
        "Without smtphost the message is only written to <workdir>/mail.eml.")
    parser.add_argument("-e", "--email", metavar="ADDRESS", help="recipient (else the record's email)")
    parser.add_argument("--resend", metavar="JOBDIR", help="send the saved mail.eml of JOBDIR again")
    args = parser.parse_args(argv)
    if args.email:
        try:
            check_address(args.email)
        except StepError as exc:
            raise records.UsageError(f"{PROG}: {exc.message}") from None
    if not args.resend:
        cli.refuse_terminal(parser)
    cfg = cli.load_config(args)
    if args.resend:
        try:  # usage errors (no recipient, no smtphost) leave from here: exit 2
            result: dict | StepError = resend(args.resend, cfg, args.email)
        except StepError as exc:
            result = exc
        return records.run(PROG, functools.partial(_resent, result),
                           [{"workdir": os.path.abspath(args.resend)}])
    # an analysis step's error record that carries the kernel log is mailed as log-only
    source = (logonly.convert(r) for r in records.read_records(sys.stdin, PROG))
    return records.run(PROG, functools.partial(process, cfg=cfg, to=args.email), source,
                       trusted=False)

