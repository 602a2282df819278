#!/usr/bin/env python3
"""Build (or reuse) CAS's real-dump test bed and print the path of its manifest.json.

    python3 tests/realdump/build.py [--cache DIR] [--kernel-version VER] [--quiet]

What it makes, under ${CAS_REALDUMP_DIR:-${XDG_CACHE_HOME:-~/.cache}/cas/realdump}/<version>/:
  debs/     Debian's linux-image-<rel> and linux-image-<rel>-dbg packages (apt-get download)
  kernel/   boot/vmlinuz-<rel>, the runtime modules the guest loads, and from the -dbg
            package only usr/lib/debug/boot/vmlinux-<rel> and those modules' debug files
  initrd/   a busybox-static initramfs whose /init loads the modules and panics via sysrq
  qemu/     QEMU's own dumps of the panicked guest: ELF and kdump-zlib (a flattened stream)
  dumps/    derived dumps: the flattened stream reassembled (makedumpfile -R), the ELF with
            its program headers moved to offset 64 (makedumpfile 1.7.2 cannot read QEMU
            7.2's layout), and makedumpfile -c / -l / [-z] / -F variants of it
  verify/   crash's output on every dump, readelf's notes, facts.json
  rpms/     Fedora-style kernel-debuginfo RPMs (gzip/, xz/, zstd/) and decoys (decoy/)
  manifest.json  written last; the schema is described in tests/realdump/README.md

Each step builds into <step>.tmp and is renamed into place with a stamp, so an interrupted
run leaves nothing that a later run mistakes for finished work. A run whose manifest and
files (checked by size) are all present only prints the path. Progress goes to stderr;
stdout carries only the manifest path. Standard library only; tools are run as programs.
"""

import argparse
import contextlib
import fcntl
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

try:  # the faultmod and panics steps: real panics of several kinds (panics.py)
    from . import panics
except ImportError:  # run as a script
    import panics

SCHEMA = 1
BUILDER = 1  # bump when what a step makes changes: every stamp of another value is rebuilt
SECTIONS = ("panics",)  # manifest sections of later steps: an older manifest lacks them
HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "kernel-debuginfo.spec")
HOSTNAME = "casdemo"
MARKER = "CAS-REALDUMP: triggering sysrq crash"
PANIC_TEXT = "sysrq triggered crash"
MODULES = ["drivers/firmware/qemu_fw_cfg", "drivers/net/dummy", "lib/crc7"]
BOOT_TIMEOUT = 600      # TCG boot to panic; about 3 s on a 2-core machine
DUMP_TIMEOUT = 600      # each dump-guest-memory; about 1-2 s for 256 MiB
CRASH_TIMEOUT = 600
RPM_PAYLOADS = {        # payload -> _binary_payload; levels chosen so the three fit in ~2 min
    "gzip": "w1.gzdio",
    "xz": "w2T0.xzdio",
    "zstd": "w9T0.zstdio",
}
# program -> Debian package that provides it (all in Debian 12 main)
TOOLS = {
    "apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", "dpkg-deb": "dpkg", "tar": "tar",
    "qemu-system-x86_64": "qemu-system-x86", "crash": "crash",
    "makedumpfile": "makedumpfile", "rpmbuild": "rpm", "rpm": "rpm",
    "busybox": "busybox-static", "readelf": "binutils",
}

_T0 = time.monotonic()
_QUIET = False


class BuildError(Exception):
    """A step failed; the message says why (with a log tail where one helps)."""


def log(msg: str) -> None:
    if not _QUIET:
        print(f"realdump [{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


_CHILDREN = set()  # running child processes, ended on SIGTERM so that nothing outlives us


_STOPPING = []     # set once we are told to stop: queued jobs in worker threads start nothing


def spawn(argv, **kwargs) -> subprocess.Popen:
    if _STOPPING:
        raise BuildError(f"not starting {argv[0]}: stopping")
    proc = subprocess.Popen(argv, **kwargs)
    _CHILDREN.add(proc)
    return proc


def end_children(*_args) -> None:
    _STOPPING.append(True)
    for proc in list(_CHILDREN):
        with contextlib.suppress(OSError):
            proc.kill()


def run(argv, *, cwd=None, input=None, stdin=None, timeout=900, check=True, stdout=None):
    """Run argv (a list), capture text output; raise BuildError with stderr's tail on failure.
    input is text for stdin; stdin/stdout may be open binary files instead."""
    if input is None and stdin is None:
        stdin = subprocess.DEVNULL
    elif input is not None:
        stdin = subprocess.PIPE
    text = stdout is None
    proc = spawn(argv, cwd=cwd, stdin=stdin, stderr=subprocess.PIPE, text=text,
                 stdout=stdout if stdout is not None else subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BuildError(f"{argv[0]} timed out after {timeout}s: {' '.join(argv)}") from exc
    finally:
        _CHILDREN.discard(proc)
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    proc = subprocess.CompletedProcess(argv, proc.returncode, out if text else "", err)
    if check and proc.returncode != 0:
        raise BuildError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail(proc.stdout + err)}")
    return proc


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def describe(path: str) -> dict:
    return {"size": os.path.getsize(path), "sha256": sha256(path)}


def write_json(path: str, data) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# tools and kernel selection

def check_tools() -> None:
    missing = sorted({pkg for prog, pkg in TOOLS.items() if not shutil.which(prog)})
    busybox = shutil.which("busybox")
    if busybox and elf_interp(busybox):
        missing.append("busybox-static (the busybox found is dynamically linked)")
    if missing:
        raise MissingTools("missing programs; install the Debian packages: apt-get install -y "
                           "--no-install-recommends " + " ".join(m.split()[0] for m in missing)
                           + ("\n  " + "\n  ".join(missing) if any(" " in m for m in missing) else ""))


class MissingTools(BuildError):
    pass


def elf_interp(path: str) -> bool:
    """True if the ELF at path has a PT_INTERP (is dynamically linked)."""
    with open(path, "rb") as fh:
        hdr = fh.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return True
        phoff, = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return any(struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum))


def dpkg_version_cmp(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1


def apt_show(*specs: str) -> list:
    """The stanzas of 'apt-cache show SPEC...' as dicts (one apt-cache run: it is slow)."""
    out = run(["apt-cache", "show", *specs], check=False).stdout or ""
    stanzas, key = [], None
    for block in re.split(r"\n\s*\n", out):
        fields = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package"):
            stanzas.append(fields)
    return stanzas


def pick_kernel(pinned: str | None) -> dict:
    """The newest cloud (else generic) amd64 kernel of the apt lists, with its -dbg package."""
    for meta in ("linux-image-cloud-amd64", "linux-image-amd64"):
        metas = {st["Version"]: st for st in apt_show(meta) if st["Package"] == meta}
        versions = sorted(metas, key=functools.cmp_to_key(dpkg_version_cmp))
        if pinned:
            versions = [v for v in versions if v == pinned]
        for version in reversed(versions):
            m = re.search(r"\blinux-image-(\d+\.\d+\.\d+-\d+-[a-z0-9-]*amd64)\b",
                          metas[version].get("Depends", ""))
            if not m:
                continue
            uname_r = m.group(1)
            image, dbg = f"linux-image-{uname_r}", f"linux-image-{uname_r}-dbg"
            found = {st["Package"]: st for st in apt_show(f"{image}={version}", f"{dbg}={version}")
                     if st.get("Version") == version and st.get("SHA256")}
            if image not in found or dbg not in found:
                log(f"{image}/{dbg} {version} not in the apt lists; trying the next")
                continue
            return {"version": version, "meta": meta, "uname_r": uname_r,
                    "packages": {role: {"name": name, "sha256": found[name]["SHA256"],
                                        "size": int(found[name]["Size"])}
                                 for role, name in (("image", image), ("dbg", dbg))}}
    raise BuildError("no linux-image-cloud-amd64 or linux-image-amd64 with a -dbg package in "
                     "the apt lists" + (f" at version {pinned}" if pinned else "")
                     + " (run 'apt-get update' as root first)")


def rpm_version_release(uname_r: str) -> tuple:
    """6.1.0-56-cloud-amd64 -> ('6.1.0', '56_cloud_amd64'); RPM forbids '-' in a release."""
    version, _, rest = uname_r.partition("-")
    return version, rest.replace("-", "_")


# ---------------------------------------------------------------------------------------------
# steps with stamps

class Cache:
    def __init__(self, root: str):
        self.root = root
        self.stamps = {}

    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def step(self, name: str, deps: list, func) -> dict:
        """Run func(tmpdir) unless <name>/.stamp.json is current; returns the stamp."""
        final, stamp_path = self.path(name), self.path(name, ".stamp.json")
        want = {d: self.stamps[d]["token"] for d in deps}
        if os.path.exists(stamp_path):
            with open(stamp_path) as fh:
                stamp = json.load(fh)
            if stamp.get("builder") == BUILDER and stamp.get("deps") == want and all(
                    os.path.exists(os.path.join(final, f)) and os.path.getsize(
                        os.path.join(final, f)) == size for f, size in stamp["sizes"].items()):
                log(f"{name}: cached")
                self.stamps[name] = stamp
                return stamp
        log(f"{name}: building")
        tmp = final + ".tmp"
        for d in (tmp, final):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(tmp)
        started = time.monotonic()
        info = func(tmp) or {}
        sizes = {}
        for dirpath, _dirs, files in os.walk(tmp):
            for f in files:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    sizes[os.path.relpath(p, tmp)] = os.path.getsize(p)
        stamp = {"builder": BUILDER, "token": uuid.uuid4().hex, "deps": want,
                 "seconds": round(time.monotonic() - started, 2), "sizes": sizes, "info": info}
        write_json(os.path.join(tmp, ".stamp.json"), stamp)
        os.rename(tmp, final)
        log(f"{name}: done in {stamp['seconds']}s")
        self.stamps[name] = stamp
        return stamp


# ---------------------------------------------------------------------------------------------
# 1. download and extract

def step_debs(kernel: dict, out: str) -> dict:
    names = [f"{p['name']}={kernel['version']}" for p in kernel["packages"].values()]
    run(["apt-get", "download", "-q", *names], cwd=out, timeout=1800)
    files = {}
    for role, pkg in kernel["packages"].items():
        fname = [f for f in os.listdir(out) if f.startswith(pkg["name"] + "_")]
        if len(fname) != 1:
            raise BuildError(f"apt-get download left {os.listdir(out)}; expected one {pkg['name']}")
        got = sha256(os.path.join(out, fname[0]))
        if got != pkg["sha256"]:
            raise BuildError(f"{fname[0]}: sha256 {got} != apt's {pkg['sha256']}")
        files[role] = fname[0]
    for f in os.listdir(out):
        if f.endswith(".deb"):
            os.chmod(os.path.join(out, f), 0o644)
    return files


def deb_extract(deb: str, dest: str, members: list) -> None:
    """dpkg-deb --fsys-tarfile DEB | tar -x MEMBERS (wildcards): only those members hit disk."""
    dpkg = spawn(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    try:
        tar = spawn(["tar", "-x", "-C", dest, "--wildcards", *members], stdin=dpkg.stdout,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dpkg.stdout.close()
        _out, tar_err = tar.communicate(timeout=1800)
        dpkg_err = dpkg.stderr.read().decode(errors="replace")
        dpkg.wait(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"extracting from {deb} timed out") from exc
    finally:
        for p in (dpkg, locals().get("tar")):
            if p is not None:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                _CHILDREN.discard(p)
    tar_err = tar_err.decode(errors="replace")
    if tar.returncode != 0 or dpkg.returncode not in (0, -signal.SIGPIPE):
        raise BuildError(f"extracting {members} from {deb}: dpkg-deb {dpkg.returncode}, "
                         f"tar {tar.returncode}:\n{tail(dpkg_err + tar_err)}")


def step_kernel(kernel: dict, debs: dict, out: str) -> dict:
    r = kernel["uname_r"]
    image = os.path.join(debs["dir"], debs["image"])
    dbg = os.path.join(debs["dir"], debs["dbg"])
    # the image package first (small), to learn whether qemu_fw_cfg is a module
    deb_extract(image, out, [f"./boot/vmlinuz-{r}", f"./boot/config-{r}"])
    with open(os.path.join(out, "boot", f"config-{r}")) as fh:
        config = fh.read()
    wanted = list(MODULES)
    if re.search(r"^CONFIG_FW_CFG_SYSFS=y$", config, re.M):
        wanted.remove("drivers/firmware/qemu_fw_cfg")
        log("qemu_fw_cfg is built in")
    elif not re.search(r"^CONFIG_FW_CFG_SYSFS=m$", config, re.M):
        raise BuildError("the kernel has no qemu_fw_cfg (CONFIG_FW_CFG_SYSFS): no VMCOREINFO")
    # module files may be .ko, .ko.xz or .ko.zst depending on the Debian release
    mods = [f"./lib/modules/{r}/kernel/{m}.ko*" for m in wanted]
    dbg_members = [f"./usr/lib/debug/boot/vmlinux-{r}"] + [
        f"./usr/lib/debug/lib/modules/{r}/kernel/{m}.ko*" for m in wanted]
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(deb_extract, image, out, mods),
                pool.submit(deb_extract, dbg, out, dbg_members)]
        for j in jobs:
            j.result()
    runtime = []
    for m in wanted:
        base = os.path.join(out, "lib", "modules", r, "kernel", m)
        runtime.append(os.path.relpath(decompress_module(base), out))
    debug_modules = []
    for m in wanted:
        base = os.path.join(out, "usr", "lib", "debug", "lib", "modules", r, "kernel", m)
        debug_modules.append(os.path.relpath(decompress_module(base), out))
    vmlinux = f"usr/lib/debug/boot/vmlinux-{r}"
    return {"vmlinuz": f"boot/vmlinuz-{r}", "config": f"boot/config-{r}", "vmlinux": vmlinux,
            "modules": runtime, "debug_modules": debug_modules,
            "module_paths": [f"kernel/{m}.ko" for m in wanted],
            "vmlinux_build_id": readelf_build_id(os.path.join(out, vmlinux))}


def decompress_module(base: str) -> str:
    """base.ko, base.ko.xz or base.ko.zst -> base.ko (busybox insmod wants it uncompressed)."""
    if os.path.exists(base + ".ko"):
        return base + ".ko"
    for suffix, argv, pkg in ((".ko.xz", ["xz", "-dc"], "xz-utils"),
                              (".ko.zst", ["zstd", "-dcq"], "zstd"),
                              (".ko.gz", ["gzip", "-dc"], "gzip")):
        if os.path.exists(base + suffix):
            if not shutil.which(argv[0]):
                raise MissingTools(f"{argv[0]} is needed for {base + suffix}: install {pkg}")
            with open(base + ".ko", "wb") as fh:
                run(argv + [base + suffix], stdout=fh)
            os.unlink(base + suffix)
            return base + ".ko"
    raise BuildError(f"module {base}.ko* not found in the package")


def readelf_build_id(path: str) -> str:
    out = run(["readelf", "-n", "--wide", path]).stdout
    m = re.search(r"Build ID:\s*([0-9a-f]+)", out)
    if not m:
        raise BuildError(f"readelf -n {path}: no GNU build-id")
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# 2. initramfs (cpio newc written here, so no root and no cpio program are needed)

INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
hostname {hostname}
for m in {modules}; do
    insmod /modules/$m.ko && echo "CAS-REALDUMP: loaded $m"
done
ls /sys/firmware/qemu_fw_cfg/by_name/etc/vmcoreinfo >/dev/null 2>&1 \
    && echo "CAS-REALDUMP: fw_cfg etc/vmcoreinfo present"
for i in 1 2 3 4; do sleep 1000 & done
sleep 0.2
cat /proc/modules
uname -a
echo "{marker}"
echo c > /proc/sysrq-trigger
echo "CAS-REALDUMP: still alive after sysrq"
sleep 1000
"""


class Newc:
    """A cpio 'newc' archive (the initramfs format): linux Documentation/driver-api/early-userspace."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name_b), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755, nlink=2)

    def file(self, name, data: bytes, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name, target):
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0, nlink=1)
        return self.buf.getvalue()


def step_initrd(kernel_dir: str, kinfo: dict, out: str) -> dict:
    busybox = shutil.which("busybox")
    names = [os.path.basename(m)[:-3] for m in kinfo["modules"]]
    a = Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "modules"):
        a.dir(d)
    a.chardev("dev/console", 5, 1)
    with open(busybox, "rb") as fh:
        a.file("bin/busybox", fh.read(), 0o755)
    a.symlink("bin/sh", "busybox")
    for rel in kinfo["modules"]:
        with open(os.path.join(kernel_dir, rel), "rb") as fh:
            a.file("modules/" + os.path.basename(rel), fh.read())
    init = INIT.format(hostname=HOSTNAME, modules=" ".join(names), marker=MARKER)
    a.file("init", init.encode(), 0o755)
    with open(os.path.join(out, "initrd.img"), "wb") as fh:
        fh.write(gzip.compress(a.finish(), 6, mtime=0))
    with open(os.path.join(out, "init"), "w") as fh:
        fh.write(init)
    return {"initrd": "initrd.img", "modules_loaded": names}


# ---------------------------------------------------------------------------------------------
# 3. QEMU: boot, wait for the panic, dump over QMP

class QMP:
    def __init__(self, path: str, deadline: float, logfile):
        self.logfile = logfile
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise BuildError(f"cannot connect to QMP socket {path}")
                time.sleep(0.2)
        self.buf = b""
        self.events = []
        self.recv(deadline)  # greeting
        self.execute("qmp_capabilities", deadline=deadline)

    def recv(self, deadline: float) -> dict:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BuildError("timed out waiting for QMP")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout as exc:
                raise BuildError("timed out waiting for QMP") from exc
            if not chunk:
                raise BuildError("QEMU closed the QMP connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.logfile.write(line.decode(errors="replace") + "\n")
        self.logfile.flush()
        return json.loads(line)

    def execute(self, command: str, deadline: float, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.logfile.write("> " + json.dumps(msg) + "\n")
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.recv(deadline)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise BuildError(f"QMP {command}: {reply['error']}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, deadline: float) -> dict:
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name:
                    return self.events.pop(i)
            ev = self.recv(deadline)
            if "event" in ev:
                self.events.append(ev)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


class Guest:
    """A QEMU guest booted with ``argv`` plus a private QMP socket, ended however the
    block ends: ``quit`` over QMP when asked nicely, else its process group killed."""

    def __init__(self, argv: list, serial: str, qemu_log: str, qmp_log: str):
        self.sockdir = tempfile.mkdtemp(prefix="cas-qmp-")  # AF_UNIX paths are short
        self.sock = os.path.join(self.sockdir, "qmp.sock")
        self.argv = argv + ["-serial", f"file:{serial}", "-monitor", "none",
                            "-qmp", f"unix:{self.sock},server=on,wait=off"]
        self.serial, self.qemu_log, self.qmp_log = serial, qemu_log, qmp_log
        self.proc = self.qmp = None

    def __enter__(self):
        self._qlog = open(self.qemu_log, "wb")
        self._qmplog = open(self.qmp_log, "w")
        log("booting the guest: " + " ".join(self.argv))
        self.proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=self._qlog,
                          stderr=self._qlog, start_new_session=True)
        return self

    def connect(self, deadline: float) -> "QMP":
        self.qmp = QMP(self.sock, deadline, self._qmplog)
        return self.qmp

    def dump(self, path: str, fmt: str) -> None:
        """``dump-guest-memory`` in ``fmt`` to ``path``, waited for up to DUMP_TIMEOUT."""
        deadline = time.monotonic() + DUMP_TIMEOUT
        self.qmp.execute("dump-guest-memory", deadline=deadline, paging=False,
                         protocol=f"file:{path}", detach=True, format=fmt)
        ev = self.qmp.wait_event("DUMP_COMPLETED", deadline)
        if ev.get("data", {}).get("result", {}).get("status") != "completed" \
                or ev.get("data", {}).get("error"):
            raise BuildError(f"dump-guest-memory {fmt}: {ev}")

    def quit(self) -> None:
        with contextlib.suppress(BuildError):
            self.qmp.execute("quit", deadline=time.monotonic() + 10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)

    def __exit__(self, *exc):
        if self.qmp:
            self.qmp.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _CHILDREN.discard(self.proc)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        self._qlog.close()
        self._qmplog.close()


def read_text(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def step_qemu(vmlinuz: str, initrd: str, out: str) -> dict:
    serial = os.path.join(out, "serial.log")
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "2", "-nographic",
            "-no-reboot", "-device", "vmcoreinfo", "-kernel", vmlinuz, "-initrd", initrd,
            "-append", "console=ttyS0 panic=0 loglevel=7"]
    dumps = {"qemu-elf": ("elf", "vmcore.qemu-elf"),
             "qemu-kdump-flattened": ("kdump-zlib", "vmcore.qemu-kdump-flattened")}
    with Guest(argv, serial, os.path.join(out, "qemu.log"), os.path.join(out, "qmp.log")) as g:
        started = time.monotonic()
        deadline = started + BOOT_TIMEOUT
        panic_seen = None
        while True:
            text = read_text(serial)
            if "---[ end Kernel panic" in text:
                break
            if "Kernel panic - not syncing" in text:
                panic_seen = panic_seen or time.monotonic()
                if time.monotonic() - panic_seen > 20:
                    break
            if g.proc.poll() is not None:
                raise BuildError(f"QEMU exited {g.proc.returncode} before the guest panicked:\n"
                                 f"{tail(read_text(g.qemu_log), 20)}\n--- serial log tail:\n"
                                 f"{tail(text)}")
            if time.monotonic() > deadline:
                raise BuildError(f"the guest did not panic within {BOOT_TIMEOUT}s; serial log "
                                 f"tail:\n{tail(text)}")
            time.sleep(0.2)
        boot_seconds = round(time.monotonic() - started, 2)
        text = read_text(serial)
        panic = re.search(r"Kernel panic - not syncing: (.*?)\s*$", text, re.M)
        if MARKER not in text or not panic or PANIC_TEXT not in panic.group(1):
            raise BuildError(f"the guest panicked, but not from our sysrq:\n{tail(text)}")
        log(f"guest panicked after {boot_seconds}s: {panic.group(1)}")
        g.connect(time.monotonic() + 60).execute("stop", deadline=time.monotonic() + 60)
        for variant, (fmt, name) in dumps.items():  # both dumps see the same memory
            path = os.path.join(out, name)
            t = time.monotonic()
            g.dump(path, fmt)
            os.chmod(path, 0o644)
            log(f"{variant}: {os.path.getsize(path)} bytes in {time.monotonic() - t:.1f}s")
        g.quit()
    offset = re.search(r"Kernel Offset: (0x[0-9a-f]+|disabled)", text)
    version = run(["qemu-system-x86_64", "--version"]).stdout.splitlines()[0]
    return {"dumps": {v: {"file": n, "qemu_format": f} for v, (f, n) in dumps.items()},
            "boot_seconds": boot_seconds, "panic_line": panic.group(0),
            "kernel_offset": offset.group(1) if offset else None, "qemu_version": version}


# ---------------------------------------------------------------------------------------------
# 4. derived dumps

def fix_qemu_elf(src: str, dst: str) -> dict:
    """Copy a QEMU 7.x ELF dump with its program headers moved to offset 64.

    QEMU 7.2 (dump/dump.c) writes the section header table at e_shoff=64 and the program
    headers after it, and sets e_ehsize to 8; makedumpfile 1.7.2 only finds program headers
    that follow the ELF header ("Can't get the number of PT_LOAD"). The two tables are
    contiguous, so swapping them changes no other offset: e_phoff becomes 64, e_shoff
    64 + phnum * phentsize, e_ehsize 64. Segment and section contents stay where they were.
    """
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        hdr = bytearray(fh.read(64))
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
            raise BuildError(f"{src}: not a little-endian ELF64 file")
        phoff, shoff = struct.unpack_from("<QQ", hdr, 32)
        ehsize, phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHHH", hdr, 52)
        before = {"e_phoff": phoff, "e_shoff": shoff, "e_ehsize": ehsize,
                  "e_phnum": phnum, "e_shnum": shnum}
        if phoff != 64:
            if not (shoff == 64 and phoff == 64 + shnum * shentsize):
                raise BuildError(f"{src}: unexpected layout {before}")
            fh.seek(phoff)
            phdrs = fh.read(phentsize * phnum)
            fh.seek(shoff)
            shdrs = fh.read(shentsize * shnum)
            fh.seek(64)
            fh.write(phdrs + shdrs)
            struct.pack_into("<QQ", hdr, 32, 64, 64 + len(phdrs))
        struct.pack_into("<H", hdr, 52, 64)
        fh.seek(0)
        fh.write(hdr)
    return {"before": before, "after": {"e_phoff": 64, "e_shoff": 64 + phentsize * phnum
                                        if phoff != 64 else shoff, "e_ehsize": 64}}


def makedumpfile_features() -> dict:
    out = run(["makedumpfile", "-v"], check=False)
    text = (out.stdout or "") + (out.stderr or "")
    feats = dict(re.findall(r"^(lzo|snappy|zstd)\s+(enabled|disabled)", text, re.M))
    version = re.search(r"version (\S+)", text)
    return {"version": version.group(1) if version else "?",
            **{k: v == "enabled" for k, v in feats.items()}}


def step_dumps(qemu_dir: str, qinfo: dict, out: str) -> dict:
    elf = os.path.join(qemu_dir, qinfo["dumps"]["qemu-elf"]["file"])
    flat = os.path.join(qemu_dir, qinfo["dumps"]["qemu-kdump-flattened"]["file"])
    made, warnings = {}, set()
    # qemu kdump-zlib is a flattened stream: reassemble it
    name = "vmcore.qemu-kdump-reassembled"
    with open(flat, "rb") as fin:
        run(["makedumpfile", "-R", os.path.join(out, name)], stdin=fin)
    made["qemu-kdump-reassembled"] = {"file": name, "format": "kdump", "compression": "zlib"}
    fixed = "vmcore.qemu-elf-fixed"
    fix = fix_qemu_elf(elf, os.path.join(out, fixed))
    made["qemu-elf-fixed"] = {"file": fixed, "format": "elf", "compression": None}
    feats = makedumpfile_features()
    variants = [("makedumpfile-zlib", ["-c"], "zlib"), ("makedumpfile-lzo", ["-l"], "lzo")]
    skipped = {}
    if feats.get("zstd"):
        variants.append(("makedumpfile-zstd", ["-z"], "zstd"))
    else:
        skipped["makedumpfile-zstd"] = f"makedumpfile {feats['version']} built without zstd"
    src = os.path.join(out, fixed)
    for variant, opts, comp in variants:
        name = "vmcore." + variant
        t = time.monotonic()
        p = run(["makedumpfile", *opts, "-d", "31", src, os.path.join(out, name)])
        warnings.update(w for w in re.findall(r"^(The kernel version is not supported\.)",
                                              p.stdout + p.stderr, re.M))
        made[variant] = {"file": name, "format": "kdump", "compression": comp,
                         "command": f"makedumpfile {' '.join(opts)} -d 31"}
        log(f"{variant}: {os.path.getsize(os.path.join(out, name))} bytes in "
            f"{time.monotonic() - t:.1f}s")
    name = "vmcore.makedumpfile-flattened"
    with open(os.path.join(out, name), "wb") as fh:
        run(["makedumpfile", "-F", "-c", "-d", "31", src], stdout=fh)
    made["makedumpfile-flattened"] = {"file": name, "format": "flattened", "compression": "zlib",
                                      "command": "makedumpfile -F -c -d 31 > FILE"}
    for m in made.values():
        p = os.path.join(out, m["file"])
        os.chmod(p, 0o644)
        with open(p, "rb") as fh:
            head = fh.read(16)
        want = {"elf": b"\x7fELF", "kdump": b"KDUMP   ", "flattened": b"makedumpfile\0"}
        if not head.startswith(want[m["format"]]):
            raise BuildError(f"{m['file']}: does not start with {want[m['format']]!r}: {head!r}")
    return {"dumps": made, "elf_fix": fix, "makedumpfile": feats, "skipped": skipped,
            "makedumpfile_warnings": sorted(warnings)}


# ---------------------------------------------------------------------------------------------
# 5. independent facts: crash and readelf

CRASH_FIELDS = ("KERNEL", "DUMPFILE", "CPUS", "DATE", "UPTIME", "TASKS", "NODENAME",
                "RELEASE", "VERSION", "MACHINE", "MEMORY", "PANIC")


def parse_crash_sys(text: str) -> dict:
    fields = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Z][A-Z ]*[A-Z]):\s(.*)$", line)
        if m and m.group(1) in CRASH_FIELDS and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2).strip()
    return fields


def run_crash(vmlinux: str, dump: str, commands: list, out_path: str) -> dict:
    script = "set scroll off\n" + "".join(f"!echo '=== {c}'\n{c}\n" for c in commands) + "quit\n"
    p = run(["crash", "-s", "--no_crashrc", vmlinux, dump], input=script,
            timeout=CRASH_TIMEOUT, check=False)
    text = p.stdout + ("\n--- stderr:\n" + p.stderr if p.stderr.strip() else "")
    with open(out_path, "w") as fh:
        fh.write(text)
    sections = {}
    for chunk in re.split(r"^=== ", p.stdout, flags=re.M)[1:]:
        cmd, _, body = chunk.partition("\n")
        sections[cmd.strip()] = body
    sys_fields = parse_crash_sys(sections.get("sys", ""))
    if p.returncode != 0 or "RELEASE" not in sys_fields:
        raise BuildError(f"crash could not open {dump} (exit {p.returncode}):\n{tail(text)}")
    return {"sys": sys_fields, "sections": sections}


def readelf_vmcoreinfo(dump: str) -> dict:
    """VMCOREINFO of an ELF dump, read by binutils' readelf (independent of our parsers)."""
    out = run(["readelf", "-n", "--wide", dump]).stdout
    m = re.search(r"^\s*VMCOREINFO\s+0x[0-9a-f]+\s.*?description data:((?:\s+[0-9a-f]{2})+)",
                  out, re.M)
    if not m:
        raise BuildError(f"readelf -n {dump}: no VMCOREINFO note (is qemu_fw_cfg loaded?)")
    text = bytes(int(b, 16) for b in m.group(1).split()).decode(errors="replace")
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key not in info:
            info[key] = value
    notes = re.findall(r"^\s+(\S+)\s+0x[0-9a-f]+\s+(NT_\w+|Unknown note type: \(0x[0-9a-f]+\))",
                       out, re.M)
    return {"info": info, "text": text, "notes": [f"{n}/{t}" for n, t in notes]}


def step_verify(vmlinux: str, dumps: dict, kernel: dict, kinfo: dict, qinfo: dict,
                out: str) -> dict:
    """crash on every dump (all must open and agree), readelf on the vmlinux and ELF dump."""
    jobs = {}
    with ThreadPoolExecutor(2) as pool:
        for variant, path in dumps.items():
            cmds = ["sys", "bt", "log", "mod", "ps"] if variant == "qemu-elf" else ["sys", "mod"]
            jobs[variant] = pool.submit(run_crash, vmlinux, path, cmds,
                                        os.path.join(out, f"crash.{variant}.txt"))
        results = {v: j.result() for v, j in jobs.items()}
    primary = results["qemu-elf"]
    for variant, res in results.items():
        s = res["sys"]
        if s.get("RELEASE") != kernel["uname_r"] or s.get("NODENAME") != HOSTNAME \
                or PANIC_TEXT not in s.get("PANIC", ""):
            raise BuildError(f"crash on {variant} disagrees: {s}")
        for key in ("RELEASE", "VERSION", "MACHINE", "NODENAME", "PANIC"):
            if s.get(key) != primary["sys"].get(key):
                raise BuildError(f"crash on {variant}: {key} {s.get(key)!r} != qemu-elf's "
                                 f"{primary['sys'].get(key)!r}")
        log(f"crash opened {variant}: {s.get('RELEASE')} {s.get('NODENAME')} {s.get('PANIC')}")
    crash_modules = sorted(set(re.findall(r"^\s*[0-9a-f]{16}\s+(\w+)\s+[0-9a-f]{16}\s",
                                          primary["sections"].get("mod", ""), re.M)))
    vmci = readelf_vmcoreinfo(dumps["qemu-elf"])
    with open(os.path.join(out, "readelf-vmcoreinfo.txt"), "w") as fh:
        fh.write(vmci["text"])
    vm_bid = kinfo["vmlinux_build_id"]
    problems = []
    if vmci["info"].get("OSRELEASE") != kernel["uname_r"]:
        problems.append(f"VMCOREINFO OSRELEASE {vmci['info'].get('OSRELEASE')}")
    if vmci["info"].get("BUILD-ID") != vm_bid:
        problems.append(f"VMCOREINFO BUILD-ID {vmci['info'].get('BUILD-ID')} != vmlinux {vm_bid}")
    if problems:
        raise BuildError("facts disagree: " + "; ".join(problems))
    sys_text = primary["sections"]["sys"].strip("\n")
    facts = {
        "crash_sys": sys_text,
        "crash_sys_fields": primary["sys"],
        "crash_version": (re.findall(r"crash \S+", run(["crash", "--version"]).stdout)
                          or ["?"])[0],
        "crash_modules": crash_modules,
        "crash_per_dump": {v: r["sys"] for v, r in results.items()},
        "readelf_vmcoreinfo": {k: vmci["info"].get(k) for k in
                               ("OSRELEASE", "BUILD-ID", "PAGESIZE", "KERNELOFFSET",
                                "CRASHTIME", "SYMBOL(init_uts_ns)", "OFFSET(uts_namespace.name)",
                                "NUMBER(phys_base)")},
        "vmcoreinfo": vmci["info"],
        "elf_notes": vmci["notes"],
        "readelf_vmlinux_build_id": vm_bid,
        "serial_panic_line": qinfo["panic_line"],
        "serial_kernel_offset": qinfo["kernel_offset"],
        "qemu_version": qinfo["qemu_version"],
    }
    write_json(os.path.join(out, "facts.json"), facts)
    return {"facts": "facts.json", "crash_outputs": {v: f"crash.{v}.txt" for v in results}}


# ---------------------------------------------------------------------------------------------
# 5b. split dumps and a kdump directory's dmesg (a later step with its own stamp and manifest
#     section "split": added to a complete cache without rebuilding anything else)

SPLIT_SETS = {"split-zlib": ("-c", 3), "split-lzo": ("-l", 2)}


def step_split(dumps_dir: str, vmlinux: str, kernel_release: str, out: str) -> dict:
    """makedumpfile --split of the fixed ELF into parts (zlib and lzo), each set opened by
    crash with all its parts; makedumpfile --dump-dmesg writes a kdump directory's
    vmcore-dmesg.txt.  --splitblock-size 4096 (KiB): the default 1 GiB block would put
    all of a 256 MiB guest into the first part."""
    src = os.path.join(dumps_dir, "vmcore.qemu-elf-fixed")
    sets = {}
    for variant, (opt, count) in SPLIT_SETS.items():
        names = [f"vmcore.{variant}.{i}" for i in range(1, count + 1)]
        run(["makedumpfile", "--split", "--splitblock-size", "4096", opt, "-d", "31", src,
             *[os.path.join(out, n) for n in names]])
        for n in names:
            os.chmod(os.path.join(out, n), 0o644)
            with open(os.path.join(out, n), "rb") as fh:
                if fh.read(8) != b"KDUMP   ":
                    raise BuildError(f"{n}: not a kdump file")
        script = "set scroll off\n!echo '=== sys'\nsys\nquit\n"
        p = run(["crash", "-s", "--no_crashrc", vmlinux, *names], cwd=out, input=script,
                timeout=CRASH_TIMEOUT, check=False)
        with open(os.path.join(out, f"crash.{variant}.txt"), "w") as fh:
            fh.write(p.stdout + p.stderr)
        sys_fields = parse_crash_sys(p.stdout.partition("=== sys")[2])
        if p.returncode != 0 or sys_fields.get("RELEASE") != kernel_release \
                or PANIC_TEXT not in sys_fields.get("PANIC", "") \
                or p.stdout.count("[PARTIAL DUMP]") != count:
            raise BuildError(f"crash could not open the {variant} parts together "
                             f"(exit {p.returncode}):\n{tail(p.stdout + p.stderr)}")
        log(f"crash opened {variant} ({count} parts): {sys_fields.get('RELEASE')}")
        sets[variant] = {"files": names, "compression": variant.split("-")[1],
                         "command": f"makedumpfile --split --splitblock-size 4096 {opt} -d 31",
                         "crash_sys": sys_fields, "crash_output": f"crash.{variant}.txt"}
    # a dump cut while makedumpfile wrote it: a 2 MiB file size limit (SIGXFSZ ignored, so
    # the write fails with EFBIG and makedumpfile stops, as it does on a full disk)
    cut = "vmcore.cut-2MiB"
    p = run(["sh", "-c", 'trap "" XFSZ; ulimit -f 4096; exec "$@"', "sh", "makedumpfile",
             "-c", "-d", "31", src, os.path.join(out, cut)], check=False)
    if p.returncode == 0 or os.path.getsize(os.path.join(out, cut)) != 2 << 20:
        raise BuildError(f"makedumpfile under a 2 MiB file size limit: exit {p.returncode}, "
                         f"{os.path.getsize(os.path.join(out, cut))} bytes")
    os.chmod(os.path.join(out, cut), 0o644)
    said = [line for line in (p.stdout + p.stderr).splitlines() if "Can't write" in line]
    dmesg = "vmcore-dmesg.txt"
    run(["makedumpfile", "--dump-dmesg", src, os.path.join(out, dmesg)])
    with open(os.path.join(out, dmesg), errors="replace") as fh:
        text = fh.read()
    if PANIC_TEXT not in text:
        raise BuildError(f"makedumpfile --dump-dmesg: no {PANIC_TEXT!r} in {dmesg}")
    return {"sets": sets, "dmesg": dmesg, "cut": {"file": cut, "makedumpfile_said": said,
                                                   "command": "ulimit -f 4096; makedumpfile "
                                                              "-c -d 31 (SIGXFSZ ignored)"}}


def add_split_section(manifest_path: str) -> None:
    """Build the split step into the manifest's cache directory, if it is not there, and
    record it in the manifest's "split" section (and its files in "files")."""
    with open(manifest_path) as fh:
        manifest = json.load(fh)
    root = os.path.dirname(manifest_path)
    if "cut" in manifest.get("split", {}) and manifest_ok(manifest_path):
        return
    cache = Cache(root)
    with open(root + ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        with open(cache.path("dumps", ".stamp.json")) as fh:
            cache.stamps["dumps"] = json.load(fh)
        cache.step("split", ["dumps"], lambda out: step_split(
            cache.path("dumps"), manifest["vmlinux"], manifest["kernel"]["release"], out))
        info = cache.stamps["split"]["info"]
        sdir = cache.path("split")
        section = {"sets": {v: {**{k: d[k] for k in ("compression", "command", "crash_sys")},
                                "paths": [os.path.join(sdir, f) for f in d["files"]],
                                "crash_output": os.path.join(sdir, d["crash_output"])}
                            for v, d in info["sets"].items()},
                   "dmesg": os.path.join(sdir, info["dmesg"]),
                   "cut": dict(info["cut"], path=os.path.join(sdir, info["cut"]["file"]))}
        files = [f for f in manifest["files"] if not f["path"].startswith(sdir + os.sep)]
        for d in info["sets"].values():
            files += [file_entry(sdir, f, "split-dump", format="kdump") for f in d["files"]]
        files.append(file_entry(sdir, info["dmesg"], "vmcore-dmesg", format="text"))
        files.append(file_entry(sdir, info["cut"]["file"], "cut-dump", format="kdump"))
        manifest.update(split=section, files=files)
        write_json(manifest_path, manifest)


# ---------------------------------------------------------------------------------------------
# 6. RPMs

def tiny_elf(build_id: bytes, banner: str) -> bytes:
    """A small valid x86_64 ELF (ET_EXEC) with a GNU build-id note and a 'Linux version' string:
    a cheap stand-in for a decoy package's vmlinux that readelf/file/eu-* accept."""
    name = b"GNU\0"
    note = struct.pack("<III", len(name), len(build_id), 3) + name + build_id
    rodata = banner.encode() + b"\0"
    shstr = b"\0.note.gnu.build-id\0.rodata\0.shstrtab\0"
    off_note = 64 + 56
    off_ro = off_note + len(note)
    off_str = off_ro + len(rodata)
    off_sh = (off_str + len(shstr) + 7) & ~7
    phdr = struct.pack("<IIQQQQQQ", 4, 4, off_note, 0xffffffff81000000,
                       0x1000000, len(note), len(note), 4)
    def sh(name_off, typ, flags, addr, off, size, align):
        return struct.pack("<IIQQQQIIQQ", name_off, typ, flags, addr, off, size, 0, 0, align, 0)
    shdrs = (sh(0, 0, 0, 0, 0, 0, 0)
             + sh(1, 7, 2, 0xffffffff81000000, off_note, len(note), 4)
             + sh(20, 1, 2, 0xffffffff81000100, off_ro, len(rodata), 1)
             + sh(28, 3, 0, 0, off_str, len(shstr), 1))
    ehdr = (b"\x7fELF\x02\x01\x01" + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0xffffffff81000000, 64, off_sh, 0,
                          64, 56, 1, 64, 4, 3))
    body = ehdr + phdr + note + rodata + shstr
    return body + b"\0" * (off_sh - len(body)) + shdrs


def stage_tree(stage: str, uname_r: str, vmlinux_src: str | None, vmlinux_bytes: bytes | None,
               modules: list) -> dict:
    """usr/lib/debug/lib/modules/<r>/vmlinux, .../kernel/<path>.ko.debug and .build-id links."""
    base = os.path.join(stage, "usr", "lib", "debug")
    moddir = os.path.join(base, "lib", "modules", uname_r)
    os.makedirs(moddir, exist_ok=True)
    vmlinux = os.path.join(moddir, "vmlinux")
    if vmlinux_src:
        link_or_copy(vmlinux_src, vmlinux)
    else:
        with open(vmlinux, "wb") as fh:
            fh.write(vmlinux_bytes)
    members = {"vmlinux": f"/usr/lib/debug/lib/modules/{uname_r}/vmlinux", "modules": [],
               "build_id_links": []}
    targets = [(vmlinux, f"lib/modules/{uname_r}/vmlinux")]
    for src, relpath in modules:
        dst = os.path.join(moddir, relpath + ".debug")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        link_or_copy(src, dst)
        members["modules"].append(f"/usr/lib/debug/lib/modules/{uname_r}/{relpath}.debug")
        targets.append((dst, f"lib/modules/{uname_r}/{relpath}.debug"))
    # Fedora (find-debuginfo): /usr/lib/debug/.build-id/xx/rest.debug -> ../../<debug file>
    for path, rel in targets:
        bid = readelf_build_id(path)
        d = os.path.join(base, ".build-id", bid[:2])
        os.makedirs(d, exist_ok=True)
        os.symlink("../../" + rel, os.path.join(d, bid[2:] + ".debug"))
        members["build_id_links"].append(f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug")
    members["vmlinux_build_id"] = readelf_build_id(vmlinux)
    return members


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def rpmbuild(topdir: str, stage: str, uname_r: str, payload: str) -> str:
    version, release = rpm_version_release(uname_r)
    argv = ["rpmbuild", "-bb", "--quiet", "--nodeps",
            "--define", f"_topdir {topdir}", "--define", f"_tmppath {topdir}/tmp",
            "--define", f"_dbpath {topdir}/rpmdb",
            "--define", f"kd_version {version}", "--define", f"kd_release {release}",
            "--define", f"kd_uname_r {uname_r}", "--define", f"kd_stage {stage}",
            "--define", f"_binary_payload {RPM_PAYLOADS[payload]}",
            "--define", "_build_id_links none", "--define", "_buildhost cas-realdump",
            SPEC]
    os.makedirs(os.path.join(topdir, "tmp"), exist_ok=True)
    t = time.monotonic()
    run(argv, timeout=1800)
    rpm = os.path.join(topdir, "RPMS", "x86_64",
                       f"kernel-debuginfo-{version}-{release}.x86_64.rpm")
    if not os.path.exists(rpm):
        raise BuildError(f"rpmbuild made no {rpm}")
    log(f"rpm {payload} {uname_r}: {os.path.getsize(rpm)} bytes in {time.monotonic() - t:.1f}s")
    return rpm


def rpm_query(path: str) -> dict:
    qf = "%{NAME}\\n%{VERSION}\\n%{RELEASE}\\n%{ARCH}\\n%{PAYLOADCOMPRESSOR}\\n%{PAYLOADFLAGS}\\n"
    out = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, path]).stdout.split("\n")
    files = run(["rpm", "-qlp", "--nosignature", "--nodigest", path]).stdout.split()
    return {"name": out[0], "version": out[1], "release": out[2], "arch": out[3],
            "payload_compressor": out[4], "payload_flags": out[5], "files": files}


def abi_shift(uname_r: str, delta: int) -> str:
    """6.1.0-56-cloud-amd64, +1 -> 6.1.0-57-cloud-amd64: the same flavour, another ABI."""
    m = re.match(r"^(\d+\.\d+\.\d+)-(\d+)-(.*)$", uname_r)
    return f"{m.group(1)}-{int(m.group(2)) + delta}-{m.group(3)}"


def decoys(uname_r: str) -> dict:
    """THE decoy rule, in one place: the releases of the decoy packages built next to the
    real one, by role. The manifest records them ("decoys"); tests read them from there, so
    nothing depends on which kernel the mirror serves."""
    m = re.match(r"^(\d+\.\d+\.\d+-\d+)-(.*)$", uname_r)
    other = "amd64" if m.group(2) != "amd64" else "cloud-amd64"
    return {"older": abi_shift(uname_r, -1), "other_flavour": f"{m.group(1)}-{other}",
            "newer": abi_shift(uname_r, +1)}


def decoy_releases(uname_r: str) -> list:
    return list(decoys(uname_r).values())


def step_rpms(kernel_dir: str, kinfo: dict, kernel: dict, out: str) -> dict:
    r = kernel["uname_r"]
    work = os.path.join(out, "work")
    stage = os.path.join(work, "stage")
    mods = [(os.path.join(kernel_dir, dm), mp)
            for dm, mp in zip(kinfo["debug_modules"], kinfo["module_paths"])]
    members = stage_tree(stage, r, os.path.join(kernel_dir, kinfo["vmlinux"]), None, mods)
    if members["vmlinux_build_id"] != kinfo["vmlinux_build_id"]:
        raise BuildError("staged vmlinux has another build-id")
    jobs, made = {}, []
    with ThreadPoolExecutor(len(RPM_PAYLOADS)) as pool:
        for payload in RPM_PAYLOADS:
            jobs[payload] = pool.submit(rpmbuild, os.path.join(work, "top-" + payload), stage,
                                        r, payload)
        for payload, job in jobs.items():
            dest = os.path.join(out, payload)
            os.makedirs(dest)
            final = os.path.join(dest, os.path.basename(job.result()))
            os.rename(job.result(), final)
            made.append({"file": os.path.relpath(final, out), "payload": payload, "uname_r": r,
                         "decoy": False, **members})
    for i, dr in enumerate(decoy_releases(r)):
        payload = list(RPM_PAYLOADS)[i % len(RPM_PAYLOADS)]
        dstage = os.path.join(work, "stage-" + dr)
        bid = hashlib.sha1(f"cas-realdump decoy {dr}".encode()).digest()
        banner = (f"Linux version {dr} (decoy@cas-realdump) (gcc-12) #1 SMP PREEMPT_DYNAMIC "
                  f"Debian decoy")
        dmembers = stage_tree(dstage, dr, None, tiny_elf(bid, banner), [])
        rpm = rpmbuild(os.path.join(work, "top-" + dr), dstage, dr, payload)
        dest = os.path.join(out, "decoy")
        os.makedirs(dest, exist_ok=True)
        final = os.path.join(dest, os.path.basename(rpm))
        os.rename(rpm, final)
        made.append({"file": os.path.relpath(final, out), "payload": payload, "uname_r": dr,
                     "decoy": True, **dmembers})
    shutil.rmtree(work)
    for m in made:
        q = rpm_query(os.path.join(out, m["file"]))
        version, release = rpm_version_release(m["uname_r"])
        if (q["name"], q["version"], q["release"], q["arch"], q["payload_compressor"]) != \
                ("kernel-debuginfo", version, release, "x86_64", m["payload"]) \
                or m["vmlinux"] not in q["files"]:
            raise BuildError(f"rpm -qp {m['file']} disagrees: {q}")
        m.update(rpm_name=q["name"], rpm_version=q["version"], rpm_release=q["release"],
                 rpm_arch=q["arch"], payload_flags=q["payload_flags"], rpm_files=q["files"])
    return {"rpms": made}


# ---------------------------------------------------------------------------------------------
# manifest

def file_entry(root: str, rel: str, role: str, **extra) -> dict:
    path = os.path.join(root, rel)
    return {"path": path, "role": role, **extra, **describe(path)}


def write_manifest(cache: Cache, kernel: dict, total_seconds: float) -> str:
    st = cache.stamps
    kdir, qdir, ddir = cache.path("kernel"), cache.path("qemu"), cache.path("dumps")
    ki, qi, di = st["kernel"]["info"], st["qemu"]["info"], st["dumps"]["info"]
    with open(cache.path("verify", "facts.json")) as fh:
        facts = json.load(fh)
    dumps = []
    for variant, d in qi["dumps"].items():
        fmt = "elf" if d["qemu_format"] == "elf" else "flattened"
        dumps.append({"name": d["file"], "variant": variant, "format": fmt,
                      "compression": None if fmt == "elf" else "zlib",
                      "source": f"QEMU dump-guest-memory format={d['qemu_format']} paging=false",
                      **file_entry(qdir, d["file"], "dump")})
    for variant, d in di["dumps"].items():
        dumps.append({"name": d["file"], "variant": variant, "format": d["format"],
                      "compression": d["compression"],
                      "source": d.get("command", "derived from qemu dumps"),
                      **file_entry(ddir, d["file"], "dump")})
    for d in dumps:
        d["crash_opens"] = d["variant"] in facts["crash_per_dump"]
    rpms = []
    for m in st["rpms"]["info"]["rpms"]:
        version, release = rpm_version_release(m["uname_r"])
        rpms.append({**file_entry(cache.path("rpms"), m["file"], "debuginfo-rpm"),
                     "payload": m["payload"], "name": m["rpm_name"], "version": m["rpm_version"],
                     "release": m["rpm_release"], "arch": m["rpm_arch"],
                     "uname_r": m["uname_r"], "vmlinux_member": m["vmlinux"],
                     "module_members": m["modules"], "build_id_links": m["build_id_links"],
                     "vmlinux_build_id": m["vmlinux_build_id"], "decoy": m["decoy"],
                     "payload_flags": m["payload_flags"]})
    files = [file_entry(kdir, ki["vmlinux"], "debug-vmlinux", format="elf")]
    files += [file_entry(kdir, m, "debug-module", format="elf") for m in ki["debug_modules"]]
    files += [file_entry(kdir, ki["vmlinuz"], "vmlinuz", format="bzimage")]
    files += [file_entry(kdir, m, "runtime-module", format="elf") for m in ki["modules"]]
    files += [file_entry(cache.path("initrd"), "initrd.img", "initrd", format="cpio-newc-gzip")]
    files += [file_entry(qdir, "serial.log", "serial-log", format="text")]
    files += [file_entry(cache.path("verify"), f, "crash-output", format="text")
              for f in sorted(st["verify"]["info"]["crash_outputs"].values())]
    files += [file_entry(cache.path("verify"), "facts.json", "facts", format="json")]
    files += [file_entry(cache.path("debs"), st["debs"]["info"][k], "deb", format="deb")
              for k in ("image", "dbg")]
    files += [{k: d[k] for k in ("path", "size", "sha256")} | {"role": "dump",
              "format": d["format"]} for d in dumps]
    files += [{k: r[k] for k in ("path", "size", "sha256")} | {"role": "debuginfo-rpm",
              "format": "rpm"} for r in rpms]
    panics_section, panic_files = panics.manifest_section(sys.modules[__name__], cache,
                                                          cache.path("faultmod"))
    files += panic_files
    facts.update({
        "makedumpfile": di["makedumpfile"], "makedumpfile_warnings": di["makedumpfile_warnings"],
        "skipped_variants": di["skipped"], "elf_fix": di["elf_fix"],
        "qemu_boot_seconds": qi["boot_seconds"], "modules_loaded": st["initrd"]["info"]
        ["modules_loaded"]})
    sysf = facts["crash_sys_fields"]
    panic = sysf["PANIC"].strip('"')
    panic = panic.split("not syncing: ", 1)[-1]
    manifest = {
        "schema": SCHEMA, "builder": BUILDER,
        "kernel_package_version": kernel["version"],
        "kernel_packages": {k: v["name"] for k, v in kernel["packages"].items()},
        "kernel": {"release": sysf["RELEASE"], "version": sysf["VERSION"],
                   "machine": sysf["MACHINE"].split()[0], "hostname": sysf["NODENAME"],
                   "build_id": facts["readelf_vmlinux_build_id"], "panic": panic},
        "vmlinux": os.path.join(kdir, ki["vmlinux"]),
        "vmlinuz": os.path.join(kdir, ki["vmlinuz"]),
        "modules": [os.path.join(kdir, m) for m in ki["debug_modules"]],
        "dumps": dumps,
        "rpms": rpms,
        "decoys": decoys(kernel["uname_r"]),
        "files": files,
        "facts": facts,
        "panics": panics_section,
        "build_seconds": {**{n: s["seconds"] for n, s in st.items()},
                          "total_this_run": round(total_seconds, 2)},
    }
    path = cache.path("manifest.json")
    write_json(path, manifest)
    return path


def manifest_ok(path: str) -> bool:
    """The warm path: the manifest parses, is ours, and every file it lists has its size."""
    try:
        with open(path) as fh:
            m = json.load(fh)
        if m.get("schema") != SCHEMA or m.get("builder") != BUILDER \
                or any(key not in m for key in SECTIONS):
            return False
        return all(os.path.getsize(f["path"]) == f["size"] for f in m["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ---------------------------------------------------------------------------------------------

def cache_root(arg: str | None) -> str:
    if arg:
        return os.path.abspath(arg)
    if os.environ.get("CAS_REALDUMP_DIR"):
        return os.path.abspath(os.environ["CAS_REALDUMP_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(xdg, "cas", "realdump")


def cached_manifest(root: str, pinned: str | None) -> str | None:
    """The warm path, without apt: the newest complete build in the cache (or the pinned one)."""
    try:
        versions = [pinned] if pinned else os.listdir(root)
    except FileNotFoundError:
        return None
    good = [v for v in versions if manifest_ok(os.path.join(root, v, "manifest.json"))]
    if not good:
        return None
    newest = sorted(good, key=functools.cmp_to_key(dpkg_version_cmp))[-1]
    return os.path.join(root, newest, "manifest.json")


def build(root: str, pinned: str | None, refresh: bool) -> str:
    if not refresh and (path := cached_manifest(root, pinned)):
        log(f"cache complete: {path}")
        add_split_section(path)
        return path
    check_tools()
    kernel = pick_kernel(pinned)
    log(f"kernel {kernel['packages']['image']['name']} {kernel['version']}")
    cache = Cache(os.path.join(root, kernel["version"]))
    os.makedirs(cache.root, exist_ok=True)
    with open(os.path.join(root, kernel["version"] + ".lock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # one builder per version at a time
        manifest = cache.path("manifest.json")
        if manifest_ok(manifest):
            log("cache complete")
        else:
            _build_steps(cache, kernel, manifest)
    add_split_section(manifest)  # outside the lock, which it takes itself
    return manifest


def _build_steps(cache: Cache, kernel: dict, manifest: str) -> str:
    """Every step before the manifest (the caller holds the version lock)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(manifest)
    started = time.monotonic()
    r = kernel["uname_r"]
    cache.step("debs", [], lambda out: step_debs(kernel, out))
    debs = dict(cache.stamps["debs"]["info"], dir=cache.path("debs"))
    cache.step("kernel", ["debs"], lambda out: step_kernel(kernel, debs, out))
    kinfo = cache.stamps["kernel"]["info"]
    kdir = cache.path("kernel")
    cache.step("initrd", ["kernel"], lambda out: step_initrd(kdir, kinfo, out))
    cache.step("qemu", ["kernel", "initrd"], lambda out: step_qemu(
        os.path.join(kdir, kinfo["vmlinuz"]), cache.path("initrd", "initrd.img"), out))
    qinfo = cache.stamps["qemu"]["info"]
    cache.step("dumps", ["qemu"], lambda out: step_dumps(cache.path("qemu"), qinfo, out))
    dinfo = cache.stamps["dumps"]["info"]
    all_dumps = {v: cache.path("qemu", d["file"]) for v, d in qinfo["dumps"].items()}
    all_dumps.update({v: cache.path("dumps", d["file"]) for v, d in dinfo["dumps"].items()})
    cache.step("verify", ["kernel", "qemu", "dumps"], lambda out: step_verify(
        os.path.join(kdir, kinfo["vmlinux"]), all_dumps, kernel, kinfo, qinfo, out))
    cache.step("rpms", ["kernel"], lambda out: step_rpms(kdir, kinfo, kernel, out))
    me = sys.modules[__name__]
    cache.step("faultmod", ["kernel"], lambda out: panics.step_faultmod(
        me, kernel, os.path.join(kdir, kinfo["config"]), out))
    cache.step("panics", ["kernel", "faultmod"], lambda out: panics.step_panics(
        me, kdir, kinfo, cache.path("faultmod"), cache.stamps["faultmod"]["info"], out))
    log(f"writing the manifest ({r})")
    path = write_manifest(cache, kernel, time.monotonic() - started)
    if not manifest_ok(path):
        raise BuildError("the manifest just written does not check out")
    return path


def main(argv=None) -> int:
    global _QUIET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache root (default: $CAS_REALDUMP_DIR or "
                        "${XDG_CACHE_HOME:-~/.cache}/cas/realdump)")
    parser.add_argument("--kernel-version", help="Debian version of linux-image-cloud-amd64 "
                        "to use instead of the newest in the apt lists")
    parser.add_argument("--refresh", action="store_true", help="ask apt for the newest kernel "
                        "even when the cache holds a complete build (which is otherwise used)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    _QUIET = args.quiet
    def on_term(*_args):
        end_children()
        print("build.py: terminated", file=sys.stderr)
        sys.exit(143)  # unwinds through the finally blocks: QEMU is killed, temp dirs go
    signal.signal(signal.SIGTERM, on_term)
    try:
        path = build(cache_root(args.cache), args.kernel_version, args.refresh)
    except MissingTools as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 3
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        end_children()
        print("build.py: interrupted", file=sys.stderr)
        return 130
    log(f"done in {time.monotonic() - _T0:.1f}s")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
