"""What a debuginfo package holds, read without unpacking it: the index's view of RPMs and debs.

Why: the shelf holds thousands of packages of hundreds of megabytes each; the
original CAS extracted every vmlinux to index them (hours).  An RPM's header
lists every member, symlink target and the payload compressor (packages.rpm);
a Debian package's control.tar lists its regular files and only data.tar's
start is streamed for the kernel image's build-id (packages.deb).

  read_package(path) -> Package   told apart by magic bytes (caslib.magic), not by name
Errors are errors.FormatError: one line naming the file, a kind from errors.KINDS.
"""

from dataclasses import dataclass, field

from caslib import magic
from caslib.errors import FormatError


@dataclass
class Member:
    """One file of a package: absolute path, ``file``/``link``/``dir``, symlink target."""

    path: str
    kind: str = "file"
    linkto: str | None = None


@dataclass
class Package:
    """A package's name, version and the members the index looks at."""

    path: str
    format: str  # "rpm" or "deb"
    name: str
    version: str
    release: str
    arch: str
    epoch: int | None = None
    payload: str | None = None
    members: list = field(default_factory=list)  # under the prefix asked for
    file_count: int = 0
    build_ids: dict = field(default_factory=dict)  # member path -> build-id read from its ELF notes
    warnings: list = field(default_factory=list)

    def climbs_out(self, name) -> None:
        self.warnings.append(f"{self.path}: member {name!r} climbs out with '..'; ignored")


def read_package(path: str) -> Package:
    """Read an RPM or a Debian package, told apart by magic bytes."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    kind = magic.package(head)
    if kind == "rpm":
        from caslib.packages import rpm
        return rpm.read(path)
    if kind == "deb":
        from caslib.packages import deb
        return deb.read(path)
    if not head:
        raise FormatError(f"{path}: empty file, not a package", "empty")
    raise FormatError(f"{path}: not an RPM or Debian package (unknown magic {head[:4].hex()})",
                      "unsupported")
