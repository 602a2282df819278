"""cas-unpack on http:// URLs, against a local http.server on loopback."""

import functools
import http.server
import os
import socket
import threading
import time

import pytest

from conftest import run
from unpack_fixtures import assert_clean_failure, compress_with, dumpish, sh, sha256


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files, plus /short/NAME (announces the full length, sends half, hangs up)
    and /stall/NAME (headers, then silence)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        for prefix in ("/short/", "/stall/"):
            if self.path.startswith(prefix):
                path = os.path.join(self.directory, self.path[len(prefix):])
                with open(path, "rb") as fh:
                    data = fh.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if prefix == "/short/":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(data[:1000])
                    self.wfile.flush()
                    time.sleep(5)
                return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Handler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.root = root
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def setup(tmp_path, casenv, config_file):
    conf = config_file()

    def unpack(*args, input=None):
        return run("cas-unpack", "--config", conf, *args, input=input, env=casenv)

    unpack.tmp, unpack.conf, unpack.work = tmp_path, conf, str(tmp_path / "work")
    unpack.data = dumpish(tmp_path / "vmcore.12345")
    return unpack


def test_tar_xz_over_http(setup, server):
    sh("tar", "-cJf", server.root / "vmcore.12345.tar.xz", "-C", setup.tmp, "vmcore.12345")
    url = f"{server.url}/vmcore.12345.tar.xz"
    res = setup("-i", "1", url)
    assert res.returncode == 0, res
    rec = res.record
    assert rec["source"] == url and rec["layers"] == ["xz", "tar"]
    assert os.path.basename(rec["core"]) == "vmcore.12345"
    assert sha256(rec["core"]) == sha256(setup.data)
    assert sorted(os.listdir(rec["workdir"])) == ["1.log", "vmcore.12345"]  # no temporary copy


def test_raw_and_zip_over_http(setup, server):
    os.link(setup.data, server.root / "vmcore.raw")
    res = setup("-i", "1", f"{server.url}/vmcore.raw")
    assert res.returncode == 0, res
    assert res.record["layers"] == [] and sha256(res.record["core"]) == sha256(setup.data)
    sh("zip", "-q", server.root / "case.zip", "vmcore.12345", cwd=setup.tmp)
    res = setup("-i", "1", f"{server.url}/case.zip")
    assert res.returncode == 0, res
    assert res.record["layers"] == ["zip"] and sha256(res.record["core"]) == sha256(setup.data)
    assert "spooling zip" in res.stderr
    assert sorted(os.listdir(res.record["workdir"])) == ["1.log", "case"]


def test_http_error(setup, server):
    res = setup("-i", "1", f"{server.url}/missing.gz")
    assert_clean_failure(res, setup.work, "download", ["HTTP 404", "missing.gz"])
    assert not os.path.exists(setup.work)  # the request failed before any directory was made


def test_short_read(setup, server):
    compress_with(["gzip", "-c"], setup.data, server.root / "vmcore.gz")
    compress_with(["zstd", "-q", "-c"], setup.data, server.root / "vmcore.zst")
    for name in ("vmcore.gz", "vmcore.zst"):
        res = setup("-i", "1", f"{server.url}/short/{name}")
        assert_clean_failure(res, setup.work, "truncated")
        message = res.record["error"]["message"]
        # the download noticed first, or the decompressor did; either names the URL
        assert "short read" in message or "truncated" in message
        assert f"/short/{name}" in message


def test_connection_refused(setup):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    res = setup("-i", "1", f"http://127.0.0.1:{port}/vmcore.gz")
    assert_clean_failure(res, setup.work, "download", ["cannot download", "refused"])


def test_stalled_download_times_out(setup, server, monkeypatch):
    """In-process with a 1 s timeout (the downloadTimeout key's default is 60 s)."""
    import caslib.config
    import caslib.records
    import caslib.unpack

    compress_with(["gzip", "-c"], setup.data, server.root / "vmcore.gz")
    monkeypatch.setenv("HOME", str(setup.tmp / "home"))
    cfg = caslib.config.load(setup.conf)
    with pytest.raises(caslib.records.StepError) as info:
        caslib.unpack.process({"id": "1", "source": f"{server.url}/stall/vmcore.gz"}, cfg,
                              timeout=1)
    assert info.value.kind == "timeout" and "stalled" in info.value.message
    left = [f for r, _d, fs in os.walk(setup.work) for f in fs if not f.endswith(".log")]
    assert left == []


def test_password_not_logged(setup, server):
    compress_with(["gzip", "-c"], setup.data, server.root / "vmcore.gz")
    url = f"http://user:secret@127.0.0.1:{server.server_address[1]}/vmcore.gz"
    res = setup("-i", "1", url)
    assert res.returncode == 0, res
    assert "secret" not in res.stderr
    with open(os.path.join(res.record["workdir"], "1.log")) as fh:
        assert "secret" not in fh.read()
