"""The Slurm queue backend (``[queue] backend = slurm``): Slurm runs the jobs, the jobs
table on the submit host keeps the record.

Why the table stays SQLite on the submit host: nodes never write it (SQLite's locks are
not to be trusted on NFS), they leave ``result.json`` in the job directory on shared
storage, and whoever looks (cas-jobs, as casuser) brings the rows up to date from
Slurm's state (``sync``, run where the local backend recovers lost jobs).

A job: a queued row, then the head (unpack, ident, dmesg, findkernel) on this host,
the partition for the dump's machine checked to exist, ``sbatch`` of the tail
(slurmjob.py), the Slurm job id stored in the row.  Slurm's state maps to CAS's (slurmcmd.cas_state); a job Slurm ended
itself (TIMEOUT, NODE_FAIL, PREEMPTED, ...) is failed with that reason and its requester
gets the failure mail.
"""

import os
import time

from caslib.messages import failmail
from caslib import jobdir, logs
from caslib.queue import slurmcmd, slurmjob
from caslib.records import StepError
from caslib.queue.sqlitequeue import SqliteQueue

LIVE = ("queued", "running")


def pick_partition(machine: str | None, mapping: dict, existing: list) -> str:
    """The partition for a dump of ``machine``: partitionMap's, else the one named like the
    machine.  StepError (``no-partition``) when there is none or it does not exist."""
    if not machine:
        raise StepError("cas-ident did not find the dump's machine: no partition to send it to "
                        "(set one with --release is not enough; see partitionMap in cas.conf)",
                        "no-partition")
    want = mapping.get(machine, machine)
    if want in existing:
        return want
    how = f"partitionMap maps {machine} to {want}" if machine in mapping else \
        f"no partition named {machine} and no partitionMap entry for it"
    raise StepError(f"no Slurm partition for dumps of {machine} ({how}; the cluster has: "
                    f"{', '.join(existing) or 'none'}): not submitted", "no-partition")


class SlurmQueue(SqliteQueue):
    def __init__(self, cfg, readonly: bool = False, host: str | None = None):
        super().__init__(cfg.database, readonly=readonly, host=host)
        self.cfg = cfg

    # --- the row's Slurm columns --------------------------------------------------------
    def _slurm(self, ids) -> dict:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._read(f"SELECT id, slurm_id, slurm_partition, slurm_state, slurm_node "
                          f"FROM jobs WHERE id IN ({marks})", tuple(ids))
        return {r[0]: {"job_id": r[1], "partition": r[2], "state": r[3], "node": r[4]}
                for r in rows if r[1] is not None or r[2] is not None}

    def _with_slurm(self, jobs: list) -> list:
        info = self._slurm([j["job_id"] for j in jobs])
        for j in jobs:
            j["slurm"] = info.get(j["job_id"])
        return jobs

    def get(self, job_id):
        job = super().get(job_id)
        return self._with_slurm([job])[0] if job else None

    def list(self, state=None, identifier=None, since=None, signature=None):
        return self._with_slurm(super().list(state, identifier, since, signature))

    def _set(self, job_id: int, **cols) -> None:
        names = ", ".join(f"{k} = ?" for k in cols)
        self._write(lambda c: c.execute(f"UPDATE jobs SET {names} WHERE id = ?",
                                        tuple(cols.values()) + (job_id,)))

    def _end(self, job_id: int, state: str, error: dict | None, release=None, panic=None,
             slurm_state=None) -> bool:
        """Finish a live row once; False when someone else already did (no second mail)."""
        err = error or {}

        def update(conn):
            return conn.execute(
                "UPDATE jobs SET state = ?, finished = ?, release = ?, panic = ?, error = ?, "
                "error_step = ?, error_kind = ?, error_message = ?, "
                "slurm_state = COALESCE(?, slurm_state) WHERE id = ? AND state IN (?, ?)",
                (state, time.time(), release, panic,
                 f"{err.get('step')}: {err.get('message')}" if error else None,
                 err.get("step"), err.get("kind"), err.get("message"), slurm_state, job_id,
                 *LIVE)).rowcount
        return bool(self._write(update))

    # --- the Queue interface -----------------------------------------------------------
    def submit(self, options, rerun_of=None, attempt=1):
        job = super().submit(options, rerun_of, attempt)
        row = job["job_id"]
        try:
            head = slurmjob.run_head(options, self.cfg)
        except BaseException as exc:  # never leave a queued row that nothing will run
            self._end(row, "failed", {"step": "cas", "kind": "interrupted" if isinstance(
                exc, KeyboardInterrupt) else "failed", "message": f"head not run: {exc}"})
            raise
        workdir = head.get("workdir") if isinstance(head.get("workdir"), str) else None
        if workdir:
            self._set(row, workdir=workdir, job=head.get("job") or job["job"])
        err = head.get("error")
        if err and (not isinstance(err, dict) or err.get("step") in slurmjob.FATAL_IN_HEAD
                    or not workdir):
            error = err if isinstance(err, dict) else {"message": str(err)}
            if self._end(row, "failed", error):
                failmail.notify(self.cfg, row, head, options.get("email"))
            raise StepError(f"job {row} failed on this host: {error.get('step')}: "
                            f"{error.get('message')}", error.get("kind") or "failed")
        machine = (head.get("kernel") or {}).get("machine")
        try:
            if (self.get(row) or {}).get("state") != "queued":
                raise StepError(f"cancelled while {workdir} was unpacked: not submitted",
                                "cancelled")
            if not workdir or not jobdir.inside(self.cfg.workDirectory, workdir):
                raise StepError(f"cas-ident's record names no job directory under "
                                f"{self.cfg.workDirectory}", "bad-record")
            partition = pick_partition(machine, self.cfg.partitionMap, slurmcmd.partitions())
            spec = {"job_id": row, "options": options, "partition": partition}
            slurmjob.write_json(os.path.join(workdir, slurmjob.SPEC), spec)
            slurmjob.write_json(os.path.join(workdir, slurmjob.HEAD), head)
            name = head.get("job") or job["job"]
            slurm_id = slurmcmd.sbatch(
                [f"--job-name=cas-{name}", f"--partition={partition}",
                 f"--output={os.path.join(workdir, 'slurm-%j.out')}", f"--chdir={workdir}"]
                + list(self.cfg.slurmArgs), slurmjob.tail_command(workdir, self.cfg))
        except (StepError, OSError) as exc:
            msg = getattr(exc, "message", None) or f"{workdir}: {exc}"
            self._end(row, "failed", {"step": "slurm", "kind": getattr(exc, "kind", "os-error"),
                                      "message": msg})
            raise StepError(f"job {row}: {msg}", getattr(exc, "kind", "os-error")) from None
        self._set(row, slurm_id=slurm_id, slurm_partition=partition, slurm_state="PENDING")
        logs.get().info("job %s: Slurm job %s on partition %s", row, slurm_id, partition)
        return self.get(row)

    def claim(self, worker_pid):
        raise StepError("[queue] backend = slurm: Slurm runs the jobs, cas-worker has none "
                        "to claim", "usage")

    def cancel(self, job_id):
        job = self.get(job_id)
        if job is None:
            raise StepError(f"no job {job_id}", "not-found")
        slurm = job.get("slurm") or {}
        if job["state"] not in LIVE or not slurm.get("job_id"):
            return super().cancel(job_id)
        slurmcmd.scancel(slurm["job_id"])
        self._end(job_id, "cancelled", {"step": "queue", "kind": "cancelled",
                                        "message": f"cancelled (scancel of Slurm job "
                                                   f"{slurm['job_id']}) while {job['state']}"},
                  slurm_state="CANCELLED")
        return dict(self.get(job_id), was=job["state"])

    def recover_lost(self):
        done = super().recover_lost()  # foreground cas runs on this host
        if not self.readonly:
            done += self.sync()
        return done

    # --- Slurm's state into the table --------------------------------------------------
    def sync(self) -> list:
        """Bring live Slurm jobs' rows up to date; the ids of the rows that ended."""
        live = [j for j in self.list(state="queued") + self.list(state="running")
                if (j.get("slurm") or {}).get("job_id")]
        if not live:
            return []
        states = slurmcmd.job_states([j["slurm"]["job_id"] for j in live])
        ended = []
        for job in live:
            info = states.get(job["slurm"]["job_id"])
            if self._sync_one(job, info):
                ended.append(job["job_id"])
        return ended

    def _sync_one(self, job: dict, info: dict | None) -> bool:
        row, sid = job["job_id"], job["slurm"]["job_id"]
        state = (info or {}).get("state")
        cas_state = slurmcmd.cas_state(state)
        if state and cas_state is None:  # a state this CAS does not know: look again later
            self._set(row, slurm_state=state)
            return False
        if cas_state in LIVE:
            cols = {"slurm_state": state, "slurm_node": info.get("node")}
            if cas_state == "running" and job["state"] == "queued":
                cols.update(state="running", started=time.time())
            self._set(row, **cols)
            return False
        workdir = job["workdir"]
        try:
            result = slurmjob.read_json(os.path.join(workdir, slurmjob.RESULT)) if workdir else None
        except StepError as exc:
            result = {"error": {"step": "slurm", "kind": exc.kind, "message": exc.message}}
        base = (state or "").split()[0] if state else None
        if base in slurmcmd.KILLED or (result is None and cas_state != "cancelled"):
            reason = f" ({info['reason']})" if info and info.get("reason") else ""
            where = f" on {info['node']}" if info and info.get("node") else ""
            what = (f"Slurm job {sid} ended {base}{reason}{where}" if state else
                    f"Slurm job {sid} is unknown to Slurm and left no result")
            error = {"step": "slurm", "kind": slurmcmd.KILLED.get(base, "failed" if state else "lost"), "message": what}
            if self._end(row, "failed", error, slurm_state=base):
                logs.get().warning("job %s: %s", row, what)
                try:
                    head = slurmjob.read_json(os.path.join(workdir, slurmjob.HEAD)) or {}
                except StepError:
                    head = {}
                failmail.notify(self.cfg, row, head, job.get("email"), error)
            return True
        if cas_state == "cancelled" and result is None:
            return self._end(row, "cancelled", {"step": "slurm", "kind": "cancelled",
                                                "message": f"Slurm job {sid} was cancelled"},
                             slurm_state=base)
        err = result.get("error")
        panic = (((result.get("crash") or {}).get("panic") or {}).get("message")
                 or ((result.get("dmesg") or {}).get("panic") or {}).get("message"))
        release = (result.get("kernel") or {}).get("release")
        # the tail mailed its own failure; a log-only analysis is done and says why
        return self._end(row, "failed" if err else "done",
                         err if err else result.get("analysis_error"), release, panic,
                         slurm_state=base)
