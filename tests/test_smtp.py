"""SMTP the way sites run it, against aiosmtpd on loopback: STARTTLS, implicit TLS (smtps),
AUTH with a password file, a plain-text 8bit body, and cas-mail --resend -e."""

import email
import email.policy
import os
import ssl
import subprocess

import pytest

from conftest import SmtpCollector, free_port, run
from test_mail import job  # noqa: F401  (the fixture: a job directory with crash output)

USER, PASSWORD = "casmail", "s3cret pass"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made by openssl."""
    top = tmp_path_factory.mktemp("tls")
    key, crt = top / "key.pem", top / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return {"key": str(key), "cert": str(crt)}


class AuthSmtp(SmtpCollector):
    """aiosmtpd with AUTH (PLAIN/LOGIN) and either STARTTLS (required) or implicit TLS."""

    def __init__(self, cert, implicit: bool):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages, self.logins = [], []
        self.hostport = f"127.0.0.1:{free_port()}"
        host, port = self.hostport.split(":")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert["cert"], cert["key"])

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
            self.logins.append((mechanism, auth_data.login, ok))
            return AuthResult(success=ok)

        if implicit:
            class Smtps(Controller):
                def _trigger_server(self):  # the stock check would speak TLS as a server
                    client = ssl.create_default_context(cafile=cert["cert"])
                    import socket
                    with socket.create_connection((host, int(port)), 2.0) as raw, \
                            client.wrap_socket(raw, server_hostname=host) as s:
                        s.recv(1024)

            self.controller = Smtps(self, hostname=host, port=int(port), ssl_context=ctx,
                                    authenticator=authenticator, auth_require_tls=False)
        else:
            self.controller = Controller(self, hostname=host, port=int(port), tls_context=ctx,
                                         require_starttls=True, authenticator=authenticator,
                                         auth_require_tls=True)

    async def handle_DATA(self, server, session, envelope):
        envelope.authenticated = session.authenticated
        envelope.tls = server.transport.get_extra_info("sslcontext") is not None or \
            session.ssl is not None
        self.messages.append(envelope)
        return "250 OK"


def password_file(tmp_path, mode=0o600):
    path = tmp_path / "smtp.pass"
    path.write_text(PASSWORD + "\n")
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_auth_over_tls(implicit, cert, job, config_file, casenv, tmp_path):  # noqa: F811
    with AuthSmtp(cert, implicit) as server:
        host, port = server.hostport.split(":")
        cfg = config_file(smtphost=host, smtpPort=port, smtpTls="tls" if implicit else "starttls",
                          smtpUser=USER, smtpPasswordFile=password_file(tmp_path),
                          smtpCaFile=cert["cert"], mailFrom="cas@example.org")
        res = run("cas-mail", "--config", cfg, "-e", "engineer@example.com", input=job, env=casenv)
        assert res.returncode == 0, res
        assert res.record["mail"]["sent"] is True
        assert len(server.messages) == 1 and server.messages[0].authenticated
        assert server.messages[0].tls
        assert [ok for _, _, ok in server.logins] == [True]


def test_an_untrusted_certificate_is_refused(cert, job, config_file, casenv, tmp_path):  # noqa: F811
    with AuthSmtp(cert, implicit=False) as server:
        cfg = config_file(smtphost=server.hostport, smtpUser=USER,
                          smtpPasswordFile=password_file(tmp_path))
        res = run("cas-mail", "--config", cfg, "-e", "engineer@example.com", input=job, env=casenv)
        assert res.returncode == 1
        assert res.record["error"]["kind"] == "smtp" and "certificate" in res.record["error"]["message"]
        assert server.messages == [] and server.logins == []


def test_a_password_file_others_can_read_is_refused(cert, job, config_file, casenv, tmp_path):  # noqa: F811
    with AuthSmtp(cert, implicit=False) as server:
        cfg = config_file(smtphost=server.hostport, smtpUser=USER, smtpCaFile=cert["cert"],
                          smtpPasswordFile=password_file(tmp_path, 0o644))
        res = run("cas-mail", "--config", cfg, "-e", "engineer@example.com", input=job, env=casenv)
        assert res.returncode == 1, res
        message = res.record["error"]["message"]
        assert "readable by group or others" in message and "644" in message
        assert server.messages == [] and server.logins == []


def test_no_password_in_clear(job, config_file, casenv, tmp_path):  # noqa: F811
    with SmtpCollector() as server:  # offers no STARTTLS
        cfg = config_file(smtphost=server.hostport, smtpUser=USER,
                          smtpPasswordFile=password_file(tmp_path))
        res = run("cas-mail", "--config", cfg, "-e", "engineer@example.com", input=job, env=casenv)
        assert res.returncode == 1
        assert "unencrypted" in res.record["error"]["message"]
        assert server.messages == []


def test_the_body_is_8bit_plain_text(job, config_file, casenv):  # noqa: F811
    job["crash"]["failed_commands"] = [{"command": "mod -S", "error": "mod: cannot find modules"}]
    job["crash"]["warnings"] = ["WARNING: kernel version inconsistency"]
    with open(job["crash"]["output"], "a") as fh:
        fh.write("  comm: \"kworker/ü\" " + "x" * 200 + "\n")
    with SmtpCollector() as server:
        cfg = config_file(smtphost=server.hostport)
        res = run("cas-mail", "--config", cfg, "-e", "a@example.com", input=job, env=casenv)
        assert res.returncode == 0, res
        raw = server.messages[0].content
    # multipart/alternative: the text/plain part comes first, 8bit, never quoted-printable
    plain = raw[raw.index(b"Content-Type: text/plain"):]
    head, _, body = plain.partition(b"\r\n\r\n")
    assert b"Content-Transfer-Encoding: 8bit" in head
    assert b"quoted-printable" not in head
    assert "kworker/ü".encode() in body and b"x" * 200 in body
    assert body.index(b"Kernel:") < body.index(b"Output data:")  # summary first
    assert body.index(b"Failed crash commands:\r\n    mod -S: mod: cannot find modules") < \
        body.index(b"Warnings:\r\n    WARNING: kernel version inconsistency") < body.index(b"Output data:")


def test_resend_to_another_address(job, config_file, casenv):  # noqa: F811
    with SmtpCollector() as server:
        saved_only = config_file()
        res = run("cas-mail", "--config", saved_only, input=job, env=casenv)  # no recipient
        assert res.returncode == 0 and res.record["mail"]["sent"] is False
        cfg = config_file(smtphost=server.hostport)
        res = run("cas-mail", "--config", cfg, "--resend", job["workdir"], env=casenv)
        assert res.returncode == 2 and "no recipient" in res.stderr and "Traceback" not in res.stderr
        res = run("cas-mail", "--config", cfg, "--resend", job["workdir"], "-e", "other@example.com",
                  env=casenv)
        assert res.returncode == 0, res
        assert res.record["mail"]["to"] == "other@example.com" and res.record["mail"]["sent"]
        assert server.messages[-1].rcpt_tos == ["other@example.com"]
        msg = email.message_from_bytes(server.messages[-1].content, policy=email.policy.default)
        assert msg["To"] == "other@example.com"
        res = run("cas-mail", "--config", cfg, "--resend", job["workdir"], "-e", "bad address",
                  env=casenv)
        assert res.returncode == 2
