"""Release strings of RHEL 4-9, Fedora, SUSE, Debian and Ubuntu: base, flavour, machine."""

import pytest

from caslib.packages import kernelrelease as kr

CASES = [
    # release, base, flavour, machine, family
    ("2.6.9-78.18.EL", "2.6.9-78.18.EL", "", None, "rhel4"),
    ("2.6.9-78.18.ELsmp", "2.6.9-78.18.EL", "smp", None, "rhel4"),
    ("2.6.9-89.0.25.ELlargesmp", "2.6.9-89.0.25.EL", "largesmp", None, "rhel4"),
    ("2.6.9-78.18.ELhugemem", "2.6.9-78.18.EL", "hugemem", None, "rhel4"),
    ("2.6.9-78.18.ELxenU", "2.6.9-78.18.EL", "xenU", None, "rhel4"),
    ("2.6.18-194.el5", "2.6.18-194.el5", "", None, "rhel5"),
    ("2.6.18-194.el5xen", "2.6.18-194.el5", "xen", None, "rhel5"),
    ("2.6.18-194.32.1.el5PAE", "2.6.18-194.32.1.el5", "PAE", None, "rhel5"),
    ("2.6.18-194.el5debug", "2.6.18-194.el5", "debug", None, "rhel5"),
    ("2.6.32-754.el6.x86_64", "2.6.32-754.el6", "", "x86_64", "rhel"),
    ("2.6.32-754.el6.i686", "2.6.32-754.el6", "", "i686", "rhel"),
    ("3.10.0-1160.el7.x86_64", "3.10.0-1160.el7", "", "x86_64", "rhel"),
    ("3.10.0-1160.el7.x86_64.debug", "3.10.0-1160.el7", "debug", "x86_64", "rhel"),
    ("3.10.0-1160.rt56.1131.el7.x86_64", "3.10.0-1160.rt56.1131.el7", "rt", "x86_64", "rhel"),
    ("3.10.0-1160.el7.ppc64le", "3.10.0-1160.el7", "", "ppc64le", "rhel"),
    ("4.18.0-513.5.1.el8_9.s390x", "4.18.0-513.5.1.el8_9", "", "s390x", "rhel"),
    ("5.14.0-362.8.1.el9_3.x86_64+debug", "5.14.0-362.8.1.el9_3", "debug", "x86_64", "rhel"),
    ("5.14.0-362.8.1.el9_3.aarch64+64k", "5.14.0-362.8.1.el9_3", "64k", "aarch64", "rhel"),
    ("5.14.0-362.8.1.el9_3.aarch64+64k-debug", "5.14.0-362.8.1.el9_3", "64k-debug", "aarch64", "rhel"),
    ("5.14.0-362.8.1.el9_3.x86_64+rt", "5.14.0-362.8.1.el9_3", "rt", "x86_64", "rhel"),
    ("5.14.0-427.13.1.el9_4.aarch64+rt-64k", "5.14.0-427.13.1.el9_4", "rt-64k", "aarch64", "rhel"),
    ("6.5.6-300.fc39.x86_64", "6.5.6-300.fc39", "", "x86_64", "fedora"),
    ("3.9.5-301.fc19.i686.PAE", "3.9.5-301.fc19", "PAE", "i686", "fedora"),
    ("5.14.21-150500.55.28-default", "5.14.21-150500.55.28", "default", None, "suse"),
    ("3.0.101-63-default", "3.0.101-63", "default", None, "suse"),
    ("5.14.21-150500.55.28-64kb", "5.14.21-150500.55.28", "64kb", "aarch64", "suse"),
    ("6.1.0-18-amd64", "6.1.0-18", "amd64", "x86_64", "debian"),
    ("6.1.0-18-cloud-amd64", "6.1.0-18", "cloud-amd64", "x86_64", "debian"),
    ("6.1.0-18-rt-amd64", "6.1.0-18", "rt-amd64", "x86_64", "debian"),
    ("6.1.0-18-686-pae", "6.1.0-18", "686-pae", "i686", "debian"),
    ("6.1.0-18-arm64", "6.1.0-18", "arm64", "aarch64", "debian"),
    ("6.12.27+deb13-amd64", "6.12.27+deb13", "amd64", "x86_64", "debian"),
    ("5.15.0-91-generic", "5.15.0-91", "generic", None, "ubuntu"),
    ("5.15.0-91-lowlatency", "5.15.0-91", "lowlatency", None, "ubuntu"),
    ("6.8.0-1008-aws", "6.8.0-1008", "aws", None, "ubuntu"),
    ("6.8.0-31-generic-64k", "6.8.0-31", "generic-64k", "aarch64", "ubuntu"),
]


@pytest.mark.parametrize("release,base,flavour,machine,family", CASES)
def test_parse(release, base, flavour, machine, family):
    got = kr.parse(release)
    assert (got.release, got.base, got.flavour, got.machine, got.family) == \
        (release, base, flavour, machine, family)


def test_unknown_form_keeps_the_whole_string():
    got = kr.parse("custom")
    assert (got.base, got.flavour, got.machine) == ("custom", "", None)


@pytest.mark.parametrize("arch,machine", [("amd64", "x86_64"), ("i386", "i686"), ("arm64", "aarch64"),
                                          ("ppc64el", "ppc64le"), ("x86_64", "x86_64"),
                                          ("noarch", None), ("all", None), ("s390x", "s390x")])
def test_uname_machine(arch, machine):
    assert kr.uname_machine(arch) == machine


def test_machine_class_joins_ix86():
    assert kr.machine_class("i386") == kr.machine_class("i686") == kr.machine_class("athlon")
    assert kr.machine_class("x86_64") != kr.machine_class("i686")
    assert kr.machine_class(None) is None


def test_version_key_orders_numbers():
    assert kr.version_key("6.1.0-9") < kr.version_key("6.1.0-10")


def test_nearest_same_flavour_then_same_base():
    known = [("6.1.0-55-cloud-amd64", "x86_64"), ("6.1.0-56-amd64", "x86_64"),
             ("5.10.0-28-cloud-amd64", "x86_64"), ("6.1.0-12-cloud-amd64", "x86_64"),
             ("3.10.0-1160.el7.x86_64", "x86_64")]
    assert kr.nearest("6.1.0-56-cloud-amd64", "x86_64", known)[:2] == [
        "6.1.0-55-cloud-amd64", "6.1.0-56-amd64"]


def test_nearest_rhel_plus_variants():
    known = [("5.14.0-362.8.1.el9_3.x86_64", "x86_64"), ("5.14.0-362.24.1.el9_3.x86_64+debug", "x86_64"),
             ("5.14.0-284.11.1.el9_2.x86_64+debug", "x86_64")]
    near = kr.nearest("5.14.0-362.8.1.el9_3.x86_64+debug", "x86_64", known)
    assert near[0] == "5.14.0-362.24.1.el9_3.x86_64+debug"
    assert "5.14.0-362.8.1.el9_3.x86_64" in near
