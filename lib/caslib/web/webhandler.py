"""cas-web's request handler: authentication, routes, CSRF checks, responses.

Why every response carries a strict Content-Security-Policy: the pages hold text a
customer wrote (log lines, task names); it is escaped, and a browser would still run
no script from it if an escape were ever missed.
"""

import email
import email.policy
import http.server
import json
import os
import time
import urllib.parse

from caslib.messages import htmlreport
from caslib import logs
from caslib.web import webpages, webupload
from caslib.jobs import cancel, rerun
from caslib.records import StepError, UsageError
from caslib.web import copy_file, query

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
LOG_LINES = 200
MAX_JSON_BODY = 65536
MAX_MAIL = 4 << 20


class Refused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


class Handler(http.server.BaseHTTPRequestHandler):
    site = None  # set by web.serve
    server_version = "cas-web"
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        logs.get().debug("%s %s", self.address_string(), fmt % args)

    # -- responses ---------------------------------------------------------
    def send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                           "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def page(self, title: str, body: str, status: int = 200, refresh: int | None = None) -> None:
        text = htmlreport.document(title, body, refresh, webpages.nav())
        self.send(status, text.encode("utf-8"), "text/html; charset=utf-8")

    def json(self, data, status: int = 200) -> None:
        body = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
        self.send(status, body, "application/json")

    def redirect(self, where: str) -> None:
        self.send(303, b"", "text/plain", {"Location": where})

    def refuse(self, status: int, text: str) -> None:
        if self.path.startswith("/api/"):
            self.json({"error": text}, status)
        else:
            self.page(f"{status}", webpages.message(f"{status}", text), status)

    # -- dispatch ----------------------------------------------------------
    def _run(self, method: str) -> None:
        try:
            self.user = self.site.gate.user(self.headers.get("Authorization"))
            if self.user is None:
                self.send(401, b"authentication needed\n", "text/plain",
                          {"WWW-Authenticate": 'Basic realm="CAS", charset="UTF-8"'})
                return
            path, args = query(self.path)
            segments = [urllib.parse.unquote(s) for s in path.split("/")[1:]]
            if any("/" in s or "\0" in s for s in segments):
                raise Refused(404, "no such page")
            getattr(self, f"{method}_routes")(segments, args)
        except Refused as exc:
            self.refuse(exc.status, exc.text)
        except (UsageError, StepError) as exc:
            self.refuse(400, str(getattr(exc, "message", exc)).removeprefix("cas: "))
        except (ConnectionError, TimeoutError):
            raise  # the client went away or stalled: nothing to answer
        except Exception as exc:  # one line in the log, a 500 for the client, never a traceback
            logs.get().error("%s %s: %s: %s", self.command, self.path[:200], type(exc).__name__, exc)
            self.refuse(500, "internal error (see the server's log)")

    def do_GET(self):
        self._run("get")

    def do_HEAD(self):
        self._run("get")

    def do_POST(self):
        self._run("post")

    @property
    def token(self) -> str:
        return self.site.gate.token(self.user)

    def get_routes(self, seg: list, args: dict) -> None:
        site = self.site
        if seg == [""]:
            state = args.get("state") or None
            jobs = [j for j in site.jobs(state if state in webpages.STATES else None)
                    if webpages.matches(j, args.get("q", ""))]
            busy = any(j["state"] in ("queued", "running") for j in jobs)
            self.page("CAS jobs", webpages.job_list(jobs, state, args.get("q", ""), time.time()),
                      refresh=10 if busy else None)
        elif seg == ["submit"]:
            self.page("Submit a dump", webpages.submit_form(self.token, site.cfg.maxUpload))
        elif seg == ["api", "token"]:
            self.json({"csrf": self.token})
        elif seg == ["api", "jobs"]:
            jobs = site.jobs(args.get("state"))
            self.json([dict(j, record=None, triage=(j.get("record") or {}).get("triage"))
                       for j in jobs])
        elif len(seg) == 4 and seg[:2] == ["api", "jobs"]:
            workdir = site.job_dir(seg[2], seg[3]) or self._missing()
            self.json({"job": site.job_for(workdir), "record": site.record(workdir)})
        elif len(seg) == 2 and seg[0] == "job" and seg[1].isdigit():
            job = site.get_job(int(seg[1])) or self._missing()
            if job.get("workdir") and os.path.isdir(job["workdir"]):
                return self.redirect(webpages.job_href(job))
            self.job_page(job, None)
        elif len(seg) == 3 and seg[0] == "jobs":
            self.redirect(f"/jobs/{urllib.parse.quote(seg[1])}/{urllib.parse.quote(seg[2])}/")
        elif len(seg) >= 4 and seg[0] == "jobs":
            workdir = site.job_dir(seg[1], seg[2]) or self._missing()
            if seg[3:] == [""]:
                return self.job_page(site.job_for(workdir), workdir)
            self.download(site.file_in(workdir, "/".join(seg[3:])) or self._missing())
        else:
            self._missing()

    def _missing(self):
        raise Refused(404, "no such page")

    def job_page(self, job: dict | None, workdir: str | None) -> None:
        record = self.site.record(workdir) if workdir else None
        files, tail, mail_text = [], [], None
        if workdir:
            with os.scandir(workdir) as entries:
                files = sorted((e.name, e.stat().st_size) for e in entries
                               if not e.name.startswith(".") and e.is_file(follow_symlinks=False))
            name = os.path.basename(os.path.dirname(workdir))
            got = htmlreport.read_inside(workdir, os.path.join(workdir, f"{name}.log"), 65536, True)
            tail = got[0].splitlines()[-LOG_LINES:] if got else []
            mail_text = self.mail_text(workdir)
        busy = bool(job) and job.get("state") in ("queued", "running")
        title = f"CAS job {(job or {}).get('job_id') or os.path.basename(workdir or '')}"
        self.page(title, webpages.job_page(job, record, workdir, files, tail, mail_text, self.token),
                  refresh=10 if busy else None)

    @staticmethod
    def mail_text(workdir: str) -> str | None:
        got = htmlreport.read_inside(workdir, os.path.join(workdir, "mail.eml"), MAX_MAIL)
        if not got or got[1]:
            return None
        msg = email.message_from_string(got[0], policy=email.policy.default)
        part = msg.get_body(("plain",))
        head = "".join(f"{k}: {msg[k]}\n" for k in ("From", "To", "Subject", "Date") if msg[k])
        try:
            return head + "\n" + (part.get_content() if part else "")
        except (LookupError, ValueError):
            return head

    def download(self, path: str) -> None:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(4096)
        text = b"\0" not in head and not path.endswith((".html", ".htm"))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        if not text:
            self.send_header("Content-Disposition",
                             f"attachment; filename=\"{webupload.safe_filename(path)}\"")
        self.end_headers()
        if self.command != "HEAD":
            copy_file(path, self.wfile)

    # -- state changes: POST with the token --------------------------------
    def form(self) -> dict:
        length = self._length(65536)
        if not (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            raise Refused(415, "expected a form")
        data = self.rfile.read(length).decode("utf-8", "replace")
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(data).items()}
        self.check_token(fields.get("csrf"))
        return fields

    def _length(self, limit: int) -> int:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise Refused(411, "a request body needs Content-Length") from None
        if length < 0 or length > limit:
            raise Refused(413, f"the request body is larger than {limit:,} bytes")
        return length

    def check_token(self, value) -> None:
        if not self.site.gate.token_ok(self.user, value):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")

    def post_routes(self, seg: list, args: dict) -> None:
        site = self.site
        if seg == ["submit"]:
            return self.post_submit()
        if seg == ["api", "jobs"]:
            self.check_token(self.headers.get("X-CSRF-Token"))
            length = self._length(MAX_JSON_BODY)
            try:
                data = json.loads(self.rfile.read(length))
            except ValueError:
                raise Refused(400, "the body is not JSON") from None
            if not isinstance(data, dict) or not all(isinstance(data.get(k), (str, type(None)))
                                                     for k in ("identifier", "email", "url")):
                raise Refused(400, "expected {identifier, email, url} strings")
            job = site.submit(data.get("identifier"), data.get("email"), self.url(data.get("url")))
            return self.json(job, 201)
        if len(seg) == 3 and seg[0] == "job" and seg[1].isdigit() and seg[2] in ("cancel", "rerun"):
            fields = self.form()
            q = site.queue(write=True)
            try:
                if seg[2] == "cancel":
                    job = cancel(q, int(seg[1]))
                else:
                    opts = type("Args", (), {k: (fields.get(k) or "").strip() or None
                                             for k in ("release", "vmlinux", "package")})
                    opts.package = None
                    job = rerun(q, int(seg[1]), opts, site.cfg)
            finally:
                q.close()
            return self.redirect(f"/job/{int(job['job_id'])}")
        self._missing()

    @staticmethod
    def url(value) -> str:
        from caslib.streams.fetch import is_url

        if not value or not is_url(value.strip()):
            raise Refused(400, "give a URL (http, https or ftp) of the dump, or upload it")
        return value.strip()

    def post_submit(self) -> None:
        site = self.site
        limit = site.cfg.maxUpload
        length = self._length(limit + (1 << 20))
        kept = []

        def open_file(name):
            path, fh = site.upload_target(name)
            kept.append(path)
            return path, fh

        try:
            fields, path = webupload.parse(self.rfile, length, self.headers.get("Content-Type") or "",
                                           open_file, limit,
                                           lambda f: self.check_token(f.get("csrf")))
            self.check_token(fields.get("csrf"))
            source = path or self.url(fields.get("url"))
            job = site.submit(fields.get("identifier", "").strip(),
                              fields.get("email", "").strip(), source)
        except (StepError, UsageError) as exc:
            for p in kept:
                webupload.discard(p)
            status = 413 if getattr(exc, "kind", None) == "too-large" else 400
            text = str(getattr(exc, "message", exc)).removeprefix("cas: ")
            return self.page("Submit a dump", webpages.submit_form(self.token, limit, text), status)
        except BaseException:
            for p in kept:
                webupload.discard(p)
            raise
        self.redirect(f"/job/{int(job['job_id'])}")
