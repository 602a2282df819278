"""cas-web's parts without a browser: the streamed multipart reader, the webUsers hashes,
the HTML escaping of the report, and a server that a silent client does not hold up."""

import io
import os
import socket

import pytest

from caslib.messages import htmlreport
from caslib.web import webauth, webupload
from caslib.records import StepError
from webdriver import CasWeb


class Trickle(io.RawIOBase):
    """A socket-like stream that hands out at most ``n`` bytes per read."""

    def __init__(self, data: bytes, n: int):
        self.data, self.n = data, n

    def read(self, size=-1):
        size = self.n if size < 0 else min(size, self.n)
        out, self.data = self.data[:size], self.data[size:]
        return out


def form(boundary: str, payload: bytes, token: str = "t0k") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"identifier\"\r\n\r\nINC-7\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; "
            f"filename=\"C:\\\\dumps\\\\../vmcore.gz\"\r\n\r\n").encode() + payload + \
        f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_multipart_streams_the_file_whatever_the_chunks(tmp_path, chunk):
    boundary = "xYz-123"
    # the payload holds the boundary's start and CRLFs: only the whole delimiter ends it
    payload = os.urandom(3000) + b"\r\n--xYz-12" + os.urandom(100) + b"\r\n--" + os.urandom(50)
    body = form(boundary, payload)
    seen = []

    def open_file(name):
        seen.append(name)
        path = tmp_path / webupload.safe_filename(name)
        return str(path), open(path, "xb")

    fields, path = webupload.parse(Trickle(body, chunk), len(body),
                                   f"multipart/form-data; boundary={boundary}", open_file, 10000,
                                   lambda f: seen.append(dict(f)))
    assert fields == {"csrf": "t0k", "identifier": "INC-7"}
    assert seen == [{"csrf": "t0k", "identifier": "INC-7"}, "C:\\\\dumps\\\\../vmcore.gz"]
    assert os.path.basename(path) == "vmcore.gz"
    with open(path, "rb") as fh:
        assert fh.read() == payload


def test_multipart_limits(tmp_path):
    boundary = "b"
    body = form(boundary, b"A" * 5000)

    def open_file(name):
        path = tmp_path / "up"
        return str(path), open(path, "wb")

    ctype = "multipart/form-data; boundary=b"
    with pytest.raises(StepError) as exc:
        webupload.parse(io.BytesIO(body), len(body), ctype, open_file, 4999)
    assert exc.value.kind == "too-large"
    with pytest.raises(StepError, match="ends early"):
        webupload.parse(io.BytesIO(body[:-30]), len(body) - 30, ctype, open_file, 10000)
    with pytest.raises(StepError, match="boundary"):
        webupload.parse(io.BytesIO(body), len(body), "multipart/form-data", open_file, 10000)

    def refuse(_fields):
        raise StepError("no token", "csrf")

    opened = []
    with pytest.raises(StepError, match="no token"):
        webupload.parse(io.BytesIO(body), len(body), ctype, lambda n: opened.append(n), 10000, refuse)
    assert opened == []  # refused before a byte of the file was written
    for bad, want in (("../../etc/passwd", "passwd"), ("..", "upload"), ("", "upload"),
                      ("a b<c>.vmcore", "a_b_c_.vmcore"), (".hidden", "hidden")):
        assert webupload.safe_filename(bad) == want


def test_passwords_and_tokens(tmp_path):
    stored = webauth.hash_password("correct horse", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert webauth.verify_password("correct horse", stored)
    assert not webauth.verify_password("wrong", stored)
    assert not webauth.verify_password("x", "pbkdf2_sha256$1$00$00")  # too few rounds: refused
    assert not webauth.verify_password("x", "garbage")
    path = tmp_path / "users"
    webauth.add_user(str(path), "bob", "pw1")
    webauth.add_user(str(path), "alice", "pw2")
    webauth.add_user(str(path), "bob", "pw3")
    users = webauth.load_users(str(path))
    assert sorted(users) == ["alice", "bob"] and webauth.verify_password("pw3", users["bob"])
    path.write_text("alice\n")
    with pytest.raises(StepError, match=r"users:1: expected"):
        webauth.load_users(str(path))
    gate = webauth.Gate({"bob": stored})
    import base64

    header = "Basic " + base64.b64encode(b"bob:correct horse").decode()
    assert gate.user(header) == "bob" and gate.user("Basic !!!") is None and gate.user(None) is None
    assert gate.token_ok("bob", gate.token("bob")) and not gate.token_ok("eve", gate.token("bob"))
    assert not gate.token_ok("bob", None)
    assert webauth.Gate(None).user(None) == ""
    assert webauth.is_loopback("127.0.0.2") and webauth.is_loopback("::1")
    assert not webauth.is_loopback("0.0.0.0") and not webauth.is_loopback("example.org")


def test_report_escapes_everything_from_the_dump(tmp_path):
    workdir = tmp_path / "work" / "j1" / "2026.12.03.10.00.00"
    workdir.mkdir(parents=True)
    log = workdir / "log"
    log.write_text("[ 1.0] <b>boot</b>\n[ 2.0] Kernel panic - not syncing: <script>x()</script>\n")
    outside = tmp_path / "secret"
    outside.write_text("root-only secret\n")
    record = {"id": "<i>", "job": "j1", "workdir": str(workdir),
              "kernel": {"release": "<img src=x onerror=y>"},
              "crash": {"files": {"log": str(log), "evil": str(outside), "bad": 7},
                        "panic": {"message": "<script>x()</script>", "task": "\"><svg>",
                                  "backtrace": ["<a>"]}},
              "triage": {"kind": "<k>", "trust": ["<t>"], "backtrace": ["f<1>"], "unreliable": "no"}}
    page = htmlreport.render(record)
    assert "<script>" not in page and "<img" not in page and "<svg>" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "f&lt;1&gt;" in page
    assert '<span class="hl">[ 2.0] Kernel panic - not syncing: &lt;script&gt;' in page
    assert "root-only secret" not in page  # a result path outside the job directory is not read
    assert htmlreport.save(record) == str(workdir / "report.html")


def test_a_silent_client_does_not_hold_up_the_others(config_file):
    with CasWeb(config_file()) as web, socket.create_connection(("127.0.0.1", web.port)) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        import urllib.request

        # served on its own thread meanwhile (a server that waited would time this out)
        with urllib.request.urlopen(web.url + "/api/jobs", timeout=30) as resp:
            assert resp.status == 200 and resp.read().strip() == b"[]"
