"""Archive member names and links: the one set of rules every archive reader uses
(caslib.pathsafety), checked on real tarfile/zipfile member objects."""

import io
import stat
import tarfile
import zipfile

import pytest

from caslib import errors, pathsafety


@pytest.mark.parametrize("name, windows, why", [
    ("vmcore", True, None),
    ("dir/sub/vmcore", True, None),
    ("dir/..hidden", True, None),
    ("/etc/passwd", True, "absolute path"),
    ("../vmcore", True, "'..' leads out"),
    ("a/../../b", True, "'..' leads out"),
    ("C:/x", True, "absolute path"),
    ("a\\..\\..\\b", True, "'..' leads out"),
    ("a\\..\\..\\b", False, None),          # tar: a backslash is part of the name
    ("\\abs", True, "absolute path"),
])
def test_member_escapes(name, windows, why):
    assert pathsafety.member_escapes(name, windows=windows) == why


@pytest.mark.parametrize("name, target, escapes", [
    ("a/link", "vmcore", False),
    ("a/link", "../vmcore", False),
    ("a/link", "../../vmcore", True),
    ("link", "..", True),
    ("link", "/etc/shadow", True),
    ("a/b/link", "../c/../../d", False),
])
def test_link_escapes(name, target, escapes):
    assert pathsafety.link_escapes(name, target) is escapes


def _tar_members(build) -> list:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in build():
            tar.addfile(info, io.BytesIO(data) if data else None)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r") as tar:
        return tar.getmembers()


def _info(name, type_=tarfile.REGTYPE, linkname="", data=b""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = type_, linkname, len(data)
    return info, data


@pytest.mark.parametrize("info, message", [
    (_info("../evil", data=b"x"), "'..' leads out"),
    (_info("/abs", data=b"x"), "absolute path"),
    (_info("s", tarfile.SYMTYPE, "../../x"), "symlink to '../../x' points outside"),
    (_info("h", tarfile.LNKTYPE, "../x"), "hard link to '../x' points outside"),
    (_info("h", tarfile.LNKTYPE, "/etc/shadow"), "hard link to '/etc/shadow' points outside"),
    (_info("dev", tarfile.CHRTYPE), "device or fifo"),
    (_info("dev", tarfile.BLKTYPE), "device or fifo"),
    (_info("fifo", tarfile.FIFOTYPE), "device or fifo"),
])
def test_tar_member_refused(info, message):
    [member] = _tar_members(lambda: [info])
    with pytest.raises(errors.FormatError) as exc:
        pathsafety.check_tar_member(member, "x.tar")
    assert exc.value.kind == "unsafe"
    assert str(exc.value).startswith(f"x.tar: unsafe tar member {member.name!r}: ")
    assert message in str(exc.value)


def test_tar_members_allowed():
    members = _tar_members(lambda: [_info("d", tarfile.DIRTYPE), _info("d/vmcore", data=b"x"),
                                    _info("d/s", tarfile.SYMTYPE, "vmcore"),
                                    _info("d/h", tarfile.LNKTYPE, "d/vmcore")])
    for m in members:
        pathsafety.check_tar_member(m, "x.tar")


def test_zip_members():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ok/vmcore", b"x")
        z.writestr("..\\evil", b"x")
    names = [i.filename for i in zipfile.ZipFile(buf).infolist()]
    pathsafety.check_zip_member(names[0], stat.S_IFREG | 0o644, None, "x.zip")
    pathsafety.check_zip_member("ok/link", stat.S_IFLNK | 0o777, "vmcore", "x.zip")
    for name, mode, target, why in [
            (names[1], stat.S_IFREG, None, "'..' leads out"),
            ("ok/link", stat.S_IFLNK, "../../x", "symlink to '../../x' points outside"),
            ("fifo", stat.S_IFIFO, None, "device or fifo"),
            ("C:\\x", stat.S_IFREG, None, "absolute path")]:
        with pytest.raises(errors.FormatError, match="x.zip: unsafe zip member .*" + why):
            pathsafety.check_zip_member(name, mode, target, "x.zip")
