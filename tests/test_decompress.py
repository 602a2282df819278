"""caslib.streams.decompress on streams written by the real gzip, bzip2, xz, lzma, zstd and pzstd CLIs."""

import io
import subprocess

import pytest

from caslib.streams import decompress
from caslib.records import StepError
from unpack_fixtures import COMPRESSORS, MiB, dumpish


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    path = dumpish(d / "sample", 3 * MiB, seed=11)
    with open(path, "rb") as fh:
        return fh.read()


def cli(argv, data: bytes) -> bytes:
    proc = subprocess.run(argv, input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def read_all(reader, n=1 << 16) -> bytes:
    out = bytearray()
    while True:
        chunk = reader.read(n)
        assert len(chunk) <= n
        if not chunk:
            return bytes(out)
        out += chunk


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_sniff_and_round_trip(sample, codec):
    packed = cli(COMPRESSORS[codec][0], sample)
    assert decompress.sniff(packed[:16]) == codec
    reader = decompress.open_reader(io.BytesIO(packed), codec, "sample")
    assert read_all(reader) == sample
    assert reader.compressed_pos == len(packed)


def test_sniff_rejects_raw_data(sample):
    assert decompress.sniff(sample[:16]) is None
    assert decompress.sniff(b"\x7fELF\x02\x01\x01" + bytes(9)) is None
    assert decompress.sniff(b"KDUMP   " + bytes(8)) is None
    assert decompress.sniff(b"") is None
    assert decompress.sniff(bytes(16)) is None


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_reads_are_bounded_on_zero_runs(codec):
    """64 MiB of zeros compress to almost nothing; read(4096) still returns <= 4096 bytes."""
    zeros = bytes(64 * MiB)
    packed = cli(COMPRESSORS[codec][0], zeros)
    assert len(packed) < MiB
    reader = decompress.open_reader(io.BytesIO(packed), codec, "zeros")
    total = 0
    while True:
        chunk = reader.read(4096)
        assert len(chunk) <= 4096
        if not chunk:
            break
        total += len(chunk)
    assert total == len(zeros)


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_concatenated_streams(sample, codec):
    argv = COMPRESSORS[codec][0]
    a, b = cli(argv, sample[: MiB]), cli(argv, sample[MiB:])
    both = a + b
    assert cli([argv[0], "-dc"], both) == sample  # the CLI accepts it too
    assert read_all(decompress.open_reader(io.BytesIO(both), codec, "cat")) == sample


def test_xz_stream_padding(sample):
    a, b = cli(["xz", "-c"], sample[:1000]), cli(["xz", "-c"], sample[1000:])
    padded = a + bytes(8) + b + bytes(4)
    assert cli(["xz", "-dc"], padded) == sample
    assert read_all(decompress.open_reader(io.BytesIO(padded), "xz", "pad")) == sample


def test_zstd_skippable_frames_from_pzstd(sample, tmp_path):
    src = tmp_path / "in"
    src.write_bytes(sample)
    subprocess.run(["pzstd", "-q", "-p", "2", str(src), "-o", str(tmp_path / "in.zst")],
                   check=True)
    packed = (tmp_path / "in.zst").read_bytes()
    assert packed[:4] == b"\x50\x2a\x4d\x18"  # pzstd starts with a skippable frame
    assert decompress.sniff(packed[:16]) == "zstd"
    assert read_all(decompress.open_reader(io.BytesIO(packed), "zstd", "pz")) == sample


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_truncated_names_the_offset(sample, codec):
    packed = cli(COMPRESSORS[codec][0], sample)
    cut = packed[: len(packed) // 2]
    reader = decompress.open_reader(io.BytesIO(cut), codec, "cut.bin")
    with pytest.raises(StepError) as info:
        read_all(reader)
    assert info.value.kind == "truncated"
    assert "cut.bin" in info.value.message and f"{len(cut):,}" in info.value.message


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_corrupt(sample, codec):
    packed = bytearray(cli(COMPRESSORS[codec][0], sample))
    for i in range(len(packed) // 2, len(packed) // 2 + 32):
        packed[i] ^= 0xA5
    with pytest.raises(StepError) as info:
        read_all(decompress.open_reader(io.BytesIO(bytes(packed)), codec, "bad.bin"))
    assert info.value.kind == "corrupt" and "bad.bin" in info.value.message


def test_lzma_alone_trailing_data(sample):
    packed = cli(["lzma", "-c"], sample[:1000]) + b"garbage"
    with pytest.raises(StepError) as info:
        read_all(decompress.open_reader(io.BytesIO(packed), "lzma", "x.lzma"))
    assert info.value.kind == "corrupt"


def test_unsupported():
    with pytest.raises(StepError):
        decompress.open_reader(io.BytesIO(b""), "lz4", "x")


def test_short_reads_from_a_pipe(sample):
    """A source that returns a few bytes per read (a pipe, a slow download) decodes the same."""

    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            n = min(n if n and n > 0 else 1, 977)
            out = self.data[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    for codec in ("gzip", "xz", "zstd", "bzip2"):
        packed = cli(COMPRESSORS[codec][0], sample[: MiB])
        reader = decompress.open_reader(Trickle(packed), codec, "trickle")
        assert read_all(reader) == sample[: MiB]
