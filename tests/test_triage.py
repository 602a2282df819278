"""cas-triage's parts: the classifier on golden kernel logs, taint, trust, signatures, known issues.

The golden logs in tests/data/triage/ are the real kernel's reports from the real-dump test
bed (tests/realdump/panics.py), one per kind: <name>.log is the log from just before the
failure to the end, <name>.json holds crash's panic string and bt frames for that dump and
what triage must make of them.
"""

import glob
import json
import os
import re

import pytest

from caslib.diagnosis import classify, kernlog, knownissues, signatures, taint, trust
from caslib import db
from caslib.messages import summary
from conftest import ROOT, run

DATA = os.path.join(ROOT, "tests", "data", "triage")
GOLDEN = sorted(glob.glob(os.path.join(DATA, "*.json")))

# what a person expects of each kind, independent of the golden files
EXPECTED = {
    "null": ("oops-null-deref", "casfault_null_deref", "casfault"),
    "paging": ("oops-paging", "casfault_paging", "casfault"),
    "gpf": ("general-protection", "casfault_gpf", "casfault"),
    "stack": ("stack-corruption", "casfault_smash", "casfault"),
    "bug": ("bug", "casfault_bug", "casfault"),
    "warn": ("warning", "casfault_warn", "casfault"),
    "softlockup": ("soft-lockup", "casfault_spin", "casfault"),
    "hung": ("hung-task", "casfault_hang", "casfault"),
    "oom": ("oom", "out_of_memory", None),
    "init": ("init-killed", "do_exit", None),
    "sysrq": ("sysrq", "sysrq_handle_crash", None),
}


def _golden(path):
    with open(path) as fh:
        case = json.load(fh)
    with open(path[:-5] + ".log") as fh:
        log = fh.read().splitlines()
    return case, log


def test_every_kind_has_a_golden_log():
    assert {os.path.basename(p)[:-5] for p in GOLDEN} == set(EXPECTED)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: os.path.basename(p)[:-5])
def test_classifier_on_golden_logs(path):
    case, log = _golden(path)
    got = classify.analyse(case["panic_message"], log, case["crash_bt"])
    for key, want in case["expect"].items():
        assert got[key] == want, key
    kind, function, module = EXPECTED[os.path.basename(path)[:-5]]
    assert got["kind"] == kind
    assert got["culprit"]["function"] == function and got["culprit"]["module"] == module
    assert got["source"] == "log"
    # no frame the unwinder marked '?' is in the reliable backtrace
    marked = {kernlog.base_name(m.group(1)) for m in
              (re.search(r"\]\s+\?\s+([\w.]+)\+0x", line) for line in log) if m}
    for frame in got["unreliable"]:
        assert kernlog.base_name(frame.split()[0]) in marked


def test_sysrq_backtrace_drops_the_stale_frames_crash_shows():
    case, log = _golden(os.path.join(DATA, "sysrq.json"))
    got = classify.analyse(case["panic_message"], log, case["crash_bt"])
    assert "do_syscall_64" in got["backtrace"]
    after = got["backtrace"][got["backtrace"].index("do_syscall_64") + 1:]
    assert after == ["entry_SYSCALL_64_after_hwframe"]


def test_crash_bt_is_split_at_the_syscall_dispatcher_when_the_log_has_no_trace():
    case, _log = _golden(os.path.join(DATA, "sysrq.json"))
    got = classify.analyse(case["panic_message"], [], case["crash_bt"])
    assert got["source"] == "crash-bt" and got["kind"] == "sysrq"
    assert got["culprit"]["function"] == "sysrq_handle_crash"
    assert got["backtrace"][-2:] == ["do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
    assert "handle_mm_fault" in got["unreliable"] and "handle_mm_fault" not in got["backtrace"]


def test_bug_and_warning_locations_come_from_the_report():
    for name in ("bug", "warn"):
        case, log = _golden(os.path.join(DATA, f"{name}.json"))
        loc = classify.analyse(case["panic_message"], log, case["crash_bt"])["culprit"]["location"]
        assert loc and loc.split(":")[0].endswith("casfault.c") and loc.split(":")[1].isdigit()


def test_kind_from_crash_panic_string_alone():
    got = classify.analyse('Oops: 0002 [#1] PREEMPT SMP NOPTI" (check log for details)', [], [])
    assert got["kind"] == "unknown"
    got = classify.analyse("kernel BUG at mm/slub.c:435!", [], [])
    assert got["kind"] == "bug" and got["evidence"] == "kernel BUG at mm/slub.c:435!"
    assert classify.analyse("Fatal exception", [], [])["kind"] == "unknown"


def test_bt_lines_maps_functions_to_source_lines():
    text = [" #0 [ffffd308400efe38] panic at ffffffff9afcd21a",
            "    debian/build/build_amd64_none_cloud-amd64/kernel/panic.c: 459",
            " #1 [ffffd308400efeb8] watchdog.cold at ffffffff9afd773d",
            "    debian/build/build_amd64_none_cloud-amd64/kernel/hung_task.c: 131"]
    assert classify.bt_lines(text) == {
        "panic": "debian/build/build_amd64_none_cloud-amd64/kernel/panic.c:459",
        "watchdog": "debian/build/build_amd64_none_cloud-amd64/kernel/hung_task.c:131"}


# -- taint ------------------------------------------------------------------------------------

def test_taint_decoding_and_modules():
    _case, log = _golden(os.path.join(DATA, "softlockup.json"))
    lines = kernlog.clean(log)
    t = taint.summary(kernlog.taint_string(lines), {"casfault": "OE"},
                      kernlog.modules_linked_in(lines), taint.log_tainters(lines))
    assert t["flags"] == "OEL"  # the soft lockup itself adds L
    assert t["decoded"]["O"] == "out-of-tree module loaded" and "L" in t["decoded"]
    assert t["modules"] == {"casfault": "OE"}
    assert taint.describe(t).startswith("OEL (") and taint.describe(t).endswith("by casfault")
    _case, log = _golden(os.path.join(DATA, "sysrq.json"))
    lines = kernlog.clean(log)
    t = taint.summary(kernlog.taint_string(lines), {}, kernlog.modules_linked_in(lines),
                      taint.log_tainters(lines))
    assert t["flags"] == "" and t["source"] == "log" and taint.describe(t) == "not tainted"


def test_taint_from_modules_when_the_log_has_none():
    t = taint.summary(None, taint.mod_t(["NAME      TAINTS", "casfault  OE"]), {}, [])
    assert t["flags"] == "OE" and t["source"] == "modules"
    assert taint.decode("G  D W ")["flags"] == "DW"


# -- trust ------------------------------------------------------------------------------------

def test_trust_notes():
    record = {"kernel": {"release": "6.1.0-57-cloud-amd64"}, "ident": {"dump_level": 31},
              "crash": {"version": "8.0.2", "warnings": [
                  "WARNING: active task ffff8a68c12cb000 on cpu 1 not found in PID hash"]}}
    tb = ["crash> bt -a >> traceback",
          'PID: 0        TASK: ffffffff9c01aa40  CPU: 0    COMMAND: "swapper/0"',
          'bt: invalid size request: 0  type: "stack contents"',
          "bt: read of stack at fffffe0000014000 failed",
          'PID: 28       TASK: ffff8a68c12cb000  CPU: 1    COMMAND: "khungtaskd"',
          " #0 [ffffd308400efe38] panic at ffffffff9afcd21a"]
    notes = trust.notes(record, {"TASKS": "3"}, tb, "log")
    assert notes[0].startswith("crash 8.0.2 is older than this kernel (6.1.0-57-cloud-amd64) "
                               "needs: task list incomplete")
    assert notes[1] == ('bt -a failed on CPU 0 (swapper/0): bt: invalid size request: 0  '
                        'type: "stack contents"')
    assert notes[2] == ("dump filtered with -d 31: zero pages, page cache pages, private cache "
                        "pages, user pages, free pages absent")
    assert trust.notes({}, {}, [], "log") == []
    assert trust.dump_level(True) is None and trust.dump_level("31") is None


# -- signatures -------------------------------------------------------------------------------

def test_signature_ignores_offsets_and_suffixes_and_tells_kinds_apart():
    culprit = {"function": "out_of_memory", "module": None}
    a = signatures.compute("oom", culprit, ["dump_stack_lvl", "out_of_memory.cold",
                                            "__alloc_pages_slowpath.constprop.0", "__alloc_pages"])
    b = signatures.compute("oom", culprit, ["out_of_memory", "__alloc_pages_slowpath",
                                            "__alloc_pages"])
    assert a == b and a.startswith("oom:") and len(a) == len("oom:") + 16
    assert signatures.compute("bug", culprit, ["out_of_memory"]) != signatures.compute(
        "oom", culprit, ["out_of_memory"])
    sigs = set()
    for path in GOLDEN:
        case, _log = _golden(path)
        e = case["expect"]
        sigs.add(signatures.compute(e["kind"], e["culprit"], e["backtrace"]))
    assert len(sigs) == len(GOLDEN)


def test_signatures_table_stores_and_finds_earlier_jobs(tmp_path):
    conn = db.connect(str(tmp_path / "cas.db"))
    rec = {"job": "j1", "id": "12345", "workdir": "/w/j1/1", "kernel": {"release": "6.1.0-57"}}
    signatures.store(conn, rec, "oom:0123456789abcdef", "oom", "out_of_memory", now=1.8e9)
    signatures.store(conn, dict(rec, workdir="/w/j2/1", id="23456"), "oom:0123456789abcdef",
                     "oom", "out_of_memory", now=1.9e9)
    signatures.store(conn, dict(rec, workdir="/w/j3/1"), "bug:0123456789abcdef", "bug", "x")
    seen = signatures.seen_before(conn, "oom:0123456789abcdef", "/w/j2/1")
    assert [s["identifier"] for s in seen] == ["12345"] and seen[0]["kernel"] == "6.1.0-57"
    assert [s["identifier"] for s in signatures.seen_before(conn, "oom:0123456789abcdef")] == [
        "23456", "12345"]
    # a re-run of one job directory replaces its row
    signatures.store(conn, rec, "bug:0123456789abcdef", "bug", "x")
    assert conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 3
    line = summary.seen_text({"seen_before": seen})
    assert line == f"same crash as ticket 12345 ({seen[0]['date']}, 6.1.0-57)"


# -- known issues -----------------------------------------------------------------------------

def test_known_issues_file(tmp_path, caplog):
    path = tmp_path / "known-issues"
    path.write_text("# site list\n"
                    "oops-null-deref:0123456789abcdef | NULL write | https://bugs.example.org/1\n"
                    "not a valid line\n"
                    "re:casfault_(spin|hang) | casfault stalls | https://bugs.example.org/2\n"
                    "re:([ | bad pattern | https://x\n"
                    "re:a|b | | https://x\n")
    entries = knownissues.load(str(path))
    assert [e["line"] for e in entries] == [2, 4]
    hit = knownissues.match(entries, {"signature": "oops-null-deref:0123456789abcdef"}, None,
                            str(path))
    assert hit["title"] == "NULL write" and hit["url"] == "https://bugs.example.org/1"
    hit = knownissues.match(entries, {"kind": "hung-task", "signature": "hung-task:ffffffffffffffff",
                                      "culprit": {"function": "casfault_hang"}}, None, str(path))
    assert hit["line"] == 4
    assert knownissues.match(entries, {"kind": "oom", "signature": "oom:1"}, None, str(path)) is None
    triage = {"known_issue": hit, "kind": "hung-task", "trust": []}
    assert summary.lines(triage)[0] == "Known issue: casfault stalls https://bugs.example.org/2"


# -- the executable ---------------------------------------------------------------------------

def test_cas_triage_passes_error_records_and_rejects_paths_outside_the_job(tmp_path, casenv):
    # a real job directory under the built-in workDirectory (records are checked against it)
    work = tmp_path / "data" / "cas" / "work" / "1" / "2026.12.03.10.00.00"
    work.mkdir(parents=True)
    err = {"id": "1", "error": {"step": "cas-crash", "message": "x", "kind": "crash-init"}}
    res = run("cas-triage", input=[err], env=casenv)
    assert res.returncode == 1 and res.record == err  # passed through untouched
    bad = {"workdir": str(work), "crash": {"files": {"log": "/etc/passwd"}}}
    res = run("cas-triage", input=[bad], env=casenv)
    assert res.returncode == 1 and res.record["error"]["kind"] == "bad-record"
    assert "outside the job directory" in res.record["error"]["message"]
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("cas-triage", input=[{"workdir": str(work), "crash": {"files": []}}], env=casenv)
    assert res.returncode == 1 and res.record["error"]["kind"] == "bad-record"
    res = run("cas-triage", input=[{"workdir": str(work), "other": 1}], env=casenv)
    assert res.returncode == 0 and res.record == {"workdir": str(work), "other": 1}


def test_mail_body_starts_with_the_five_lines_and_lists_results(tmp_path):
    from caslib import mail
    log = tmp_path / "log"
    log.write_text("x\n" * 3)
    triage = {"kind": "bug", "evidence": "kernel BUG at casfault/casfault.c:33!",
              "culprit": {"function": "casfault_bug", "module": "casfault",
                          "location": "casfault/casfault.c:33"},
              "taint": taint.summary("G           OE", {"casfault": "OE"}, {}, []),
              "trust": ["crash 8.0.2 is older than this kernel needs", "bt -a failed on CPU 1"],
              "seen_before": [{"identifier": "12345", "date": "2026-11-02", "kernel": "6.1.0-57"}],
              "signature": "bug:0123456789abcdef", "backtrace": ["casfault_bug [casfault]"],
              "unreliable": ["? x"], "results": [{"name": "log", "path": str(log), "size": 6}],
              "failed_snippets": [{"command": "bt -a >> traceback", "snippet": "10-traceback",
                                   "error": "bt: read of stack failed"}], "known_issue": None}
    text = mail.body({"job": "j", "id": "12345", "workdir": str(tmp_path), "triage": triage})
    lines = text.splitlines()
    assert lines[:5] == [
        "Kind:        bug (kernel BUG at casfault/casfault.c:33!)",
        "Culprit:     casfault_bug [casfault] at casfault/casfault.c:33",
        "Taint:       OE (out-of-tree module loaded; unsigned module loaded) by casfault",
        "Trust:       crash 8.0.2 is older than this kernel needs (+1 more below)",
        "Seen before: same crash as ticket 12345 (2026-11-02, 6.1.0-57)"]
    assert "    log  6 bytes" in lines
    assert "Failed snippet: 10-traceback: 'bt -a >> traceback': bt: read of stack failed" in lines
