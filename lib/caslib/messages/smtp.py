"""Sending a message the way sites run their relays: port, STARTTLS, implicit TLS, AUTH.

Keys: ``smtphost`` (``host[:port]``), ``smtpPort`` (when smtphost names no
port), ``smtpTls`` (``auto``: STARTTLS when offered; ``starttls``: STARTTLS
required; ``tls``: implicit TLS, port 465 by default; ``none``: plain),
``smtpCaFile`` (certificates to trust besides the system's), ``smtpUser``
and ``smtpPasswordFile`` (first line; refused when group or others can read it).
A password is never sent over a connection that is not encrypted unless
``smtpTls = none`` says the site wants that.
"""

import os
import smtplib
import ssl
import stat

from caslib.records import StepError

TLS_MODES = ("auto", "starttls", "tls", "none")


def host_port(cfg) -> tuple[str, int]:
    hostport = cfg.smtphost
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        try:
            return host, int(port)
        except ValueError:
            raise StepError(f"smtphost {hostport!r}: port is not a number", "usage") from None
    mode = cfg.get("smtpTls") or "auto"
    return hostport, cfg.get("smtpPort") or (465 if mode == "tls" else 25)


def read_password(path: str) -> str:
    """The first line of ``path``; the file must be readable by its owner only."""
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise StepError(f"{path}: smtpPasswordFile is readable by group or others "
                                f"(mode {stat.S_IMODE(mode):o}); chmod 600 it", "permission")
            line = fh.readline(4097)
    except OSError as exc:
        raise StepError(f"{path}: cannot read smtpPasswordFile: {exc.strerror}",
                        "permission") from None
    password = line.rstrip("\r\n")
    if not password:
        raise StepError(f"{path}: smtpPasswordFile is empty", "usage")
    return password


def tls_context(cfg) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cfg.get("smtpCaFile"))


def deliver(msg, cfg, timeout: float = 60.0) -> None:
    """Send ``msg`` through the configured relay; smtplib/OSError/StepError on trouble."""
    host, port = host_port(cfg)
    mode = cfg.get("smtpTls") or "auto"
    user = cfg.get("smtpUser")
    password = read_password(cfg.smtpPasswordFile) if user and cfg.get("smtpPasswordFile") else None
    if user and password is None:
        raise StepError("smtpUser is set but smtpPasswordFile is not", "usage")
    if mode == "tls":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls_context(cfg))
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        encrypted = mode == "tls"
        if mode in ("auto", "starttls"):
            if smtp.has_extn("starttls"):
                smtp.starttls(context=tls_context(cfg))
                smtp.ehlo()
                encrypted = True
            elif mode == "starttls":
                raise StepError(f"{host}:{port} does not offer STARTTLS (smtpTls = starttls)",
                                "smtp")
        if user:
            if not encrypted and mode != "none":
                raise StepError(f"{host}:{port}: refusing to send the SMTP password unencrypted "
                                "(no STARTTLS offered; set smtpTls = tls or none)", "smtp")
            smtp.login(user, password)
        options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
        smtp.send_message(msg, mail_options=options)
