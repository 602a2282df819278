"""The packages: make deb and make rpm build; the .deb installs, runs a real dump as `cas`.

Marked ``packaging``: these tests install and purge the ``cas`` Debian package
on this machine, so they need root (apt-get, runuser).  As anyone else they
fail with that reason; deselect them with ``-m 'not packaging'`` (README).
While the package is installed, /etc/cas.conf exists: run them on a machine
(or container) of their own, as CI does.
"""

import glob
import json
import os
import pwd
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.packaging
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
STATE = "/var/lib/cas"


def version() -> str:
    with open(os.path.join(ROOT, "lib", "caslib", "__init__.py")) as fh:
        return re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)


def sh(argv, timeout=600, **kw):
    """Run a command with the system PATH; its output is in the assertion message on failure."""
    env = dict(kw.pop("env", None) or os.environ, PATH=SYSPATH, LC_ALL="C.UTF-8")
    env.pop("CAS_CONFIG", None)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    return proc


def need_root():
    if os.geteuid() != 0:
        pytest.fail("packaging tests install the .deb and run as the cas user: they need root "
                    "(or deselect them: pytest -m 'not packaging')", pytrace=False)


@pytest.fixture(scope="module")
def packages():
    """Build both packages with the Makefile, as a person would; their paths in dist/."""
    need_root()
    v = version()
    for target in ("deb", "rpm"):
        proc = sh(["make", "-C", ROOT, target], timeout=900)
        assert proc.returncode == 0, f"make {target}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    deb = os.path.join(ROOT, "dist", f"cas_{v}_all.deb")
    rpms = glob.glob(os.path.join(ROOT, "dist", f"cas-{v}-*.noarch.rpm"))
    assert os.path.exists(deb) and len(rpms) == 1, os.listdir(os.path.join(ROOT, "dist"))
    return {"deb": deb, "rpm": rpms[0], "version": v,
            "changes": glob.glob(os.path.join(ROOT, "dist", f"cas_{v}_*.changes"))[0]}


def deb_files(deb) -> list:
    out = sh(["dpkg-deb", "-c", deb]).stdout
    return [line.split(None, 5)[5].split(" -> ")[0].lstrip(".") or "/" for line in out.splitlines()]


def rpm_files(rpm) -> list:
    return sh(["rpm", "-qpl", rpm]).stdout.split()


def normalise(paths, kind) -> set:
    """Paths with the two families' conventions made equal; package metadata left out."""
    out = set()
    for p in paths:
        p = p.rstrip("/")
        if (not p or ".dist-info" in p or p.startswith("/usr/share/licenses")
                or p in ("/usr/share/doc/cas/copyright", "/usr/share/doc/cas/changelog.gz")):
            continue
        p = re.sub(r"^/usr/lib/python3(\.\d+)?/(dist|site)-packages", "SITELIB", p)
        p = re.sub(r"^(/usr)?/lib/systemd/system", "UNITDIR", p)
        p = re.sub(r"^/usr/share/zsh/(vendor-completions|site-functions)", "ZSH", p)
        p = re.sub(r"\.gz$", "", p) if "/man/" in p or "/doc/" in p else p
        out.add(p)
    return out


def test_rpm_holds_the_same_files_as_the_deb(packages):
    listing = deb_files(packages["deb"])
    rpms = normalise(rpm_files(packages["rpm"]), "rpm")
    # directories the RPM does not own (the filesystem package does) are not compared
    dirs = normalise([p for p in listing if p.endswith("/")], "deb") - rpms
    debs = normalise(listing, "deb") - dirs
    assert sorted(debs - rpms) == [] and sorted(rpms - debs) == []
    for must in ("/usr/bin/cas", "/usr/bin/cas-ident", "SITELIB/caslib/_vendor/rpmfile/LICENSE",
                 "/usr/share/man/man1/cas.1", "/usr/share/man/man5/cas.conf.5", "/etc/cas.conf",
                 "/etc/cas/snippets.d", "/usr/share/cas/snippets/10-traceback", STATE,
                 "/usr/share/bash-completion/completions/cas-ident", "ZSH/_cas"):
        assert must in rpms, must
    units = [os.path.basename(u) for u in glob.glob(os.path.join(ROOT, "etc", "systemd", "*"))
             if u.endswith((".service", ".timer"))]
    assert sorted(units) == sorted(os.path.basename(p) for p in rpms if p.startswith("UNITDIR/"))


def test_rpm_metadata(packages):
    rpm = packages["rpm"]
    requires = sh(["rpm", "-qp", "--requires", rpm]).stdout.splitlines()
    for want in ("python3 >= 3.11", "python3-zstandard", "crash"):
        assert want in requires
    assert "makedumpfile" in sh(["rpm", "-qp", "--recommends", rpm]).stdout.split()
    assert sh(["rpm", "-qpc", rpm]).stdout.split() == ["/etc/cas.conf"]
    assert "useradd -r" in sh(["rpm", "-qp", "--scripts", rpm]).stdout
    listing = sh(["rpm", "-qplv", rpm]).stdout
    assert re.search(r"^d\S+\s+\d+\s+cas\s+cas\s.*\s/var/lib/cas$", listing, re.M), listing
    assert sh(["rpm", "-qp", "--qf", "%{ARCH}", rpm]).stdout == "noarch"


def test_lintian_reports_no_errors(packages):
    proc = sh(["lintian", packages["changes"]], timeout=600)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], proc.stdout


def _copy(src, dst):
    """A copy, not a hard link: a link changes the shared cache's ctimes under other readers."""
    shutil.copyfile(src, dst)


def test_deb_installs_and_analyses_a_real_dump_as_cas(packages, realdump):
    if os.path.exists("/etc/cas.conf") and sh(["dpkg", "-S", "/etc/cas.conf"]).returncode != 0:
        pytest.fail("/etc/cas.conf exists and belongs to no package: refusing to install over it",
                    pytrace=False)
    v = packages["version"]
    try:
        proc = sh(["apt-get", "install", "-y", "--no-install-recommends",
                   "./" + os.path.relpath(packages["deb"], ROOT)], cwd=ROOT, timeout=900,
                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        proc = sh(["/usr/bin/cas-ident", "--version"])
        assert proc.returncode == 0 and proc.stdout.strip() == f"cas-ident {v}", proc
        page = sh(["man", "cas"], env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        assert page.returncode == 0 and "EXIT STATUS" in page.stdout, page.stderr
        assert "ENVIRONMENT" in page.stdout and v in page.stdout
        cas = pwd.getpwnam("cas")
        st = os.stat(STATE)
        assert st.st_uid == cas.pw_uid and oct(st.st_mode & 0o777) == "0o750"
        assert cas.pw_dir == STATE
        vendored = sh(["/usr/bin/python3", "-c", "from caslib.packages import rpm; "
                       "print(rpm.rpmfile.__name__)"])
        assert vendored.stdout.strip() in ("caslib._vendor.rpmfile", "rpmfile"), vendored
        complete = sh(["bash", "-c", "source /usr/share/bash-completion/bash_completion && "
                       "_completion_loader cas-ident; complete -p cas-ident"])
        assert "_cas_complete" in complete.stdout, complete

        # a real dump, the real debuginfo RPM on the shelf of the packaged cas.conf
        rpm = next(r for r in realdump["rpms"] if r["payload"] == "zstd" and not r.get("decoy"))
        core = next(d for d in realdump["dumps"] if d["name"] == "vmcore.makedumpfile-zlib")
        for sub in ("kernels", "incoming"):
            os.makedirs(os.path.join(STATE, sub), exist_ok=True)
        _copy(rpm["path"], os.path.join(STATE, "kernels", os.path.basename(rpm["path"])))
        _copy(core["path"], os.path.join(STATE, "incoming", "vmcore"))
        sh(["chown", "-R", "cas:cas", os.path.join(STATE, "kernels"),
            os.path.join(STATE, "incoming")])
        env = {"HOME": STATE, "PATH": SYSPATH}
        admin = sh(["runuser", "-u", "cas", "--", "/usr/bin/cas-admin"], cwd="/", env=env,
                   timeout=600)
        assert admin.returncode == 0, admin.stderr
        job = sh(["runuser", "-u", "cas", "--", "/usr/bin/cas", "-i", "424242", "-f",
                  os.path.join(STATE, "incoming", "vmcore"), "--json"], cwd="/", env=env,
                 timeout=1200)
        assert job.returncode == 0, job.stderr[-3000:]
        record = json.loads(job.stdout.strip().splitlines()[-1])
        assert record["kernel"]["release"] == realdump["kernel"]["release"]
        workdir = record["workdir"]
        assert workdir.startswith(os.path.join(STATE, "work") + os.sep)
        assert os.stat(workdir).st_uid == cas.pw_uid
        with open(os.path.join(workdir, "traceback")) as fh:
            assert "sysrq_handle_crash" in fh.read()
        assert os.path.exists(os.path.join(workdir, "mail.eml"))
    finally:
        purge = sh(["apt-get", "purge", "-y", "cas"], timeout=600,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        shutil.rmtree(STATE, ignore_errors=True)  # what this test put there
    assert purge.returncode == 0, purge.stderr
    assert not os.path.exists("/usr/bin/cas-ident") and not os.path.exists("/etc/cas.conf")
