"""A multipart/form-data body read from the socket in bounded chunks (cas-web's /submit).

Why not ``cgi`` or ``email``: the one is gone from Python 3.13, the other holds the
whole body in memory; a dump is tens of gigabytes.  Text fields are kept (4 KiB at
most each); the one file part is streamed to a file as it arrives, and the whole
body may not be larger than ``maxUpload`` (plus a little for the fields).
"""

import os
import re

from caslib.records import StepError

CHUNK = 1 << 16
MAX_FIELD = 4096
MAX_HEADERS = 16384
MAX_PARTS = 32
_BOUNDARY = re.compile(r'boundary="?([0-9A-Za-z\'()+_,./:=? -]{1,70})"?')
_NAME = re.compile(r'\bname="([^"]*)"')
_FILENAME = re.compile(r'\bfilename="([^"]*)"')


def boundary(content_type: str) -> bytes:
    if not content_type.startswith("multipart/form-data"):
        raise StepError("expected multipart/form-data", "usage")
    m = _BOUNDARY.search(content_type)
    if not m:
        raise StepError("multipart body without a boundary", "usage")
    return m.group(1).rstrip(" ").encode("ascii")


class _Body:
    def __init__(self, stream, length: int):
        self.stream, self.left, self.buf = stream, length, b"\r\n"  # every delimiter is CRLF--B

    def _fill(self) -> None:
        if self.left <= 0:
            raise StepError("the form body ends early", "usage")
        data = self.stream.read(min(CHUNK, self.left))
        if not data:
            raise StepError("the client stopped sending", "usage")
        self.left -= len(data)
        self.buf += data

    def until(self, delim: bytes, sink, limit: int) -> None:
        """Pass the bytes before ``delim`` to ``sink`` (at most ``limit``), drop ``delim``."""
        got = 0
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                chunk, self.buf = self.buf[:i], self.buf[i + len(delim):]
            else:
                keep = len(delim) - 1
                chunk, self.buf = self.buf[:max(0, len(self.buf) - keep)], self.buf[-keep:]
            got += len(chunk)
            if got > limit:
                raise StepError(f"a form part is larger than {limit} bytes", "too-large")
            if chunk:
                sink(chunk)
            if i >= 0:
                return
            self._fill()

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def parse(stream, length: int, content_type: str, open_file, max_file: int,
          before_file=None) -> tuple[dict, str | None]:
    """Read the form: (fields, path of the uploaded file or None).

    ``open_file(filename)`` returns (path, binary file object) for the file part;
    ``before_file(fields)`` is called before a byte of it is written (the CSRF check).
    """
    delim = b"\r\n--" + boundary(content_type)
    body = _Body(stream, length)
    body.until(delim, lambda _c: None, MAX_HEADERS)
    fields, path = {}, None
    for _ in range(MAX_PARTS):
        end = body.take(2)
        if end == b"--":
            return fields, path
        if end != b"\r\n":
            raise StepError("malformed multipart body", "usage")
        raw = bytearray()
        body.until(b"\r\n\r\n", raw.extend, MAX_HEADERS)
        headers = raw.decode("utf-8", "replace")
        name = _NAME.search(headers)
        filename = _FILENAME.search(headers)
        if not name:
            raise StepError("a form part without a name", "usage")
        if filename and filename.group(1):
            if path is not None:
                raise StepError("one file per submission", "usage")
            if before_file:
                before_file(fields)
            path, fh = open_file(filename.group(1))
            with fh:
                body.until(delim, fh.write, max_file)
        elif filename:  # an empty file input: nothing chosen
            body.until(delim, lambda _c: None, 0)
        else:
            value = bytearray()
            body.until(delim, value.extend, MAX_FIELD)
            fields[name.group(1)] = value.decode("utf-8", "replace")
    raise StepError(f"more than {MAX_PARTS} form parts", "usage")


def safe_filename(name: str) -> str:
    """The last path component of a browser's file name, made of harmless characters."""
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip(".-")[:128]
    return base or "upload"


def discard(path: str | None) -> None:
    """Remove a half-received upload and its directory."""
    if path:
        for victim in (path, os.path.dirname(path)):
            try:
                (os.unlink if victim == path else os.rmdir)(victim)
            except OSError:
                pass
