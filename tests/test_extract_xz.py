"""The parallel xz block decoder, on streams written by the xz CLI (xz-utils).

``xz -T2 --block-size=...`` writes independent blocks with their sizes in
the block headers (what rpm's ``w2T0.xzdio`` writes too); ``xz -T1`` writes
one block without sizes, which must go to the sequential decoder.
"""

import hashlib
import os
import subprocess

import pytest

from caslib.records import StepError
from caslib.streams.xzblocks import ParallelXz


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("xz")
    raw = b""
    for name in ("python3", "bash", "tar", "rpm"):
        path = os.path.realpath(f"/usr/bin/{name}")
        if os.path.exists(path):
            raw += open(path, "rb").read(3 << 20)
    raw = (raw * 3)[: 9 << 20]
    src = root / "blob"
    src.write_bytes(raw)
    files = {}
    for label, args in {"multi": ["-T2", "--block-size=1MiB"],
                        "multi-sha256": ["-T2", "--block-size=1MiB", "--check=sha256"],
                        "multi-crc32": ["-T2", "--block-size=1MiB", "--check=crc32"],
                        "single": ["-T1"]}.items():
        out = root / f"blob.{label}.xz"
        with open(out, "wb") as fh:
            subprocess.run(["xz", "-2", "-c", *args, str(src)], stdout=fh, check=True)
        files[label] = str(out)
    return raw, files


def decode(path, start=0, end=None):
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = ParallelXz(fd, start, end if end is not None else os.path.getsize(path), path)
        h, n = hashlib.sha256(), 0
        try:
            while True:
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
        finally:
            reader.close()
        return h.hexdigest(), n, reader.fallback is not None
    finally:
        os.close(fd)


@pytest.mark.parametrize("label", ["multi", "multi-sha256", "multi-crc32"])
def test_multi_block_decodes_in_parallel(data, label):
    raw, files = data
    digest, size, fell_back = decode(files[label])
    assert (digest, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert not fell_back


def test_single_block_falls_back_to_sequential(data):
    raw, files = data
    digest, size, fell_back = decode(files["single"])
    assert (digest, size) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert fell_back


def test_truncated_multi_block(data):
    _, files = data
    size = os.path.getsize(files["multi"])
    with pytest.raises(StepError) as err:
        decode(files["multi"], 0, size // 2)
    assert err.value.kind == "truncated"


def test_corrupt_multi_block(data, tmp_path):
    _, files = data
    bad = tmp_path / "bad.xz"
    blob = bytearray(open(files["multi"], "rb").read())
    middle = len(blob) // 2
    blob[middle:middle + 32] = bytes(b ^ 0xA5 for b in blob[middle:middle + 32])
    bad.write_bytes(bytes(blob))
    with pytest.raises(StepError) as err:
        decode(str(bad))
    assert err.value.kind == "corrupt"


def test_concatenated_streams(data, tmp_path):
    """A split stream followed by an unsplittable one (``cat a.xz b.xz``): all data, in order."""
    raw, files = data
    both = tmp_path / "both.xz"
    both.write_bytes(open(files["multi"], "rb").read() + open(files["single"], "rb").read())
    digest, size, fell_back = decode(str(both))
    assert (digest, size) == (hashlib.sha256(raw + raw).hexdigest(), 2 * len(raw))
    assert fell_back
