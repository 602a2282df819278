"""cas-dmesg on the real dumps: equal to makedumpfile --dump-dmesg, and holding crash's log."""

import json
import os
import shutil
import struct
import subprocess

import pytest

from conftest import run, serial_panic_cpu

pytestmark = pytest.mark.realdump


def dumps(manifest):
    return [d for d in manifest["dumps"] if d["role"] == "dump"]


def variant(manifest, name):
    return next(d for d in manifest["dumps"] if d["variant"] == name)


def job_dir(tmp_path):
    """A real job directory under the test config's workDirectory: piped records must name one."""
    workdir = tmp_path / "work" / "j1" / "2026.01.02.03.04.05"
    workdir.mkdir(parents=True)
    return workdir


def link_into(path, workdir):
    """``path`` hard-linked into the job directory (a piped record's core must lie there)."""
    inside = workdir / os.path.basename(path)
    try:
        os.link(path, inside)
    except OSError:  # another file system: copy it
        shutil.copyfile(path, inside)
    return inside


def makedumpfile_dmesg(path, out):
    """makedumpfile --dump-dmesg's log of ``path``, or None when it cannot read that format."""
    if os.path.exists(out):
        os.unlink(out)
    proc = subprocess.run(["makedumpfile", "--dump-dmesg", path, str(out)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return None
    with open(out, encoding="utf-8", errors="surrogateescape") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def reference(realdump, tmp_path_factory):
    """makedumpfile's log of the header-fixed ELF copy: the reference every format must give."""
    out = tmp_path_factory.mktemp("mdf") / "fixed.dmesg"
    text = makedumpfile_dmesg(variant(realdump, "qemu-elf-fixed")["path"], out)
    assert text, "makedumpfile cannot read the header-fixed ELF copy"
    return text


def test_every_real_format_equals_makedumpfile_line_for_line(realdump, reference, tmp_path):
    compared_direct = []
    for d in dumps(realdump):
        res = run("cas-dmesg", d["path"])
        assert res.returncode == 0, (d["variant"], res)
        assert res.stdout == reference, d["variant"]
        own = makedumpfile_dmesg(d["path"], tmp_path / f"{d['variant']}.dmesg")
        if own is not None:  # the formats makedumpfile itself reads: compare with its own output
            assert res.stdout == own, d["variant"]
            compared_direct.append(d["variant"])
    assert "qemu-elf-fixed" in compared_direct and "makedumpfile-lzo" in compared_direct
    assert "sysrq triggered crash" in reference


def test_flattened_streams_equal_makedumpfile_on_their_reassembly(realdump, tmp_path):
    compared = []
    for d in dumps(realdump):
        if d["format"] != "flattened":
            continue
        whole = tmp_path / f"{d['variant']}.reassembled"
        with open(d["path"], "rb") as src:
            subprocess.run(["makedumpfile", "-R", str(whole)], stdin=src, check=True,
                           capture_output=True, timeout=300)
        own = makedumpfile_dmesg(str(whole), tmp_path / f"{d['variant']}.dmesg")
        if own is None:
            continue  # QEMU's kdump headers: makedumpfile cannot read them reassembled either
        assert run("cas-dmesg", d["path"]).stdout == own, d["variant"]
        compared.append(d["variant"])
    assert "makedumpfile-flattened" in compared


def test_holds_every_line_crash_log_printed(realdump):
    elf = variant(realdump, "qemu-elf")["path"]
    verify = os.path.join(os.path.dirname(os.path.dirname(elf)), "verify", "crash.qemu-elf.txt")
    with open(verify) as fh:
        text = fh.read()
    log = text.split("=== log\n", 1)[1].split("\n=== ", 1)[0].splitlines()
    assert len(log) > 100
    ours = run("cas-dmesg", elf).stdout.splitlines()
    assert ours == log


def test_filter_writes_the_job_log_and_the_panic_summary(realdump, tmp_path, config_file,
                                                         casenv):
    d = variant(realdump, "makedumpfile-lzo")
    workdir = job_dir(tmp_path)
    core = link_into(d["path"], workdir)
    rec = {"core": str(core), "workdir": str(workdir), "job": "j1", "zz_unknown": [1, 2],
           "id": "j1"}
    res = run("cas-dmesg", "--config", config_file(), input=json.dumps(rec) + "\n", env=casenv)
    assert res.returncode == 0, res
    out = res.record
    assert list(out)[:4] == ["core", "workdir", "job", "zz_unknown"] and out["zz_unknown"] == [1, 2]
    dmesg = out["dmesg"]
    assert dmesg["file"] == str(workdir / "dmesg") and dmesg["layout"] == "lockless"
    with open(dmesg["file"]) as fh:
        assert len(fh.read().splitlines()) == dmesg["lines"]
    assert dmesg["warnings"] == []
    assert any("Kernel panic - not syncing: sysrq triggered crash" in line
               for line in dmesg["panic_lines"])
    panic = dmesg["panic"]
    assert panic["message"] == realdump["kernel"]["panic"]
    assert (panic["task"], panic["pid"], panic["cpu"]) == ("init", 1, serial_panic_cpu(realdump))
    assert "sysrq_handle_crash+0x16/0x20" in panic["backtrace"]
    assert "? _printk+0x68/0x83" in panic["backtrace"]
    assert {"function": "_printk+0x68/0x83", "module": None, "reliable": False} in panic["frames"]
    assert not [f for f in os.listdir(workdir) if f.startswith(".dmesg.")]


def test_error_records_pass_untouched_and_bad_records_are_errors(tmp_path):
    err = {"core": "/x", "error": {"step": "cas-ident", "message": "m", "kind": "corrupt"}}
    res = run("cas-dmesg", input=json.dumps(err) + "\n" + json.dumps({"workdir": str(tmp_path)})
              + "\n" + json.dumps({"core": 5, "workdir": str(tmp_path)}) + "\n")
    assert res.returncode == 1
    assert res.records[0] == err
    assert res.records[1]["error"]["kind"] == "bad-record"
    assert res.records[2]["error"]["kind"] == "bad-record"
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("content,kind", [
    (b"", "empty"),
    (b"\x1f\x8b\x08\x00" + bytes(100), "compressed"),
    (b"just some text, not a dump\n" * 40, "not-a-dump"),
    (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 4, 62) + bytes(200), "corrupt"),
])
def test_bad_dumps_are_one_line_errors(tmp_path, config_file, casenv, content, kind):
    workdir = job_dir(tmp_path)
    core = workdir / "vmcore"
    core.write_bytes(content)
    rec = {"core": str(core), "workdir": str(workdir), "job": "j1", "id": "j1"}
    res = run("cas-dmesg", "--config", config_file(), input=json.dumps(rec) + "\n", env=casenv)
    assert res.returncode == 1, res
    assert res.record["error"]["kind"] == kind, res.record
    assert str(core) in res.record["error"]["message"]
    assert "Traceback" not in res.stderr and not os.path.exists(workdir / "dmesg")
    printed = run("cas-dmesg", core)
    assert printed.returncode == 1 and printed.stdout == ""
    assert len(printed.stderr.strip().splitlines()) == 1 and str(core) in printed.stderr


def test_keep_going_passes_a_record_whose_log_cannot_be_read(tmp_path, config_file, casenv):
    workdir = job_dir(tmp_path)
    core = workdir / "vmcore"
    core.write_bytes(b"no dump here\n" * 100)
    rec = {"core": str(core), "workdir": str(workdir), "job": "j1", "id": "j1"}
    res = run("cas-dmesg", "--config", config_file(), "--keep-going",
              input=json.dumps(rec) + "\n", env=casenv)
    assert res.returncode == 0, res
    assert res.record["dmesg"]["file"] is None and "not an ELF" in res.record["dmesg"]["reason"]


def test_page_walk_agrees_with_the_image_mapping_and_reaches_the_direct_map(realdump):
    from caslib.dumps import flattened, vmem
    for name in ("qemu-elf", "makedumpfile-zlib"):
        with flattened.open_source(variant(realdump, name)["path"]) as src:
            mem, vmci, facts = vmem.open_memory(src)
            assert facts["image_mapping"].endswith("NUMBER(phys_base)")
            for sym in ("init_uts_ns", "prb", "swapper_pg_dir"):
                addr = vmci.symbol(sym)
                assert mem._walk_x86_64(addr) == addr + mem.image_delta, sym
            # node_data[0] points into the direct map (randomised page_offset_base)
            node0 = mem.u64(vmci.symbol("node_data"))
            assert node0 < 0xFFFFFFFF80000000
            phys = mem.translate(node0)
            assert mem.read(node0, 64) == mem.phys.read(phys, 64)


@pytest.mark.parametrize("name,keep", [("makedumpfile-zlib", 5_000_000),
                                       ("makedumpfile-flattened", 9_000_000)])
def test_cut_real_dumps_are_truncated_errors(realdump, tmp_path, config_file, casenv, name, keep):
    workdir = job_dir(tmp_path)
    core = workdir / "vmcore"  # the cut copy, written into the job directory
    with open(variant(realdump, name)["path"], "rb") as fh:
        core.write_bytes(fh.read(keep))
    rec = {"core": str(core), "workdir": str(workdir), "job": "j1", "id": "j1"}
    res = run("cas-dmesg", "--config", config_file(), input=json.dumps(rec) + "\n", env=casenv)
    assert res.returncode == 1 and res.record["error"]["kind"] == "truncated", res
    assert "Traceback" not in res.stderr and not os.path.exists(workdir / "dmesg")
