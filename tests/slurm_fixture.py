"""A real one-node Slurm cluster for the tests, started as root without systemd or cgroups.

Why real daemons: the Slurm backend's whole job is talking to sbatch, scontrol and
scancel; only the real slurmctld says what a time limit or a cancel does to a job.
``munged`` runs with a generated key and its own socket; ``slurmctld`` and ``slurmd``
run in the foreground with a generated slurm.conf (linuxproc process tracking, no task
plugin, private ports, state and spool directories under the test's tmp dir), one node
named like this host with its real CPU count, one partition named like ``uname -m``.
The fixture waits (with a deadline) for ``sinfo`` to say the node is idle, and stops
every daemon by pid, even when a test failed.
"""

import os
import platform
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port

START_DEADLINE = 90.0   # seconds for the node to come up idle
STOP_GRACE = 20.0       # seconds a daemon gets to exit after SIGTERM

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")


def missing() -> list:
    return [d for d in DAEMONS if not shutil.which(d, path=os.environ.get("PATH", "") +
                                                   ":/usr/sbin:/sbin")]


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def slurm_conf(top: str, munge_socket: str, node: str, cpus: int, partition: str) -> str:
    ctld, slurmd = free_port(), free_port()
    return "\n".join([
        "ClusterName=castest",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ctld}",
        f"SlurmdPort={slurmd}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={top}/state",
        f"SlurmdSpoolDir={top}/spool",
        f"SlurmctldPidFile={top}/slurmctld.pid",
        f"SlurmdPidFile={top}/slurmd.pid",
        f"SlurmctldLogFile={top}/slurmctld.log",
        f"SlurmdLogFile={top}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        "KillWait=5",
        "MinJobAge=600",
        "OverTimeLimit=0",
        f"PlugStackConfig={top}/plugstack.conf",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName={partition} Nodes={node} Default=NO MaxTime=INFINITE State=UP",
        "",
    ])


class Cluster:
    def __init__(self, top: str):
        self.top = top
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.partition = platform.machine()
        self.procs: list[subprocess.Popen] = []
        self.conf = os.path.join(top, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def _daemon(self, argv: list, log: str) -> subprocess.Popen:
        with open(os.path.join(self.top, log), "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        top = self.top
        for sub in ("state", "spool", "munge"):
            os.makedirs(os.path.join(top, sub), mode=0o700, exist_ok=True)
        os.chmod(os.path.join(top, "munge"), 0o711)  # munged: clients must reach the socket
        key = os.path.join(top, "munge", "munge.key")
        with open(key, "wb") as fh:
            fh.write(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = os.path.join(top, "munge", "munge.sock")
        with open(os.path.join(top, "plugstack.conf"), "w") as fh:
            fh.write("")
        with open(self.conf, "w") as fh:
            fh.write(slurm_conf(top, sock, self.node, self.cpus, self.partition))
        self._daemon([_which("munged"), "--foreground", "--force", f"--socket={sock}",
                      f"--key-file={key}", f"--pid-file={top}/munge/munged.pid",
                      f"--log-file={top}/munge/munged.log",
                      f"--seed-file={top}/munge/munged.seed"], "munged.out")
        self._wait(lambda: os.path.exists(sock), "munged's socket", 20)
        self._daemon([_which("slurmctld"), "-D", "-i", "-f", self.conf], "slurmctld.out")
        self._wait(lambda: self._run("scontrol", "ping").returncode == 0 and
                   "UP" in self._run("scontrol", "ping").stdout, "slurmctld to answer", 60)
        self._daemon([_which("slurmd"), "-D", "-f", self.conf, "-N", self.node], "slurmd.out")
        self._wait(self._idle, "sinfo to say the node is idle", START_DEADLINE)

    def _run(self, *argv) -> subprocess.CompletedProcess:
        return subprocess.run([_which(argv[0])] + list(argv[1:]), capture_output=True, text=True,
                              env=self.env, timeout=30, stdin=subprocess.DEVNULL)

    def _idle(self) -> bool:
        res = self._run("sinfo", "-h", "-N", "-o", "%t")
        return res.returncode == 0 and res.stdout.strip() == "idle"

    def _wait(self, predicate, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) while waiting "
                                       f"for {what}; see {self.top}: {self.logs()}")
            if predicate():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}: {self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = os.path.join(self.top, name)
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    out.append(f"--- {name}\n" + "".join(fh.readlines()[-15:]))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every daemon by pid, newest first (slurmd, slurmctld, munged); SIGKILL
        what is still there after the grace time.  Jobs still running are cancelled first
        (their slurmstepd would outlive slurmd)."""
        if len(self.procs) == 3 and all(p.poll() is None for p in self.procs):
            try:
                self._run("scancel", "--full", "--user=root")
                deadline = time.monotonic() + STOP_GRACE
                while time.monotonic() < deadline and self._run(
                        "squeue", "-h", "-o", "%i").stdout.strip():
                    time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_GRACE)
        self.procs.clear()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """The running cluster; SLURM_CONF is set in os.environ for the module's commands."""
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs as root")
    if missing():
        pytest.skip("Slurm or munge is not installed (tests/install-deps: slurm-wlm munge): "
                    + ", ".join(missing()))
    # short path: the munge socket path must fit in sun_path (108 bytes)
    top = str(tmp_path_factory.mktemp("slurm"))
    cluster = Cluster(top)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
