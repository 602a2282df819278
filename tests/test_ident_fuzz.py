"""Fuzz cas-ident with mutated headers of real dumps: every case ends in a result or a
clean FormatError, never another exception.

The bases are the real dumps of tests/realdump (QEMU ELF, QEMU kdump flattened and
reassembled, makedumpfile zlib and flattened).  Each case changes a few bytes or one
aligned integer inside the bytes the parsers read (ELF header, program headers and
notes; kdump header, sub-header, VMCOREINFO, bitmap start and first descriptor;
flattened preamble and first records), runs ``identify`` and restores the bytes.

    CAS_FUZZ_CASES=10000 .venv/bin/python -m pytest -q tests/test_ident_fuzz.py

runs the long campaign (default: 300 cases, a few seconds); CAS_FUZZ_SEED picks the
seed (default: random, printed on failure).
"""

import os
import random
import shutil
import struct

import pytest

from conftest import run
from caslib.errors import FormatError
from caslib.dumps import elfcore, flattened, kdumphdr
from caslib import ident

CASES = int(os.environ.get("CAS_FUZZ_CASES", "300"))
SEED = int(os.environ.get("CAS_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 30))))
INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 4096, 4095, 4097,
               1 << 40]


def _regions_elf(path):
    with flattened.FileSource(path) as src:
        core = elfcore.read_elf(src)
    end = max(s.offset + s.filesz for s in core.segments if s.type == elfcore.PT_NOTE)
    return [(0, end)]


def _regions_kdump(path):
    with flattened.FileSource(path) as src:
        hdr = kdumphdr.read_header(src)
    bs = hdr.block_size
    regions = [(0, kdumphdr.HEADER_READ), (bs, bs + 128)]
    if hdr.sub.get("off_vmci"):
        regions.append((hdr.sub["off_vmci"], hdr.sub["off_vmci"] + hdr.sub["size_vmci"]))
    if hdr.sub.get("off_note"):
        regions.append((hdr.sub["off_note"], hdr.sub["off_note"] + min(hdr.sub["size_note"],
                                                                          4096)))
    bitmap = (1 + hdr.sub_hdr_size) * bs
    descs = bitmap + hdr.bitmap_blocks * bs
    regions += [(bitmap, bitmap + 256), (bitmap + hdr.bitmap_blocks * bs // 2,
                                         bitmap + hdr.bitmap_blocks * bs // 2 + 256),
                (descs, descs + 24 * 64)]
    return regions


def _regions_flat(path):
    return [(0, 32), (4096, 4096 + 16 * 1024)]


BASES = {  # variant -> (how to find its header regions, copy all of it or only the headers)
    "qemu-elf": (_regions_elf, False),
    "qemu-kdump-reassembled": (_regions_kdump, True),
    "makedumpfile-zlib": (_regions_kdump, True),
    "qemu-kdump-flattened": (_regions_flat, True),
    "makedumpfile-flattened": (_regions_flat, True),
}


@pytest.fixture(scope="module")
def bases(realdump, tmp_path_factory):
    """Private copies of the real dumps (headers-only sparse copies for the big ELF)."""
    root = tmp_path_factory.mktemp("fuzz")
    out = []
    for d in realdump["dumps"]:
        if d["variant"] not in BASES:
            continue
        regions_of, whole = BASES[d["variant"]]
        regions = regions_of(d["path"])
        dst = str(root / os.path.basename(d["path"]))
        if whole:
            shutil.copyfile(d["path"], dst)
        else:
            with open(d["path"], "rb") as fin, open(dst, "wb") as fout:
                fout.write(fin.read(max(end for _, end in regions)))
                fout.truncate(os.path.getsize(d["path"]))
        out.append((d["variant"], dst, regions))
    if not out:
        pytest.skip("no real dumps to fuzz")
    return out


def mutate(rng: random.Random, fh, regions):
    """Apply one mutation; return [(offset, original bytes)] to undo it."""
    start, end = rng.choice(regions)
    undo = []
    kind = rng.random()
    if kind < 0.45:  # an aligned integer set to an interesting value
        width = rng.choice((2, 4, 8))
        off = start + rng.randrange(0, max(1, (end - start) // width)) * width
        value = rng.choice(INTERESTING) + rng.choice((0, 0, -1, 1))
        fmt = rng.choice("<>") + {2: "H", 4: "I", 8: "Q"}[width]
        data = struct.pack(fmt, value % (1 << (8 * width)))
    elif kind < 0.85:  # a few random bytes
        off = rng.randrange(start, end)
        data = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 4))))
    else:  # a run of zeros or 0xff
        off = rng.randrange(start, end)
        data = bytes([rng.choice((0, 0xFF))]) * rng.randrange(1, 64)
    fh.seek(off)
    undo.append((off, fh.read(len(data))))
    fh.seek(off)
    fh.write(data)
    return undo


def test_fuzz_headers_of_real_dumps(bases):
    rng = random.Random(SEED)
    failures = []
    outcomes = {"ok": 0}
    for i in range(CASES):
        variant, path, regions = bases[i % len(bases)]
        with open(path, "r+b") as fh:
            undo = []
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                undo += mutate(rng, fh, regions)
            fh.flush()
            try:
                facts = ident.identify(path, buffersize=1 << 20)
                assert isinstance(facts["kernel"], dict)
                outcomes["ok"] += 1
            except FormatError as exc:
                assert str(exc) and "\n" not in str(exc)
                outcomes[exc.kind] = outcomes.get(exc.kind, 0) + 1
            except Exception as exc:  # the bug this test exists to find
                failures.append(f"case {i} ({variant}, {[(o, len(b)) for o, b in undo]}): "
                                f"{type(exc).__name__}: {exc}")
            for off, data in reversed(undo):
                fh.seek(off)
                fh.write(data)
    print(f"fuzz seed {SEED}: {CASES} cases, outcomes {outcomes}")
    assert not failures, f"seed {SEED}: " + "; ".join(failures[:10])


def test_fuzzed_files_through_the_executable(bases, tmp_path):
    """A few mutated files through bin/cas-ident: one line on stderr, never a traceback."""
    rng = random.Random(SEED + 1)
    for variant, path, regions in bases:
        for n in range(3):
            dst = tmp_path / f"{variant}.{n}"
            with open(path, "rb") as fin, open(dst, "wb") as fout:
                fout.write(fin.read(max(end for _, end in regions)))
                fout.truncate(os.path.getsize(path))
            with open(dst, "r+b") as fh:
                for _ in range(4):
                    mutate(rng, fh, regions)
            res = run("cas-ident", "--buffersize", "1M", dst)
            assert "Traceback" not in res.stderr, (SEED, res)
            assert res.returncode in (0, 1), res
            if res.returncode:
                assert len(res.stderr.strip().splitlines()) == 1, res
                assert res.record["error"]["kind"] != "internal", (SEED, res.record)
            os.unlink(dst)
