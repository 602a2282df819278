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
    # the machine
    "disk-full": "no space left on the device",
    "permission": "the CAS user may not read or write a path",
    "unreadable": "a file exists but cannot be read",
    "os-error": "any other operating-system error",
    "missing-tool": "a program CAS runs (crash, makedumpfile, ssh...) is not installed",
    "timeout": "a deadline passed",
    "interrupted": "SIGINT or SIGTERM arrived",
    "busy": "another process holds the job or the database",
    "changed": "a file changed while it was read",
    # the analysis
    "bad-vmlinux": "the vmlinux does not match the dump or is not a kernel image",
    "mismatch": "a forced vmlinux does not match the dump",
    "bad-snippet": "a crash command snippet is unusable",
    "no-server": "no analysis server for the dump's architecture",
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
    return {errno.ENOSPC: "disk-full", errno.EDQUOT: "disk-full", errno.EACCES: "permission",
            errno.EPERM: "permission", errno.ENOENT: "not-found", errno.EISDIR: "not-a-dump",
            errno.ETIMEDOUT: "timeout"}.get(exc.errno, "os-error")
