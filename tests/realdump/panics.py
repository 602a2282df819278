"""Real panics of several kinds from the real-dump kernel: build.py's `faultmod` and `panics` steps.

Why: CAS's triage must tell an oops from a soft lockup from an OOM on real dumps, and its
known-crash signature must be the same for two dumps of one bug and different for two
bugs.  Each kind is made by the kernel itself, in the same Debian kernel and QEMU set-up as
the sysrq dump:

  oom         vm.panic_on_oom=1, then dd fills a tmpfs without a size limit (no swap)
  init        /init exits: "Attempted to kill init!"
  null, paging, gpf, stack, bug, warn, softlockup, hung
              casfault.ko (casfault/casfault.c), built here against Debian's
              linux-headers-<release> with the compiler the kernel was built with, and
              panic_on_oops / the stack protector / panic_on_warn / softlockup_panic
              (watchdog_thresh 1) /
              hung_task_panic (timeout 2 s).  Debian kernels load unsigned modules (taint OE).

`faultmod/` holds casfault.ko (with its debug info), the make output and the headers'
package names; when it cannot be built its stamp says why and only the user-space kinds
are made.  `panics/` holds one kdump-compressed dump per boot (QEMU's kdump-zlib stream,
reassembled by makedumpfile -R), its serial log, crash's `sys`/`bt`/`mod -t`/`log` on it
and `panics.json`: kind -> boots -> what crash says (PANIC, task, first frames, taint).
Functions take build.py's module as `b` (its run/log/QMP helpers; one copy of each).
"""

import gzip
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_SRC = os.path.join(HERE, "casfault")
MODULE_KINDS = ("null", "paging", "gpf", "stack", "bug", "warn", "softlockup", "hung")
USER_KINDS = ("oom", "init")
SECOND_BOOT = ("null",)          # kinds dumped twice (two boots), for the signature test
PARALLEL_BOOTS = 2               # 2 cores shared: never more QEMUs than this at once
MARK = "CAS-PANIC:"

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
hostname {hostname}
for m in {modules}; do
    insmod /modules/$m.ko
done
for i in 1 2 3 4; do sleep 1000 & done
sleep 0.2
echo "{mark} kind=$caskind"
case "$caskind" in
oom)
    echo 1 > /proc/sys/vm/panic_on_oom
    mkdir -p /fill
    mount -t tmpfs -o size=0 fill /fill
    dd if=/dev/zero of=/fill/zero bs=1M ;;
init)
    echo "{mark} init exits"
    exit 1 ;;
null|paging|gpf|stack|bug)
    echo 1 > /proc/sys/kernel/panic_on_oops
    insmod /modules/casfault.ko kind=$caskind ;;
warn)
    echo 1 > /proc/sys/kernel/panic_on_warn
    insmod /modules/casfault.ko kind=warn ;;
softlockup)
    echo 1 > /proc/sys/kernel/softlockup_panic
    echo 1 > /proc/sys/kernel/watchdog_thresh
    insmod /modules/casfault.ko kind=softlockup ;;
hung)
    echo 1 > /proc/sys/kernel/hung_task_panic
    echo 2 > /proc/sys/kernel/hung_task_timeout_secs
    insmod /modules/casfault.ko kind=hung ;;
esac
echo "{mark} still alive"
sleep 1000
"""


def _apt_download_checked(b, names: list, out: str) -> dict:
    """apt-get download NAME=VERSION..., each checked against apt's SHA256: {name: file}."""
    stanzas = {(st["Package"], st["Version"]): st for st in b.apt_show(*names)}
    b.run(["apt-get", "download", "-q", *names], cwd=out, timeout=1800)
    files = {}
    for spec in names:
        name, _, version = spec.partition("=")
        st = stanzas.get((name, version))
        found = [f for f in os.listdir(out) if f.startswith(name + "_") and f.endswith(".deb")]
        if not st or len(found) != 1:
            raise b.BuildError(f"apt-get download {spec}: got {found}")
        got = b.sha256(os.path.join(out, found[0]))
        if got != st.get("SHA256"):
            raise b.BuildError(f"{found[0]}: sha256 {got} != apt's {st.get('SHA256')}")
        files[name] = found[0]
    return files


def _headers_packages(b, kernel: dict) -> list:
    """linux-headers-<rel>, the -common package it depends on, and linux-kbuild-<x.y>."""
    version, r = kernel["version"], kernel["uname_r"]
    name = f"linux-headers-{r}"
    st = [s for s in b.apt_show(f"{name}={version}") if s.get("Version") == version]
    if not st:
        raise b.BuildError(f"{name} {version} is not in the apt lists")
    deps = st[0].get("Depends", "")
    common = re.search(r"\b(linux-headers-[\w.+-]*-common(?:-rt)?)\b", deps)
    kbuild = re.search(r"\b(linux-kbuild-\d+\.\d+)\b", deps)
    if not common or not kbuild:
        raise b.BuildError(f"{name} {version}: Depends names no -common or linux-kbuild: {deps}")
    return [f"{name}={version}", f"{common.group(1)}={version}", f"{kbuild.group(1)}={version}"]


def compiler_for(config_text: str) -> tuple:
    """(program, CONFIG_CC_VERSION_TEXT) of the kernel config: 'gcc-12 (Debian 12.2.0-14) 12.2.0'."""
    m = re.search(r'^CONFIG_CC_VERSION_TEXT="([^"]*)"', config_text, re.M)
    text = m.group(1) if m else ""
    return (text.split()[0] if text else "gcc"), text


def step_faultmod(b, kernel: dict, config_path: str, out: str) -> dict:
    """Build casfault.ko against the kernel's headers; {'module': None, 'reason'} when we cannot."""
    with open(config_path) as fh:
        cc, cc_text = compiler_for(fh.read())
    info = {"module": None, "reason": None, "cc": cc, "cc_version_text": cc_text}
    missing = [p for p in ("make", cc) if not shutil.which(p)]
    if missing:
        info["reason"] = (f"cannot build casfault.ko: {', '.join(missing)} not installed (the "
                          f"kernel was built with {cc_text!r}; apt-get install make {cc})")
        return info
    got = b.run([cc, "--version"]).stdout.splitlines()[0]
    info["cc_found"] = got
    work = os.path.join(out, "work")
    os.makedirs(work)
    try:
        specs = _headers_packages(b, kernel)
        debs = _apt_download_checked(b, specs, work)
    except b.BuildError as exc:
        info["reason"] = f"cannot get the kernel headers: {exc}"
        shutil.rmtree(work)
        return info
    info["headers_packages"] = sorted(debs.values())
    root = os.path.join(work, "root")
    for deb in debs.values():
        b.run(["dpkg-deb", "-x", os.path.join(work, deb), root])
    hdr = os.path.join(root, "usr", "src", f"linux-headers-{kernel['uname_r']}")
    makefile = os.path.join(hdr, "Makefile")
    with open(makefile) as fh:
        text = fh.read()
    # Debian's per-flavour Makefile includes the -common one by absolute path: point it here
    text = re.sub(r"^include /usr/src/", f"include {root}/usr/src/", text, flags=re.M)
    with open(makefile, "w") as fh:
        fh.write(text)
    src = os.path.join(work, "casfault")
    shutil.copytree(MODULE_SRC, src)
    # __FILE__ (in "kernel BUG at FILE:LINE!") as casfault/casfault.c, not this build path
    p = b.run(["nice", "make", "-C", hdr, f"M={src}", f"KCFLAGS=-fmacro-prefix-map={work}/=",
               "modules"], check=False, timeout=900)
    with open(os.path.join(out, "make.log"), "w") as fh:
        fh.write(p.stdout + p.stderr)
    ko = os.path.join(src, "casfault.ko")
    if p.returncode != 0 or not os.path.exists(ko):
        info["reason"] = f"make of casfault.ko failed (exit {p.returncode}):\n{b.tail(p.stdout + p.stderr)}"
    else:
        shutil.copyfile(ko, os.path.join(out, "casfault.ko"))
        vermagic = b.run(["modinfo", "-F", "vermagic", ko], check=False).stdout.strip() \
            if shutil.which("modinfo") else None
        info.update(module="casfault.ko", vermagic=vermagic)
        if cc_text and cc_text.split("(", 1)[-1] not in got:
            info["cc_note"] = f"kernel built with {cc_text!r}, module with {got!r}"
    shutil.rmtree(work)
    return info


def write_initrd(b, kernel_dir: str, kinfo: dict, module: str | None, out: str) -> str:
    names = [os.path.basename(m)[:-3] for m in kinfo["modules"]]
    a = b.Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "modules"):
        a.dir(d)
    a.chardev("dev/console", 5, 1)
    with open(shutil.which("busybox"), "rb") as fh:
        a.file("bin/busybox", fh.read(), 0o755)
    a.symlink("bin/sh", "busybox")
    for rel in kinfo["modules"]:
        with open(os.path.join(kernel_dir, rel), "rb") as fh:
            a.file("modules/" + os.path.basename(rel), fh.read())
    if module:
        with open(module, "rb") as fh:
            a.file("modules/casfault.ko", fh.read())
    init = INIT.format(hostname=b.HOSTNAME, modules=" ".join(names), mark=MARK)
    a.file("init", init.encode(), 0o755)
    path = os.path.join(out, "initrd.img")
    with open(path, "wb") as fh:
        fh.write(gzip.compress(a.finish(), 6, mtime=0))
    with open(os.path.join(out, "init"), "w") as fh:
        fh.write(init)
    return path


def boot_and_dump(b, vmlinuz: str, initrd: str, kind: str, name: str, out: str) -> dict:
    """Boot with caskind=KIND, wait for the end of the panic, dump kdump-zlib over QMP."""
    serial = os.path.join(out, f"{name}.serial.log")
    argv = ["nice", "-n", "10", "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "2",
            "-nographic", "-no-reboot", "-device", "vmcoreinfo", "-kernel", vmlinuz,
            "-initrd", initrd, "-append", f"console=ttyS0 panic=0 loglevel=7 caskind={kind}"]
    flat = os.path.join(out, f"{name}.flattened")
    with b.Guest(argv, serial, os.path.join(out, f"{name}.qemu.log"),
                 os.path.join(out, f"{name}.qmp.log")) as g:
        started = time.monotonic()
        deadline = started + b.BOOT_TIMEOUT
        while True:
            text = b.read_text(serial)
            if "---[ end Kernel panic" in text:
                break
            if g.proc.poll() is not None:
                raise b.BuildError(f"{name}: QEMU exited {g.proc.returncode} before the panic:"
                                   f"\n{b.tail(text)}")
            if time.monotonic() > deadline:
                raise b.BuildError(f"{name}: no panic within {b.BOOT_TIMEOUT}s:\n{b.tail(text)}")
            time.sleep(0.3)
        seconds = round(time.monotonic() - started, 2)
        time.sleep(1)  # let the other CPU finish printing
        g.connect(time.monotonic() + 60).execute("stop", deadline=time.monotonic() + 60)
        g.dump(flat, "kdump-zlib")
        g.quit()
    dump = os.path.join(out, f"vmcore.{name}")
    with open(flat, "rb") as fin:
        b.run(["makedumpfile", "-R", dump], stdin=fin)
    os.unlink(flat)
    os.chmod(dump, 0o644)
    text = b.read_text(serial)
    panic = re.findall(r"Kernel panic - not syncing: (.*?)\s*$", text, re.M)
    b.log(f"{name}: panicked after {seconds}s ({panic[0] if panic else '?'}); "
          f"{os.path.getsize(dump)} bytes")
    return {"kind": kind, "file": os.path.basename(dump), "serial_log": os.path.basename(serial),
            "boot_seconds": seconds, "serial_panic_line": panic[0] if panic else None}


def crash_facts(b, vmlinux: str, dump: str, out_path: str) -> dict:
    """What crash says about a dump: PANIC, task, first frames of bt, mod -t, the log's taint."""
    res = b.run_crash(vmlinux, dump, ["sys", "bt", "mod -t", "log"], out_path)
    sysf, sec = res["sys"], res["sections"]
    frames = re.findall(r"^\s*#\d+\s+\[[0-9a-f]+\]\s+(\S+)\s+at\s+[0-9a-f]+(?:\s+\[(\w+)\])?",
                        sec.get("bt", ""), re.M)
    header = re.search(r'^PID:\s*(\d+)\s+TASK:\s*([0-9a-f]+)\s+CPU:\s*(\d+)\s+COMMAND:\s*"(.*)"',
                       sec.get("bt", ""), re.M)
    rip = re.search(r"\[exception RIP:\s*([^\]]+)\]", sec.get("bt", ""))
    tainted = re.findall(r"Tainted:\s+([A-Z ]+?)\s+\d+\.\d+", sec.get("log", ""))
    mod_t = re.findall(r"^\s*(\w+)\s+([A-Z]+)\s*$", sec.get("mod -t", ""), re.M)
    return {"panic": sysf.get("PANIC", "").strip('"'), "tasks": sysf.get("TASKS"),
            "pid": int(header.group(1)) if header else None,
            "task": header.group(4) if header else None,
            "cpu": int(header.group(3)) if header else None,
            "frames": [f + (f" [{m}]" if m else "") for f, m in frames[:12]],
            "exception_rip": rip.group(1).strip() if rip else None,
            "log_tainted": tainted[-1].strip() if tainted else None,
            "mod_taints": {n: t for n, t in mod_t if n != "NAME"}}


def step_panics(b, kernel_dir: str, kinfo: dict, fm_dir: str, fminfo: dict, out: str) -> dict:
    module = os.path.join(fm_dir, fminfo["module"]) if fminfo.get("module") else None
    initrd = write_initrd(b, kernel_dir, kinfo, module, out)
    skipped = {}
    kinds = list(USER_KINDS)
    if module:
        kinds += MODULE_KINDS
    else:
        skipped.update({k: fminfo.get("reason") or "casfault.ko was not built"
                        for k in MODULE_KINDS})
    skipped["hard-lockup"] = ("not made: QEMU TCG has no perf NMI, so the hard-lockup "
                              "detector cannot fire")
    boots = [(k, f"{k}-1") for k in kinds] + [(k, f"{k}-2") for k in SECOND_BOOT if k in kinds]
    vmlinuz = os.path.join(kernel_dir, kinfo["vmlinuz"])
    vmlinux = os.path.join(kernel_dir, kinfo["vmlinux"])

    def one(kind_name):
        kind, name = kind_name
        made = boot_and_dump(b, vmlinuz, initrd, kind, name, out)
        made["crash"] = crash_facts(b, vmlinux, os.path.join(out, made["file"]),
                                    os.path.join(out, f"crash.{name}.txt"))
        made["crash_output"] = f"crash.{name}.txt"
        return name, made

    with ThreadPoolExecutor(PARALLEL_BOOTS) as pool:
        results = dict(pool.map(one, boots))
    by_kind = {}
    for name, made in results.items():
        made["boot"] = int(name.rsplit("-", 1)[1])
        by_kind.setdefault(made["kind"], []).append(made)
    for kind, made in by_kind.items():
        for m in made:
            if not m["crash"]["panic"]:
                raise b.BuildError(f"crash shows no PANIC for {m['file']} ({kind})")
    info = {"kinds": by_kind, "skipped": skipped, "module": fminfo,
            "second_boot": [k for k in SECOND_BOOT if k in by_kind]}
    b.write_json(os.path.join(out, "panics.json"), info)
    return info


def manifest_section(b, cache, fm_dir: str) -> tuple:
    """(manifest 'panics' section, files[] entries) from the panics step's stamp."""
    pdir = cache.path("panics")
    info = cache.stamps["panics"]["info"]
    files, kinds = [], {}
    for kind, made in info["kinds"].items():
        kinds[kind] = []
        for m in sorted(made, key=lambda m: m["boot"]):
            entry = b.file_entry(pdir, m["file"], "panic-dump", format="kdump",
                                 compression="zlib", kind=kind, boot=m["boot"])
            files.append({k: entry[k] for k in ("path", "size", "sha256", "role", "format")})
            kinds[kind].append({**entry, "serial_log": os.path.join(pdir, m["serial_log"]),
                                "serial_panic_line": m["serial_panic_line"],
                                "crash_output": os.path.join(pdir, m["crash_output"]),
                                "boot_seconds": m["boot_seconds"], "crash": m["crash"]})
    mod = dict(info["module"])
    if mod.get("module"):
        mod["path"] = os.path.join(fm_dir, mod["module"])
        files.append(b.file_entry(fm_dir, mod["module"], "test-module", format="elf"))
    section = {"kinds": kinds, "skipped": info["skipped"], "module": mod,
               "second_boot": info["second_boot"]}
    return section, files


def describe(section: dict) -> str:
    return json.dumps({k: [m["crash"]["panic"] for m in v] for k, v in section["kinds"].items()})
