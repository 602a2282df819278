"""cas-web in a real browser (Debian's chromium, headless, through chromedriver) over a jobs
database with real jobs: the real dump done by the worker, a failed one, a queued one.

Screenshots of the list and of a report go to $CAS_SCREENSHOTS (``make screenshots``:
doc/screenshots) or the test's tmp directory."""

import base64
import http.client
import io
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import real_dump, real_shelf, run
from webdriver import Browser, CasWeb

HAVE_BROWSER = bool(shutil.which("chromium") and shutil.which("chromedriver"))
needs_browser = pytest.mark.skipif(not HAVE_BROWSER, reason="chromium and chromedriver needed")
XSS = "<script>alert(1)</script>"


def queue(conf, ident, path, *extra) -> int:
    res = run("cas", "--config", conf, "--queue", "-i", ident, "-f", path, *extra)
    assert res.returncode == 0, res
    return int(res.stdout)


def job(conf, job_id) -> dict:
    res = run("cas-jobs", "--config", conf, "--json", job_id)
    assert res.returncode == 0, res
    return res.record


def get(url, headers=None):
    """(status, body, headers) of a GET, the path sent as given (no normalisation)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def post(url, body: bytes, ctype: str, headers=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def site(realdump, tmp_path_factory):
    """Three real jobs: the real dump done, a dump that is none failed, one still queued."""
    top = tmp_path_factory.mktemp("website")
    shelf = real_shelf(realdump, top)
    conf = top / "cas.conf"
    conf.write_text(
        "[settings]\n"
        f"kernels = {shelf}\nworkDirectory = {top / 'work'}\ndatabase = {top / 'cas.db'}\n"
        f"debugs = {top / 'debugs'}\nmaxUpload = 64M\n")
    conf = str(conf)
    assert run("cas-admin", "--config", conf, "-q").returncode == 0
    real = real_dump(realdump, "makedumpfile-zlib")
    done = queue(conf, "real1", real)
    bad = top / "vmcore.notadump"
    bad.write_bytes(os.urandom(8192))
    failed = queue(conf, "bad1", str(bad))
    res = run("cas-worker", "--config", conf, "--once", timeout=1800)
    assert res.returncode == 0, res
    jobs = {"done": job(conf, done), "failed": job(conf, failed)}
    assert jobs["done"]["state"] == "done" and jobs["failed"]["state"] == "failed"
    # what a customer controls lands in the job's log: here, markup
    with open(os.path.join(jobs["failed"]["workdir"], "bad1.log"), "a") as fh:
        fh.write(f"2026-12-03 10:00:00 cas-ident ERROR: task name {XSS}\n")
    jobs["queued"] = job(conf, queue(conf, "wait1", real))
    # a job directory that is a symlink out, and a symlink out inside a real one
    os.symlink("/etc", top / "work" / "real1" / "2020.01.01.00.00.00")
    os.symlink("/etc/passwd", os.path.join(jobs["done"]["workdir"], "passwd"))
    shots = os.environ.get("CAS_SCREENSHOTS") or str(top / "screenshots")
    os.makedirs(shots, exist_ok=True)
    with CasWeb(conf) as web:
        yield {"conf": conf, "top": top, "jobs": jobs, "web": web, "url": web.url,
               "real": real, "shots": shots}


@pytest.fixture(scope="module")
def browser():
    if not HAVE_BROWSER:
        pytest.skip("chromium and chromedriver needed")
    with Browser() as b:
        yield b


def href(j: dict) -> str:
    return "/jobs/{}/{}/".format(*j["workdir"].rstrip("/").split("/")[-2:])


@needs_browser
def test_list_shows_the_three_states(site, browser):
    browser.get(site["url"] + "/")
    table = browser.script("return [...document.querySelectorAll('#jobs tbody tr')]"
                           ".map(tr => [...tr.cells].map(c => c.textContent));")
    rows = {cells[1]: cells for cells in table}
    assert {r[3] for r in rows.values()} == {"done", "failed", "queued"}
    assert rows["real1"][3] == "done" and rows["real1"][5] == "sysrq triggered crash"
    assert rows["real1"][6] == "sysrq" and rows["real1"][7].startswith("sysrq_handle_crash")
    assert rows["real1"][8].startswith("sysrq:")
    assert rows["bad1"][3] == "failed" and "[cas-ident]" in rows["bad1"][5]
    assert rows["wait1"][3] == "queued"
    # newest first, and a queued job refreshes the page
    assert list(rows) == ["wait1", "bad1", "real1"]
    assert 'http-equiv="refresh"' in browser.source()
    browser.get(site["url"] + "/?state=failed")
    assert [browser.text(td) for td in browser.find_all("#jobs tbody td:nth-child(2)")] == ["bad1"]
    browser.get(site["url"] + "/?q=sysrq:")
    assert [browser.text(td) for td in browser.find_all("#jobs tbody td:nth-child(2)")] == ["real1"]
    browser.get(site["url"] + "/")
    browser.screenshot(os.path.join(site["shots"], "jobs.png"))


@needs_browser
def test_report_page(site, browser):
    done = site["jobs"]["done"]
    browser.get(site["url"] + "/")
    browser.submit(browser.find(f'#jobs a[href="{href(done)}"]'))
    assert browser.url() == site["url"] + href(done)
    summary = browser.text(browser.find("dl.summary"))
    assert "sysrq triggered crash" in summary and "sysrq_handle_crash" in summary
    trace = browser.text(browser.find("pre.backtrace"))
    assert "sysrq_handle_crash" in trace.splitlines()[:4]
    assert browser.find_all("pre.backtrace .unreliable")  # crash's stale frames, greyed
    marked = [browser.text(e) for e in browser.find_all("pre.kernlog .hl")]
    assert any("Kernel panic - not syncing: sysrq triggered crash" in m for m in marked)
    mail = browser.script("return document.querySelector('pre.mail').textContent;")
    assert "CAS results for real1" in mail and "Subject: CAS results for real1" in mail
    names = [browser.text(a) for a in browser.find_all("ul.files a")]
    assert {"crash.out", "real1.log", "record.json", "report.html", "vmcore.makedumpfile-zlib"} <= set(names)
    assert "passwd" not in names  # a symlink, not a file of the job
    browser.screenshot(os.path.join(site["shots"], "report.png"))
    status, body, headers = get(site["url"] + href(done) + "crash.out")
    with open(os.path.join(done["workdir"], "crash.out"), "rb") as fh:
        assert status == 200 and body == fh.read()
    assert headers["Content-Type"].startswith("text/plain")
    status, body, headers = get(site["url"] + href(done) + "vmcore.makedumpfile-zlib")
    assert status == 200 and len(body) == os.path.getsize(site["real"])
    assert headers["Content-Disposition"].startswith("attachment")
    # the same report kept in the job directory, self-contained
    with open(os.path.join(done["workdir"], "report.html")) as fh:
        page = fh.read()
    assert "sysrq triggered crash" in page and "<link" not in page and "<script" not in page
    status, body, _ = get(site["url"] + "/api" + href(done).rstrip("/"))
    data = json.loads(body)
    assert status == 200 and data["job"]["job_id"] == done["job_id"]
    assert data["record"]["triage"]["kind"] == "sysrq"


@needs_browser
def test_markup_from_a_log_is_text(site, browser):
    failed = site["jobs"]["failed"]
    browser.get(site["url"] + f"/job/{failed['job_id']}")
    assert browser.url() == site["url"] + href(failed)
    log = browser.script("return document.getElementById('joblog').textContent;")
    assert f"task name {XSS}" in log
    assert browser.script("return document.scripts.length;") == 0
    assert browser.script("return document.querySelectorAll('#joblog *').length;") == 0
    assert browser.alert_text() is None
    assert "cas-ident" in browser.text(browser.find("div.err"))
    assert browser.find_all("#rerun") and not browser.find_all("#cancel")


def test_paths_outside_the_job_directories_are_404(site):
    url, done = site["url"], site["jobs"]["done"]
    stamp = href(done).split("/")[3]
    for path in ("/jobs/../../etc/passwd", "/jobs/real1/../../../etc/passwd",
                 "/jobs/%2e%2e/%2e%2e/etc/passwd", f"/jobs/real1/{stamp}/../../../../etc/passwd",
                 f"/jobs/real1/{stamp}/%2e%2e/%2e%2e/%2e%2e/cas.conf",
                 f"/jobs/real1/{stamp}/..%2f..%2f..%2fcas.conf",
                 "/jobs/real1/2020.01.01.00.00.00/", "/jobs/real1/2020.01.01.00.00.00/passwd",
                 f"/jobs/real1/{stamp}/passwd", "/jobs/real1/not-a-stamp/",
                 "/api/jobs/real1/2020.01.01.00.00.00", "/etc/passwd"):
        status, body, _ = get(url + path)
        assert status == 404, (path, status)
        assert b"root:" not in body
    assert get(url + f"/jobs/real1/{stamp}/crash.out")[0] == 200


def token(site) -> str:
    return json.loads(get(site["url"] + "/api/token")[1])["csrf"]


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "----casweb" + base64.b16encode(os.urandom(8)).decode()
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                  f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def test_post_without_the_token_is_refused(site):
    url, conf = site["url"], site["conf"]
    queued = site["jobs"]["queued"]["job_id"]
    for body in (b"", b"csrf=0123", f"csrf={token(site)}x".encode()):
        status, _ = post(url + f"/job/{queued}/cancel", body, "application/x-www-form-urlencoded")
        assert status == 403
    assert job(conf, queued)["state"] == "queued"
    status, _ = post(url + "/api/jobs", json.dumps({"identifier": "x1", "url": "http://127.0.0.1:1/v"})
                     .encode(), "application/json")
    assert status == 403
    body, ctype = multipart({"identifier": "x2"}, {"upload": ("vmcore", b"A" * 100000)})
    status, _ = post(url + "/submit", body, ctype)
    assert status == 403
    uploads = os.path.join(site["top"], "work", ".uploads")
    assert not os.path.isdir(uploads) or not any(os.scandir(uploads))  # nothing kept
    # a GET changes nothing
    assert get(url + f"/job/{queued}/cancel")[0] == 404
    assert [j["identifier"] for j in run("cas-jobs", "--config", conf, "--json").records] == \
        ["real1", "bad1", "wait1"]


def test_upload_larger_than_max_upload_is_refused(site):
    body, ctype = multipart({"csrf": token(site), "identifier": "big1"},
                            {"upload": ("vmcore", b"\0" * (64 * 1024 * 1024 + 1))})
    status, page = post(site["url"] + "/submit", body, ctype)
    assert status == 413, page[-300:]
    uploads = os.path.join(site["top"], "work", ".uploads")
    assert not os.path.isdir(uploads) or not any(os.scandir(uploads))


def test_api_queues_a_url(site):
    """POST /api/jobs with the token: a URL served on loopback is checked and queued."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=os.path.dirname(site["real"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = f"http://127.0.0.1:{server.server_port}/{os.path.basename(site['real'])}"
        body = json.dumps({"identifier": "api1", "email": "eng@example.com", "url": source})
        status, out = post(site["url"] + "/api/jobs", body.encode(), "application/json",
                           {"X-CSRF-Token": token(site)})
        assert status == 201, out
        queued = json.loads(out)
        assert queued["state"] == "queued" and queued["options"]["file"] == source
        status, out = post(site["url"] + "/api/jobs", json.dumps(
            {"identifier": "../x", "url": source}).encode(), "application/json",
            {"X-CSRF-Token": token(site)})
        assert status == 400 and b"bad identifier" in out
    finally:
        server.shutdown()
        server.server_close()
    res = run("cas-jobs", "--config", site["conf"], "--cancel", queued["job_id"])
    assert res.returncode == 0, res


@needs_browser
def test_submit_form_queues_a_job_the_worker_runs(site, browser):
    url, conf = site["url"], site["conf"]
    waiting = site["jobs"]["queued"]
    browser.get(url + f"/job/{waiting['job_id']}")
    browser.click(browser.find("#cancel"))  # the Cancel form
    deadline = time.monotonic() + 60  # the click returns before the form's POST has ended
    while job(conf, waiting["job_id"])["state"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job(conf, waiting["job_id"])["state"] == "cancelled"
    browser.get(url + "/submit")
    browser.type(browser.find('input[name="identifier"]'), "web1")
    browser.type(browser.find('input[name="upload"]'), site["real"])
    browser.submit(browser.find("#queue"))
    new_id = int(browser.url().rsplit("/", 1)[1])
    new = job(conf, new_id)
    assert new["state"] == "queued" and new["identifier"] == "web1"
    assert new["source"].startswith(os.path.join(site["top"], "work", ".uploads") + os.sep)
    with open(new["source"], "rb") as got, open(site["real"], "rb") as want:
        assert got.read() == want.read()
    assert "queued" in browser.text(browser.find("span.state"))
    res = run("cas-worker", "--config", conf, "--once", timeout=1800)
    assert res.returncode == 0, res
    done = job(conf, new_id)
    assert done["state"] == "done" and done["panic"] == "sysrq triggered crash"
    browser.get(url + f"/job/{new_id}")
    assert browser.url() == url + href(done)
    assert "sysrq triggered crash" in browser.text(browser.find("dl.summary"))
    # the Rerun form, with a release forced
    failed = site["jobs"]["failed"]
    browser.get(url + href(failed))
    browser.type(browser.find('input[name="release"]'), "6.1.0-0-none")
    browser.submit(browser.find("#rerun"))
    again = job(conf, int(browser.url().rsplit("/", 1)[1]))
    assert again["rerun_of"] == failed["job_id"] and again["state"] == "queued"
    assert again["options"]["release"] == "6.1.0-0-none"
    assert run("cas-jobs", "--config", conf, "--cancel", again["job_id"]).returncode == 0


def test_non_loopback_needs_web_users(tmp_path, config_file):
    conf = config_file()
    res = run("cas-web", "--config", conf, "--listen", "0.0.0.0:8080", timeout=60)
    assert res.returncode == 2 and "without webUsers" in res.stderr, res
    assert "Traceback" not in res.stderr
    res = run("cas-web", "--config", conf, "--add-user", "alice", input="secret\n")
    assert res.returncode == 2 and "webUsers" in res.stderr
    users = tmp_path / "web-users"
    conf = config_file(webUsers=str(users))
    res = run("cas-web", "--config", conf, "--add-user", "alice", input="s3cret pass\n")
    assert res.returncode == 0, res
    line = users.read_text()
    assert line.startswith("alice:pbkdf2_sha256$") and "s3cret" not in line
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    res = run("cas-web", "--config", conf, "--add-user", "../x", input="pw\n")
    assert res.returncode == 2 and "bad user name" in res.stderr
    with CasWeb(conf) as web:  # with webUsers, loopback asks for a password too
        assert get(web.url + "/")[0] == 401
        bad = base64.b64encode(b"alice:wrong").decode()
        assert get(web.url + "/", {"Authorization": f"Basic {bad}"})[0] == 401
        good = base64.b64encode(b"alice:s3cret pass").decode()
        status, body, headers = get(web.url + "/", {"Authorization": f"Basic {good}"})
        assert status == 200 and b"<h1>Jobs</h1>" in body
        assert "script-src" not in headers["Content-Security-Policy"]
    res = run("cas-web", "--config", conf, "--listen", "localhost:notaport")
    assert res.returncode == 2 and "HOST:PORT" in res.stderr
