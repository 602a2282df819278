"""Debian's chromium driven headless through chromedriver (W3C WebDriver, spoken with urllib),
and cas-web started on a loopback port: what tests/test_web.py and ``make screenshots`` use.

Every process is started here and stopped by its pid; every wait has a deadline.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers at {url}") from None
            time.sleep(0.1)


class CasWeb:
    """``bin/cas-web --listen 127.0.0.1:PORT`` for a config; stopped by pid."""

    def __init__(self, conf: str, *extra, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "bin", "cas-web"), "--config", conf,
             "--listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_http(self.url + "/api/token")
        except TimeoutError:
            self.stop()
            raise AssertionError(f"cas-web did not start: {self.proc.stderr.read()}") from None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
        return err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Browser:
    """A chromium session: get, find, click, type, run a script, take a screenshot."""

    def __init__(self, width: int = 1280, height: int = 1000):
        self.port = free_port()
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        try:
            wait_http(self.base + "/status")
            args = ["--headless", "--disable-gpu", "--no-first-run", f"--window-size={width},{height}"]
            if os.geteuid() == 0:
                args.append("--no-sandbox")  # chromium refuses to run as root with its sandbox
            caps = {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.driver.kill()
            self.driver.wait(timeout=30)
            raise

    def _call(self, method: str, path: str, body=None, timeout: float = 120):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            value = json.loads(exc.read() or b"{}").get("value") or {}
            raise WebDriverError(value.get("error"), value.get("message", "")) from None

    def _s(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        got = self._s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(got.values()))

    def find_all(self, css: str) -> list:
        got = self._s("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(e.values())) for e in got]

    def text(self, element: str) -> str:
        return self._s("GET", f"/element/{element}/text")

    def type(self, element: str, text: str) -> None:
        self._s("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self._s("POST", f"/element/{element}/click", {})

    def submit(self, element: str, timeout: float = 60.0) -> str:
        """Click a form's button and wait (with a deadline) for the page it leads to;
        WebDriver's click returns before a form's navigation has ended."""
        before = self.url()
        self.click(element)
        deadline = time.monotonic() + timeout
        while True:
            if self.url() != before and self.script("return document.readyState") == "complete":
                return self.url()
            if time.monotonic() > deadline:
                raise AssertionError(f"still on {before} {timeout}s after the click")
            time.sleep(0.1)

    def script(self, source: str, *args):
        return self._s("POST", "/execute/sync", {"script": source, "args": list(args)})

    def source(self) -> str:
        return self._s("GET", "/source")

    def url(self) -> str:
        return self._s("GET", "/url")

    def alert_text(self) -> str | None:
        try:
            return self._s("GET", "/alert/text")
        except WebDriverError as exc:
            if exc.kind == "no such alert":
                return None
            raise

    def screenshot(self, path: str) -> None:
        """The whole page (the window grown to the page's height first)."""
        height = self.script("return document.documentElement.scrollHeight;")
        self._s("POST", "/window/rect", {"width": 1280, "height": min(max(height, 800), 2400)})
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(self._s("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}", timeout=30)
        except (OSError, WebDriverError):
            pass
        self.driver.terminate()
        try:
            self.driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.driver.kill()
            self.driver.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WebDriverError(Exception):
    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
