"""Every real panic kind of the test bed through `cas`, end to end: triage, signature, mail.

The dumps are the real-dump test bed's `panics` section (tests/realdump/panics.py): a real
Debian kernel under QEMU made to fail by OOM, by init exiting, and by casfault.ko (NULL
write, unmapped and non-canonical writes, a smashed stack, BUG, WARN, soft lockup, hung
task), the NULL write twice (two boots); plus the sysrq
dump filtered by makedumpfile -d 31.  One module-scoped run of `cas` per dump, in order,
against one database, so the second NULL dump finds the first.
"""

import email
import email.policy
import os
import sqlite3

import pytest

from conftest import run

pytestmark = pytest.mark.realdump

KIND = {"null": "oops-null-deref", "paging": "oops-paging", "gpf": "general-protection",
        "stack": "stack-corruption", "bug": "bug", "warn": "warning", "softlockup": "soft-lockup",
        "hung": "hung-task", "oom": "oom", "init": "init-killed", "sysrq": "sysrq"}
KERNEL_CULPRIT = {"oom": "out_of_memory", "init": "do_exit", "sysrq": "sysrq_handle_crash"}
SUMMARY = ["Kind", "Culprit", "Taint", "Trust", "Seen before"]


@pytest.fixture(scope="module")
def jobs(realdump, tmp_path_factory):
    """{name: (record, mail text)} for every panic dump (and the filtered sysrq one)."""
    panics = realdump["panics"]
    assert not set(KIND) - {"sysrq"} - set(panics["kinds"]), panics["skipped"]
    top = tmp_path_factory.mktemp("triage-site")
    shelf = top / "kernels"
    shelf.mkdir()
    for rpm in realdump["rpms"]:
        if rpm["payload"] == "zstd" and not rpm["decoy"]:
            os.symlink(rpm["path"], shelf / os.path.basename(rpm["path"]))
    known = top / "known-issues"
    known.write_text("# casfault's kthreads that never return\n"
                     "re:casfault_(spin|hang) | casfault kthread stalls | "
                     "https://bugs.example.org/42\n")
    conf = top / "cas.conf"
    conf.write_text(f"[settings]\nkernels = {shelf}\nworkDirectory = {top / 'work'}\n"
                    f"database = {top / 'cas.db'}\ndebugs = {top / 'debugs'}\n"
                    f"knownIssues = {known}\n")
    assert run("cas-admin", "--config", conf).returncode == 0
    dumps = [(f"{kind}-{d['boot']}", d["path"]) for kind, made in panics["kinds"].items()
             for d in made]
    dumps.sort(key=lambda nd: nd[0].endswith("-2"))  # second boots after every first one
    dumps.append(("sysrq-1", next(d["path"] for d in realdump["dumps"]
                                  if d["variant"] == "makedumpfile-zlib")))
    out = {}
    for n, (name, path) in enumerate(dumps):
        res = run("cas", "--config", conf, "-i", str(70000 + n), "-f", path, "--json",
                  timeout=1800)
        assert res.returncode == 0, (name, res)
        rec = res.record
        with open(rec["mail"]["file"], "rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.default)
        out[name] = (rec, msg.get_body(("plain",)).get_content())
    out["_db"] = str(top / "cas.db")
    out["_conf"] = str(conf)
    return out


def _each(jobs):
    return [(name, rec, text) for name, (rec, text) in
            ((n, v) for n, v in jobs.items() if not n.startswith("_"))]


def test_every_kind_is_classified_with_its_culprit(jobs):
    for name, rec, _text in _each(jobs):
        kind = name.rsplit("-", 1)[0]
        t = rec["triage"]
        assert t["kind"] == KIND[kind], (name, t["evidence"])
        assert t["evidence"], name
        if kind in KERNEL_CULPRIT:
            assert t["culprit"]["function"] == KERNEL_CULPRIT[kind], name
            assert t["culprit"]["module"] is None
        else:
            assert t["culprit"]["module"] == "casfault", name
            assert t["culprit"]["function"].startswith("casfault_"), name
        assert t["source"] == "log", name
        assert any(f.split()[0].startswith(t["culprit"]["function"]) for f in t["backtrace"])


def test_taint_is_decoded(jobs):
    for name, rec, _text in _each(jobs):
        taint = rec["triage"]["taint"]
        if name.split("-")[0] in KERNEL_CULPRIT:
            assert taint["flags"] == "" and taint["source"] == "log", name
        else:
            assert {"O", "E"} <= set(taint["flags"]), name
            assert taint["decoded"]["O"] == "out-of-tree module loaded"
            assert "O" in taint["modules"]["casfault"] and "E" in taint["modules"]["casfault"]


def test_trust_notes_say_what_crash_8_0_2_misses(jobs):
    for name, rec, _text in _each(jobs):
        notes = rec["triage"]["trust"]
        if rec["crash"]["version"] == "8.0.2":
            assert any(n.startswith("crash 8.0.2 is older than this kernel") and
                       "not found in PID hash" in n for n in notes), (name, notes)
        if name == "sysrq-1":
            assert any(n.startswith("dump filtered with -d 31: ") and "user pages" in n
                       for n in notes), notes


def test_mail_starts_with_the_summary_and_lists_the_results(jobs):
    for name, rec, text in _each(jobs):
        lines = text.splitlines()
        if name.startswith(("hung", "softlockup")):
            assert lines[0] == ("Known issue: casfault kthread stalls "
                                "https://bugs.example.org/42"), name
            lines = lines[1:]
        else:
            assert rec["triage"]["known_issue"] is None
        assert [line.split(":")[0] for line in lines[:5]] == SUMMARY, (name, lines[:6])
        assert lines[0].startswith(f"Kind:        {rec['triage']['kind']}")
        assert "Result files:" in text and "    log-tail  " in text
        for r in rec["triage"]["results"]:
            assert f"    {r['name']}  {r['size']:,} bytes" in text
        if rec["triage"]["failed_snippets"]:
            f = rec["triage"]["failed_snippets"][0]
            assert f"Failed snippet: {f['snippet'] or '(snippet not found)'}: " \
                   f"'{f['command']}'" in text


def test_a_second_dump_of_the_same_crash_is_seen_before(jobs):
    first, _ = jobs["null-1"]
    second, text = jobs["null-2"]
    assert first["triage"]["signature"] == second["triage"]["signature"]
    assert [s["identifier"] for s in second["triage"]["seen_before"]] == [first["id"]]
    seen = second["triage"]["seen_before"][0]
    assert f"Seen before: same crash as ticket {first['id']} ({seen['date']}, " \
           f"{first['kernel']['release']})" in text
    assert first["triage"]["seen_before"] == []
    conn = sqlite3.connect(jobs["_db"])
    try:
        rows = conn.execute("SELECT identifier FROM signatures WHERE signature = ?",
                            (first["triage"]["signature"],)).fetchall()
    finally:
        conn.close()
    assert sorted(r[0] for r in rows) == sorted([first["id"], second["id"]])
    listed = run("cas-jobs", "--config", jobs["_conf"], "--signature",
                 first["triage"]["signature"], "--json")
    assert listed.returncode == 0, listed
    assert sorted(j["identifier"] for j in listed.records) == sorted([first["id"], second["id"]])


def test_different_kinds_have_different_signatures(jobs):
    sigs = {}
    for name, rec, _text in _each(jobs):
        sigs.setdefault(rec["triage"]["signature"], set()).add(name.rsplit("-", 1)[0])
    assert all(len(kinds) == 1 for kinds in sigs.values()), sigs
    assert len(sigs) == len(KIND)
