"""Unit tests of cas-crash's parsers (caslib.crashrun.panic) and crash.in builder (caslib.crashrun.snippets).

The crash text comes from real crash runs: tests/data/crash/ (crash 8.0.2 on
a real QEMU dump, see its README) and, for an exception frame, the crash
output quoted in the original CAS documentation (RHEL 4, 2009).
"""

import os
import stat
import sys

import pytest

from caslib import crash as caslib_crash
from caslib.crashrun import panic, snippets
from caslib.records import StepError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "crash")


def lines(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as fh:
        return fh.readlines()


# The original CAS documentation's example mail (crash on a RHEL 4 dump, 2009): a panic
# in do_dlm_lock through an invalid-opcode exception, idle CPUs in default_idle.
CAS_DOC_BT = """\
PID: 0      TASK: ffffffff803e9b80  CPU: 0   COMMAND: "swapper"
 #0 [ffffffff8047a0a0] smp_call_function_interrupt at ffffffff8011d191
 #1 [ffffffff8047a0b0] call_function_interrupt at ffffffff80110bf5
--- <IRQ stack> ---
 #2 [ffffffff80529f08] call_function_interrupt at ffffffff80110bf5
    [exception RIP: default_idle+32]
    RIP: ffffffff8010e7a9  RSP: ffffffff80529fb8  RFLAGS: 00000246
 #3 [ffffffff80529fb8] cpu_idle at ffffffff8010e81c

PID: 6122   TASK: 101f3658030       CPU: 2   COMMAND: "gfs_quotad"
 #0 [101f21efb20] start_disk_dump at ffffffffa03183ff
 #1 [101f21efb50] try_crashdump at ffffffff8014cc1d
 #2 [101f21efb60] die at ffffffff80111c90
 #3 [101f21efb80] do_invalid_op at ffffffff80112058
 #4 [101f21efc40] error_exit at ffffffff80110e1d
    [exception RIP: do_dlm_lock+366]
""".splitlines(True)


def test_sys_fields_of_real_crash_output():
    fields = panic.parse_sys(lines("sys"))
    assert fields["RELEASE"] == "6.1.0-56-cloud-amd64"
    assert fields["PANIC"] == '"Kernel panic - not syncing: sysrq triggered crash"'
    assert "PID" not in fields  # the sys command stops at PANIC
    # crash's start-up display in crash.out (after "please wait..." redraws) goes on
    init = panic.parse_sys(lines("crash.out"))
    assert init["PANIC"] == fields["PANIC"]
    assert init["PID"] == "1" and init["COMMAND"] == '"init"' and init["CPU"] == "1"
    assert init["TASK"].split()[0] == "ffff8da0c120e000"
    assert panic.parse_sys(lines("log")) == {}


def test_panic_message_drops_the_not_syncing_prefix():
    assert panic.panic_message('"Kernel panic - not syncing: sysrq triggered crash"') == \
        "sysrq triggered crash"
    assert panic.panic_message('"Oops: 0002 [#1] SMP "') == "Oops: 0002 [#1] SMP"
    assert panic.panic_message('""') is None
    assert panic.panic_message(None) is None


def test_summary_of_real_output():
    s = panic.summary(lines("sys"), lines("traceback"), lines("log"))
    assert s["message"] == "sysrq triggered crash"
    assert (s["task"], s["pid"], s["cpu"], s["task_address"]) == ("init", 1, 1, "ffff8da0c120e000")
    assert s["backtrace"][:2] == ["panic", "sysrq_handle_crash"]
    assert len(s["backtrace"]) == panic.FRAMES
    assert s["rip"] is None  # a sysrq panic has no exception frame
    assert s["oops"][0].endswith("sysrq: Trigger a crash")
    assert "Kernel panic - not syncing: sysrq triggered crash" in s["oops"][1]
    assert s["oops"][-1].endswith("---[ end Kernel panic - not syncing: sysrq triggered crash ]---")


def test_summary_without_sys_uses_the_log():
    """crash --minimal has no sys or bt: the message still comes from the log."""
    s = panic.summary([], [], lines("log"))
    assert s["message"] == "sysrq triggered crash"
    assert s["pid"] is None and s["backtrace"] == []


def test_backtraces_with_exception_frames():
    blocks = panic.backtraces(CAS_DOC_BT)
    assert [(b.pid, b.cpu, b.command) for b in blocks] == [(0, 0, "swapper"), (6122, 2, "gfs_quotad")]
    assert blocks[0].rip == "default_idle+32"
    assert blocks[0].frames == ["smp_call_function_interrupt", "call_function_interrupt",
                                "call_function_interrupt", "cpu_idle"]
    bt = panic.panic_backtrace(CAS_DOC_BT, pid=6122, task="101f3658030")
    assert bt.rip == "do_dlm_lock+366" and bt.frames[-1] == "error_exit"


def test_sections_and_failed_commands_of_real_output():
    secs = panic.sections(lines("traceback"))
    assert [s.command for s in secs] == [None, "bt >> traceback", "bt -a >> traceback"]
    failed = panic.failed_commands([lines("crash.out"), lines("traceback"), lines("sys")])
    assert failed == [{"command": "bt -a >> traceback",
                       "error": 'bt: invalid size request: 0  type: "stack contents"'}]


def test_failed_commands_forms():
    text = ["crash> foo\n", "crash: command not found: foo\n",
            "crash> sys\n", "crash: sys: command not available in minimal mode\n",
            "crash> log\n", "[    0.000000] bt: not an error of log\n", "crash> exit\n"]
    assert panic.failed_commands([text]) == [
        {"command": "foo", "error": "crash: command not found: foo"},
        {"command": "sys", "error": "crash: sys: command not available in minimal mode"}]


def test_version_and_init_error():
    assert panic.crash_version(lines("crash.out")) == "8.0.2"
    assert panic.init_error(lines("crash.out")) is None
    failed = ["\n", "crash 8.0.2\n", "NOTE: stdin: not a tty\n", "\n",
              "crash: /bin/ls: no debugging data available\n", "\n"]
    assert panic.init_error(failed) == "crash: /bin/ls: no debugging data available"


def test_oops_takes_the_last_report_from_its_first_line():
    log = (["[    1.0] ok\n"] * 5
           + ["[    2.0] BUG: kernel NULL pointer dereference, address: 0000000000000000\n",
              "[    2.0] #PF: supervisor write access in kernel mode\n",
              "[    2.0] Oops: 0002 [#1] PREEMPT SMP NOPTI\n",
              "[    2.0] RIP: 0010:sysrq_handle_crash+0x16/0x20\n",
              "[    2.1] Kernel panic - not syncing: Fatal exception\n"])
    got = panic.oops_lines(log)
    assert got[0].endswith("address: 0000000000000000") and len(got) == 5
    assert panic.log_panic_message(log) == "Fatal exception"
    assert panic.oops_lines(["[ 1.0] nothing to see\n"]) == []


# -- snippets -------------------------------------------------------------------------------

def test_default_snippets_reproduce_the_seed(tmp_path):
    plan = snippets.build(snippets.PACKAGE_SNIPPETS, {}, str(tmp_path))
    assert plan.commands == ["bt >> traceback", "bt -a >> traceback", "bt -l >> bt-lines",
                             "sys >> sys", "sys -c >> sys", "log >> log", "mod >> modules",
                             "mod -t >> taint", "kmem -i >> memory", "kmem -f >> memory",
                             "kmem -s >> slabs", "ps -S >> dstate",
                             "foreach UN ps -m >> dstate", "foreach UN bt >> dstate",
                             "runq >> runq", "exit"]
    assert plan.targets == ["traceback", "bt-lines", "sys", "log", "modules", "taint", "memory",
                            "slabs", "dstate", "runq"]


def test_a_pipe_redirect_names_the_result_the_shell_writes():
    assert snippets.redirect_target("ps -m | grep UN >> dstate") == "dstate"
    assert snippets.redirect_target("log | tail -n 200 > log-tail") == "log-tail"
    assert snippets.redirect_target("bt >> traceback") == "traceback"
    assert snippets.redirect_target("ps | grep UN") is None


def test_module_tree_and_mod_s_first(tmp_path):
    tree = "/w/usr/lib/debug/lib/modules/6.1.0-56-cloud-amd64"
    mods = [tree + "/kernel/drivers/net/dummy.ko", tree + "/kernel/lib/crc7.ko"]
    assert caslib_crash.module_tree(mods) == tree
    assert caslib_crash.module_tree([mods[0]]) == tree
    plan = snippets.build(snippets.PACKAGE_SNIPPETS, {}, str(tmp_path), "/a b/modules")
    assert plan.commands[0] == 'mod -S "/a b/modules"'


def test_executable_snippet_gets_the_job_in_its_environment(tmp_path):
    d = tmp_path / "snippets"
    d.mkdir()
    (d / "10-plain").write_text("# comment\n\nsys >> sys\nexit\n")
    script = d / "20-made"
    script.write_text("#!/bin/sh\necho \"p \\\"$CAS_RELEASE $CAS_MACHINE\\\" >> made\"\n"
                      "echo \"# $CAS_CORE $CAS_VMLINUX $CAS_WORKDIR $(pwd)\"\necho 'foreach bt'\n")
    script.chmod(0o755)
    (d / "30-backup~").write_text("bogus\n")
    (d / ".hidden").write_text("bogus\n")
    env = {"CAS_CORE": "/c", "CAS_VMLINUX": "/v", "CAS_RELEASE": "6.1.0-56-cloud-amd64",
           "CAS_MACHINE": "x86_64", "CAS_WORKDIR": str(tmp_path)}
    plan = snippets.build(str(d), env, str(tmp_path))
    assert plan.commands == ["sys >> sys", 'p "6.1.0-56-cloud-amd64 x86_64" >> made',
                             "foreach bt", "exit"]
    assert plan.targets == ["sys", "made"]
    assert [os.path.basename(p) for p in plan.sources] == ["10-plain", "20-made"]


@pytest.mark.parametrize("content, expect", [
    ("log >> /etc/passwd\n", "results must be plain file names"),
    ("log >> ../log\n", "results must be plain file names"),
    (b"\xff\xfe\x00bt\n", "not UTF-8 text"),
])
def test_bad_snippets(tmp_path, content, expect):
    d = tmp_path / "s"
    d.mkdir()
    (d / "10-x").write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StepError) as exc:
        snippets.build(str(d), {}, str(tmp_path))
    assert expect in exc.value.message and str(d / "10-x") in exc.value.message
    assert exc.value.kind == "bad-snippet"


def test_unreadable_and_failing_snippets(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    if os.geteuid() == 0:  # root reads any mode: a dangling link is what it cannot read
        (d / "10-x").symlink_to(tmp_path / "gone")
        why = "No such file or directory"
    else:
        (d / "10-x").write_text("bt\n")
        (d / "10-x").chmod(0)
        why = "Permission denied"
    with pytest.raises(StepError) as exc:
        snippets.build(str(d), {}, str(tmp_path))
    assert exc.value.message == f"snippet {d / '10-x'}: cannot read: {why}"
    os.unlink(d / "10-x")
    (d / "20-fails").write_text("#!/bin/sh\necho 'no kernel for me' >&2\nexit 3\n")
    (d / "20-fails").chmod(stat.S_IRWXU)
    with pytest.raises(StepError) as exc:
        snippets.build(str(d), {}, str(tmp_path))
    assert exc.value.message == f"snippet {d / '20-fails'}: exited with status 3: no kernel for me"


def test_missing_or_empty_snippets_directory(tmp_path):
    with pytest.raises(StepError, match="no such directory"):
        snippets.build(str(tmp_path / "none"), {}, str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StepError, match="holds no snippet files"):
        snippets.build(str(tmp_path / "empty"), {}, str(tmp_path))


def test_wrapper_quotes_paths_and_passes_arguments(tmp_path):
    """The job's crash script, run with a stand-in that prints its argv (tests our quoting)."""
    show = tmp_path / "show argv"
    show.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    show.chmod(0o755)
    vmlinux, core = "/tmp/it's a vmlinux", '/tmp/core $(touch pwned) "x"'
    wrapper = tmp_path / "crash"
    wrapper.write_text(caslib_crash.wrapper_text(str(show), vmlinux, core))
    wrapper.chmod(0o755)
    import json
    import subprocess
    out = subprocess.run([str(wrapper), "-i", "crash in", "--minimal"], capture_output=True,
                         text=True, cwd=tmp_path, check=True).stdout
    assert json.loads(out) == [vmlinux, core, "-i", "crash in", "--minimal"]
    assert not (tmp_path / "pwned").exists()


def test_init_error_joins_a_reason_on_the_next_line():
    out = ["WARNING: kernel version inconsistency between vmlinux and dumpfile\n", "\n",
           "crash: incompatible arguments: \n",
           "   /j/vmlinux is not SMP -- /j/vmcore is SMP\n", "\n", "Usage:\n"]
    assert panic.init_error(out) == \
        "crash: incompatible arguments: /j/vmlinux is not SMP -- /j/vmcore is SMP"
