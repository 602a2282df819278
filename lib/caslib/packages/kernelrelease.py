"""Kernel release strings (``uname -r``): base release, flavour, machine.

Why: the shelf holds kernels of many families and a dump names only its
release; matching is by the exact string, but the index also needs the
flavour and the machine a release implies (to infer the machine when the
dump does not say it, and to suggest the nearest kernels when nothing
matches).  retrace-server derives a package name by splitting the string and
gets the RHEL 8/9 ``+debug``/``+64k``/``+rt`` forms wrong; here a release is
never rewritten, only described.

Forms understood (doc/formats.md section 8):
  RHEL 4     2.6.9-78.18.ELsmp           base 2.6.9-78.18.EL, flavour smp
  RHEL 5     2.6.18-194.el5xen           base 2.6.18-194.el5, flavour xen
  RHEL 6/7   3.10.0-1160.el7.x86_64.debug, 3.10.0-1160.rt56.1131.el7.x86_64 (flavour rt)
  RHEL 8/9   5.14.0-362.8.1.el9_3.aarch64+64k-debug, Fedora 6.5.6-300.fc39.x86_64
  SUSE       5.14.21-150500.55.28-default
  Debian     6.1.0-18-cloud-amd64, 6.12.27+deb13-amd64; Ubuntu 5.15.0-91-generic
"""

import functools
import re
from dataclasses import dataclass

# RPM architectures as they appear in RHEL/Fedora release strings.
RPM_ARCHES = ("x86_64", "i686", "i586", "i386", "athlon", "ia64", "ppc64le", "ppc64", "ppc",
              "s390x", "s390", "aarch64", "armv7hl", "riscv64")
# RPM/Debian package architecture -> `uname -m`.
_UNAME = {
    "amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv5tel",
    "ppc64el": "ppc64le", "powerpc": "ppc", "mips64el": "mips64", "loong64": "loongarch64",
    "armv7hl": "armv7l", "ppc64p7": "ppc64", "x86_64": "x86_64", "i686": "i686", "i586": "i586",
    "athlon": "i686", "ia64": "ia64", "ppc64": "ppc64", "ppc64le": "ppc64le", "s390x": "s390x",
    "s390": "s390", "aarch64": "aarch64", "riscv64": "riscv64", "ppc": "ppc",
}
# other spellings of a machine (crash's, the kernel's ARCH)
_ALIASES = {"x86-64": "x86_64", "x86": "x86"}
# Debian/Ubuntu/SUSE flavour words that name a machine.
_FLAVOUR_MACHINE = {
    "amd64": "x86_64", "arm64": "aarch64", "686": "i686", "686-pae": "i686", "pae": "i686",
    "armmp": "armv7l", "armmp-lpae": "armv7l", "lpae": "armv7l", "ppc64el": "ppc64le",
    "powerpc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "loong64": "loongarch64",
    "64k": "aarch64", "64kb": "aarch64", "zfcpdump": "s390x", "ppc64": "ppc64",
}
_DEBIAN_ARCHES = ("amd64", "arm64", "686", "686-pae", "armmp", "armmp-lpae", "ppc64el",
                  "powerpc64le", "s390x", "riscv64", "loong64", "marvell", "octeon", "mips64r2el",
                  "5kc-malta", "4kc-malta", "loongson-3", "rpi", "powerpc64", "parisc", "parisc64")
_SUSE = ("default", "azure", "rt", "kvmsmall", "64kb", "pae", "xen", "zfcpdump", "vanilla",
         "debug", "trace", "ec2", "ppc64", "bigmem", "desktop", "preempt", "lpae")
_UBUNTU = ("generic", "lowlatency", "aws", "azure", "gcp", "gke", "oracle", "kvm", "ibm",
           "raspi", "nvidia", "oem", "realtime", "intel", "fips", "virtual")

_ARCH = "|".join(re.escape(a) for a in RPM_ARCHES)
# RHEL 8/9, Fedora: <base>.<arch>+<variant>
_PLUS = re.compile(rf"(?P<base>.+)\.(?P<arch>{_ARCH})\+(?P<flavour>[A-Za-z0-9_-]+)")
# RHEL 6/7, Fedora: <base>.<arch>[.<variant>]
_DOTARCH = re.compile(rf"(?P<base>.+?)\.(?P<arch>{_ARCH})(?:\.(?P<flavour>[A-Za-z0-9_]+))?")
# RHEL 3/4: <base>.EL<flavour>
_EL4 = re.compile(r"(?P<base>\d[^-]*-.*\.EL)(?P<flavour>smp|hugemem|largesmp|xenU|xen0|BOOT|)")
# RHEL 5: <base>.el5<flavour>  (no arch in the string)
_EL5 = re.compile(r"(?P<base>\d[^-]*-.*\.el5(?:\.[a-z]+)*?)(?P<flavour>xen|PAE|debug|kdump|)")
# Debian, Ubuntu, SUSE: <version>-<abi>[-<flavour words>]
_DASH = re.compile(r"(?P<base>\d+\.\d+[0-9A-Za-z.+~]*(?:-[0-9][0-9A-Za-z.+~]*)?)"
                   r"(?:-(?P<flavour>[A-Za-z0-9][A-Za-z0-9-]*))?")


@dataclass(frozen=True)
class Release:
    """What a `uname -r` string says; ``machine`` is None when the string does not say it."""

    release: str
    base: str
    flavour: str
    machine: str | None
    family: str

    def describe(self) -> str:
        extra = ", ".join(x for x in (self.flavour and f"flavour {self.flavour}",
                                      self.machine, self.family) if x)
        return f"{self.release} ({extra})" if extra else self.release


def uname_machine(arch: str | None) -> str | None:
    """A package architecture (RPM or Debian) as `uname -m` prints it; None for noarch/all."""
    if not arch or arch in ("noarch", "all", "src", "nosrc"):
        return None
    return _UNAME.get(arch, arch)


def machine_class(machine: str | None) -> str | None:
    """Machines that run the same kernels, and the same ``crash``, compare equal: a package
    arch or ``uname -m`` in any spelling (i386..i686, athlon and x86 are ``i686``; amd64 is
    ``x86_64``, arm64 ``aarch64``; armv7l/armv7hl/armhf are ``armv7``)."""
    if not machine:
        return None
    m = machine.strip().lower()
    m = _UNAME.get(m, _ALIASES.get(m, m))
    if m == "x86" or re.fullmatch(r"i[3-6]86|athlon", m):
        return "i686"
    if m.startswith("armv7"):
        return "armv7"
    return m


def _family(base: str) -> str:
    if re.search(r"\.el\d", base):
        return "rhel"
    if re.search(r"\.fc\d", base):
        return "fedora"
    return "unknown"


@functools.lru_cache(maxsize=4096)
def parse(release: str) -> Release:
    """Describe a release string; never fails (unknown forms keep the whole string as base)."""
    r = release.strip()
    m = _PLUS.fullmatch(r)
    if m:
        return Release(r, m["base"], m["flavour"], uname_machine(m["arch"]), _family(m["base"]))
    m = _DOTARCH.fullmatch(r)
    if m:
        flavour = m["flavour"] or ""
        if not flavour and re.search(r"\.rt\d", m["base"]):
            flavour = "rt"
        return Release(r, m["base"], flavour, uname_machine(m["arch"]), _family(m["base"]))
    m = _EL4.fullmatch(r)
    if m:
        return Release(r, m["base"], m["flavour"], None, "rhel4")
    m = _EL5.fullmatch(r)
    if m:
        return Release(r, m["base"], m["flavour"], None, "rhel5")
    m = _DASH.fullmatch(r)
    if m and m["flavour"]:
        flavour = m["flavour"]
        words = flavour.split("-")
        machine = (_FLAVOUR_MACHINE.get(flavour) or _FLAVOUR_MACHINE.get("-".join(words[-2:]))
                   or _FLAVOUR_MACHINE.get(words[-1]))
        debian_arch = words[-1] in _DEBIAN_ARCHES or "-".join(words[-2:]) in _DEBIAN_ARCHES
        if debian_arch or words[0] == "cloud":
            family = "debian"
        elif words[0] in _UBUNTU:
            family = "ubuntu"
        elif words[0] in _SUSE or re.search(r"-\d+\.\d+\.\d+$", m["base"]):
            family = "suse"
        else:
            family = "unknown"
        return Release(r, m["base"], flavour, machine, family)
    return Release(r, r, "", None, _family(r))


@functools.lru_cache(maxsize=4096)
def version_key(text: str) -> tuple:
    """Sort key that orders numbers numerically: 6.1.0-9 < 6.1.0-10."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|[A-Za-z]+", text))


def _common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _first_gap(a: tuple, b: tuple) -> int:
    """Numeric distance at the first differing token (big when not both numbers)."""
    n = _common_prefix(a, b)
    if n < len(a) and n < len(b) and a[n][0] == 0 and b[n][0] == 0:
        return abs(a[n][1] - b[n][1])
    return 1 << 30


def nearest(release: str, machine: str | None, known: list[tuple[str, str | None]],
            limit: int = 3) -> list[str]:
    """The indexed releases closest to ``release``, to help when nothing matches.

    ``known`` holds (release, machine) pairs.  First the closest release of the
    same flavour and machine (an older or newer build), then the same base
    release in another flavour or machine, then whatever shares the longest
    prefix.  Deterministic.
    """
    want = parse(release)
    want_mc = machine_class(machine or want.machine)
    wkey = version_key(want.base)
    out: list[str] = []

    def add(name: str) -> None:
        if name != release and name not in out and len(out) < limit:
            out.append(name)

    parsed = [(parse(r), machine_class(m)) for r, m in sorted(set(known), key=lambda x: (x[0], x[1] or ""))]
    same_kind = [p for p, mc in parsed if p.flavour == want.flavour and (
        want_mc is None or mc is None or mc == want_mc) and p.base != want.base]
    same_kind.sort(key=lambda p: (-_common_prefix(wkey, version_key(p.base)),
                                  _first_gap(wkey, version_key(p.base)), p.release))
    if same_kind:
        add(same_kind[0].release)
    same_base = sorted((p for p, _ in parsed if p.base == want.base), key=lambda p: p.release)
    if same_base:
        add(same_base[0].release)
    rkey = version_key(release)
    rest = sorted((p for p, _ in parsed), key=lambda p: (
        -_common_prefix(rkey, version_key(p.release)), _first_gap(rkey, version_key(p.release)),
        p.release))
    for p in rest:
        add(p.release)
    return out
