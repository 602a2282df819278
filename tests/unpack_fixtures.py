"""Helpers for the cas-unpack tests: dump-shaped data, real CLI compressors, clean-failure checks."""

import os
import random
import subprocess

from conftest import sha256  # noqa: F401  (one file hash for every test; re-exported here)

MiB = 1 << 20


def dumpish(path, size=4 * MiB, seed=1) -> str:
    """Write ``size`` bytes shaped like a dump: machine code, random pages and long zero runs.

    The "code" comes from the programs in /usr/bin, so the data compresses
    like real memory contents rather than like noise or like zeros.
    """
    rng = random.Random(seed)
    code = _code()
    with open(path, "wb") as out:
        done = 0
        while done < size:
            n = min(rng.choice((64, 128, 256, 512)) * 1024, size - done)
            r = rng.random()
            if r < 0.45:
                out.seek(n, 1)
            elif r < 0.8:
                start = rng.randrange(0, len(code) - n)
                out.write(code[start:start + n])
            else:
                out.write(rng.randbytes(n))
            done += n
        out.truncate(size)
    return str(path)


_CODE = []


def _code() -> bytes:
    if not _CODE:
        buf = bytearray()
        for name in sorted(os.listdir("/usr/bin")):
            path = os.path.join("/usr/bin", name)
            if os.path.isfile(path) and not os.path.islink(path) and len(buf) < 4 * MiB:
                with open(path, "rb") as fh:
                    buf += fh.read(MiB)
        _CODE.append(bytes(buf))
    return _CODE[0]


def sh(*argv, stdin=None, stdout=None, cwd=None):
    """Run a real tool (gzip, tar, xz, ...); fail the test with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in argv], stdin=stdin, stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE, cwd=cwd)
    assert proc.returncode == 0, f"{argv}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def compress_with(tool_argv, src, dst) -> str:
    """``tool -c < src > dst`` with the real command line tool."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        sh(*tool_argv, stdin=fin, stdout=fout)
    return str(dst)


# the real CLIs, each writing to stdout; the name is what cas-unpack reports as the layer
COMPRESSORS = {
    "gzip": (["gzip", "-c"], ".gz"),
    "bzip2": (["bzip2", "-c"], ".bz2"),
    "xz": (["xz", "-c", "-T1"], ".xz"),
    "lzma": (["lzma", "-c"], ".lzma"),
    "zstd": (["zstd", "-q", "-c"], ".zst"),
}


def files_under(top) -> list:
    out = []
    for root, _dirs, files in os.walk(top):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def assert_clean_failure(res, work, kind=None, words=()):
    """The bad-input contract: exit 1, an error record, its message as one stderr line,
    no traceback, and nothing left in the work directory but logs."""
    assert res.returncode == 1, res
    err = res.record["error"]
    assert err["step"] == "cas-unpack"
    if kind:
        assert err["kind"] == kind, res
    message = err["message"]
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert f"cas-unpack: {message}" in res.stderr.splitlines(), res
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    left = [f for f in files_under(work) if not f.endswith(".log")] if os.path.exists(work) else []
    assert left == [], left
    return err
