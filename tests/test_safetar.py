"""safetar against archives made by GNU tar (every sparse flavour, long names, pax) and
against hand-made hostile headers: same members and bytes as tarfile where tarfile is
sound, a refusal where it is not."""

import io
import os
import subprocess
import tarfile

import pytest

from caslib.streams import safetar
from caslib.records import StepError


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    path = root / ("v" * 150) / ("m" * 120)  # a name only long-name or pax headers hold
    path.parent.mkdir()
    with open(path, "wb") as fh:
        for off in (0, 3 << 20, 9 << 20):
            fh.seek(off)
            fh.write(os.urandom(5000))
        fh.truncate(16 << 20)
    return root, path


@pytest.mark.parametrize("fmt", [["--format=gnu"], ["--format=pax", "--sparse-version=0.0"],
                                 ["--format=pax", "--sparse-version=0.1"],
                                 ["--format=pax", "--sparse-version=1.0"], ["--format=pax"]])
def test_gnu_tar_archives_read_like_tarfile(sparse_file, tmp_path, fmt):
    root, path = sparse_file
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-cSf", str(archive), *fmt, "-C", str(root),
                    os.path.relpath(path, root)], check=True)
    with open(archive, "rb") as fh:
        tar = safetar.open_stream(fh)
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar]
    reg = [(m, data) for m, data in members if m.isreg()]
    assert len(reg) == 1
    m, data = reg[0]
    with tarfile.open(archive) as stock:  # the same member, named as the stdlib names it
        assert [(s.name, s.size, s.sparse) for s in stock if s.isreg()] == \
            [(m.name, m.size, m.sparse)]
    assert m.name.endswith("m" * 120) and m.size == 16 << 20
    assert data == path.read_bytes()


def test_parse_pax_records():
    assert safetar.parse_pax(b"12 path=abc\n8 a=b=c\n") == [(b"path", b"abc"), (b"a", b"b=c")]
    assert safetar.parse_pax(_pax_record(b"x", b"y" * 5000)) == [(b"x", b"y" * 5000)]
    assert safetar.parse_pax(b"") == [] and safetar.parse_pax(b"\0" * 100) == []
    for bad in (b"0" * 100000, b"5 a=b\n", b"99 a=b\n", b"x path=a\n", b"10 noequal\n"):
        with pytest.raises(tarfile.ReadError):
            safetar.parse_pax(bad)


def _ext(typeflag: bytes, payload: bytes) -> bytes:
    info = tarfile.TarInfo("././@LongLink" if typeflag != tarfile.XHDTYPE else "pax")
    info.type, info.size = typeflag, len(payload)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + payload + b"\0" * (-len(payload) % 512)


def _member(name="f", data=b"hello") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def test_a_chain_of_extension_headers_is_unsafe():
    chain = b"".join(_ext(tarfile.GNUTYPE_LONGNAME, b"n" * 100 + b"\0") for _ in range(40))
    with pytest.raises(StepError) as err:
        list(safetar.open_stream(io.BytesIO(chain + _member() + b"\0" * 1024)))
    assert err.value.kind == "unsafe" and "extension headers" in err.value.message


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def test_global_pax_headers_are_bounded():
    blob = b"".join(_ext(tarfile.XGLTYPE, _pax_record(b"k%d" % i, b"v" * 70000))
                    for i in range(15))  # 15 x 70 kB: over 1 MiB, under the chain limit
    with pytest.raises(StepError) as err:
        list(safetar.open_stream(io.BytesIO(blob + _member() + b"\0" * 1024)))
    assert err.value.kind == "unsafe" and "global pax headers" in err.value.message


def test_ordinary_long_names_and_pax_pass():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("d/" + "é" * 200)
        info.size = 3
        info.pax_headers = {"comment": "x" * 1000}
        t.addfile(info, io.BytesIO(b"abc"))
    buf.seek(0)
    names = [m.name for m in safetar.open_stream(buf)]
    assert names == ["d/" + "é" * 200]
