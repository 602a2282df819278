#!/usr/bin/env python3
"""make demo: the main job, as a new user meets it, on a real crash dump.

Builds (or reuses) the real dump and debuginfo RPMs of tests/realdump,
packs the dump as customers send it (``tar cJf vmcore.demo.tar.xz``), puts
the RPMs on the built-in default shelf, and runs the real pipeline with
built-in defaults (no config file): ``cas-admin`` to index, then
``cas -i demo -f vmcore.demo.tar.xz``.  Ends by printing, for a person, the
job directory, the kernel, the panic, the panicking task's backtrace and
where the mail went.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
DEMO = os.path.join(ROOT, "demo")
sys.path.insert(0, os.path.join(ROOT, "lib"))
from caslib.messages import summary# noqa: E402  (the mail's five-line triage summary)


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def step(name: str, *args, capture=False) -> subprocess.CompletedProcess:
    argv = [sys.executable, os.path.join(BIN, name), *args]
    say("$ " + " ".join([name, *args]))
    return subprocess.run(argv, text=True, stdout=subprocess.PIPE if capture else None)


def build_realdump() -> dict:
    say("building (or reusing) the real dump: tests/realdump/build.py")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "realdump", "build.py")],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit("demo: the real-dump builder failed (see above)")
    with open(proc.stdout.strip().splitlines()[-1]) as fh:
        return json.load(fh)


def shelf_dir() -> str:
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "cas", "kernels")


def prepare(manifest: dict) -> str:
    os.makedirs(DEMO, exist_ok=True)
    elf = next(d for d in manifest["dumps"] if d["variant"] == "qemu-elf")
    tarball = os.path.join(DEMO, "vmcore.demo.tar.xz")
    if not os.path.exists(tarball):
        link = os.path.join(DEMO, "vmcore.demo")
        if not os.path.exists(link):
            os.link(elf["path"], link) if os.stat(elf["path"]).st_dev == os.stat(DEMO).st_dev \
                else os.symlink(elf["path"], link)
        say(f"packing the dump as a customer would: tar cJf {tarball} vmcore.demo")
        env = dict(os.environ, XZ_OPT="-T0")
        subprocess.run(["tar", "-chJf", tarball + ".part", "-C", DEMO, "vmcore.demo"],
                       check=True, env=env)
        os.replace(tarball + ".part", tarball)
    shelf = shelf_dir()
    os.makedirs(shelf, exist_ok=True)
    for rpm in manifest["rpms"]:
        if rpm["payload"] != "xz" and not rpm.get("decoy"):
            continue  # one real package is enough on the demo shelf; decoys make it a shelf
        target = os.path.join(shelf, os.path.basename(rpm["path"]))
        if not os.path.lexists(target):
            os.symlink(rpm["path"], target)
    return tarball


def main() -> int:
    manifest = build_realdump()
    tarball = prepare(manifest)
    if step("cas-admin").returncode != 0:
        return 1
    proc = step("cas", "-i", "demo", "-f", tarball, "--json", capture=True)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if not lines:
        say("the pipeline printed no result")
        return 1
    record = json.loads(lines[-1])
    crash = record.get("crash") or {}
    panic = crash.get("panic") or {}
    mail = record.get("mail") or {}
    print()
    print(f"Job directory: {record.get('workdir')}")
    print(f"Kernel:        {(record.get('kernel') or {}).get('release')}")
    if record.get("error"):
        err = record["error"]
        print(f"Stopped at:    {err.get('step')}: {err.get('message')}")
        return 1
    print(f"Panic:         {panic.get('message')}")
    print(f"Task:          {panic.get('task')} (pid {panic.get('pid')}, cpu {panic.get('cpu')})")
    triage = record.get("triage") or {}
    for line in summary.lines(triage) if triage else []:
        label, _, text = line.partition(":")   # aligned with the lines above
        print(f"{label + ':':<14} {text.strip()}")
    print("Backtrace:")
    for frame in triage.get("backtrace") or panic.get("backtrace") or []:
        print(f"    {frame}")
    if mail.get("sent"):
        print(f"Mail:          sent to {mail.get('to')}")
    else:
        print(f"Mail:          {mail.get('file')} ({mail.get('reason')})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
