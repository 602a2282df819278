"""One error vocabulary: the kinds an error record may carry, and the readers' one error type.

Scripts switch on ``error.kind`` (man/cas-records.7, ERRORS), so a kind means the same
thing in every step: a full disk is ``disk-full`` wherever it happens, a directory
given where a dump is expected is ``not-a-dump``.  New kinds are added here first.
"""

from caslib.records import StepError

KINDS = {
    # the input
    "bad-record": "a record key has the wrong type, or names a path outside the job, shelf or cache",
    "usage": "bad flags or arguments",
    "config": "the configuration file is wrong",
    "not-found": "a file, package, kernel or job that should be there is not",
    "not-a-dump": "the input is not a kernel crash dump (or is a directory, a device...)",
    "unsupported": "a format CAS recognises but cannot read",
    "corrupt": "a reader found bytes that contradict the format",
    "truncated": "the file ends before its headers say it does",
    "empty": "the input has no bytes",
    "too-large": "a size over a configured or built-in bound",
    "unsafe": "an archive member or link that would escape its directory",
    "no-core": "an archive with no dump in it",
    "split-mismatch": "parts of a split dump that do not belong together",
    "download": "a URL could not be fetched",
    "too-deep": "more nested compression or archive layers than CAS peels",
    "exists": "the output file is already there (cas-compress without --force)",
    "compressed": "a compressed file or package given where a dump is expected (run cas-unpack)",
    "not-a-kernel-dump": "an ELF core of a process, not of a kernel",
    "not-split": "a file given as a part of a split dump is not one",
    "ambiguous": "the fallback scan found several kernel releases",
    "unidentified": "a dump whose headers and scanned bytes name no kernel",
    "no-vmcoreinfo": "the dump carries no VMCOREINFO, so the kernel log cannot be found",
    "unmapped": "the kernel image could not be mapped in the dump's memory",
    "no-log": "the kernel log buffer could not be read from the dump",
    "bad-package": "a debuginfo package whose headers cannot be read",
    "digest": "an extracted file does not match the package's digest",
    # the machine
    "disk-full": "no space left on the device",
    "permission": "the CAS user may not read or write a path",
    "unreadable": "a file exists but cannot be read",
    "os-error": "any other operating-system error (the message names the file)",
    "missing-tool": "a program CAS runs (crash, makedumpfile, ssh...) is not installed",
    "timeout": "a deadline passed",
    "interrupted": ("SIGINT or SIGTERM arrived; the record is still written, with what the"
                    " step had done"),
    "internal": ("a bug in CAS: the message names the exception, the traceback goes only to"
                 " the job's log"),
    "busy": "another process holds the job or the database",
    "database": "the job database cannot be used",
    "version": "the job database was written by a newer CAS",
    "cancelled": "the queued job was cancelled while it ran",
    "changed": "a file changed while it was read",
    # the analysis
    "bad-vmlinux": "the vmlinux does not match the dump or is not a kernel image",
    "mismatch": "a forced vmlinux does not match the dump",
    "bad-snippet": "a crash command snippet is unusable",
    "crash-init": "crash could not read the dump",
    "ssh": "the analysis server could not be reached over ssh",
    "no-server": "no analysis server for the dump's architecture",
    "slurm": "a Slurm command (sbatch, squeue, scontrol, sacct, scancel) failed or hung",
    "no-partition": "no Slurm partition for the dump's architecture",
    "node-fail": "Slurm ended the job: its node failed",
    "preempted": "Slurm ended the job: preempted by another",
    "boot-fail": "Slurm ended the job: its node did not boot",
    "deadline": "Slurm ended the job: its deadline passed",
    "out-of-memory": "Slurm ended the job: over its memory limit",
    "revoked": "Slurm ended the job: revoked (federation)",
    "smtp": "the mail relay refused the message",
    "state": "the job is not in a state that allows this",
    "failed": "anything else",
}


class FormatError(StepError):
    """What every reader raises: a one-line message naming the file, and a kind from KINDS."""

    def __init__(self, message: str, kind: str = "corrupt", partial: dict | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}: add it to caslib.errors.KINDS")
        super().__init__(message, kind, partial)


def kind_of_oserror(exc: OSError) -> str:
    """The kind for an OSError, the same in every step."""
    import errno
    return {errno.ENOSPC: "disk-full", errno.EDQUOT: "disk-full",
            errno.EFBIG: "disk-full", errno.EACCES: "permission",
            errno.EPERM: "permission", errno.ENOENT: "not-found", errno.EISDIR: "not-a-dump",
            errno.ETIMEDOUT: "timeout"}.get(exc.errno, "os-error")
