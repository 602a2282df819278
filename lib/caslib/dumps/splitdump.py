"""Parts of one ``makedumpfile --split`` dump: recognise them, group them, order them.

Why: ``makedumpfile --split`` writes one dump as N kdump files, each with the
whole header (utsname, timestamp, VMCOREINFO) and a sub-header that says
``split`` and the pfn range ``[start_pfn, end_pfn)`` it holds
(``kdump_sub_header``, makedumpfile ``diskdump_mod.h``).  crash needs all of
them on one command line; a part alone is a dump with holes.  Parts of one
dump share the header's utsname and timestamp and the VMCOREINFO text; the
header does not say how many parts there are, so the count is known only
when the ranges of the parts at hand cover ``0..max_mapnr`` without a gap.
"""

import os

from caslib.errors import FormatError
from caslib import jobdir, logs, magic
from caslib.dumps import kdumphdr, kdumplayout
from caslib.dumps.flattened import open_source
from caslib.records import StepError


def part_info(path: str) -> dict | None:
    """``{fingerprint, start_pfn, end_pfn, max_mapnr}`` of a split part, else None."""
    try:
        with open_source(path) as src:
            head = src.read(0, kdumphdr.HEADER_READ)
            if head[:8] != magic.KDUMP:
                return None
            hdr = kdumphdr.read_header(src, head)
    except (OSError, FormatError):
        return None
    rng = hdr.split()
    if rng is None:
        return None
    mapnr = (hdr.sub.get("max_mapnr_64") if hdr.header_version >= 6 else None) or hdr.max_mapnr
    import hashlib  # only split dumps need it (its import costs every start-up)

    digest = hashlib.sha256(head[12:402] + hdr.timestamp.to_bytes(8, "little", signed=True)
                            + hdr.vmcoreinfo).hexdigest()[:16]
    return dict(fingerprint=digest, max_mapnr=mapnr, **rng)


def group(paths: list) -> list:
    """``paths`` as groups: the parts of one dump together (ordered by start_pfn, in the
    place of the first of them), every other file alone."""
    infos = {p: part_info(p) for p in paths}
    out, seen = [], {}
    for p in paths:
        info = infos[p]
        if info is None:
            out.append([p])
            continue
        if info["fingerprint"] in seen:
            seen[info["fingerprint"]].append(p)
            continue
        seen[info["fingerprint"]] = [p]
        out.append(seen[info["fingerprint"]])
    for parts in seen.values():
        parts.sort(key=lambda p: infos[p]["start_pfn"])
    return out


def describe(parts: list) -> tuple[dict, list]:
    """The record's ``split`` for ``parts`` (paths, ordered), and warnings.

    Raises FormatError when a file is not a split part or belongs to another dump.
    """
    infos = []
    for p in parts:
        info = part_info(p)
        if info is None:
            raise FormatError(f"{p}: not a part of a makedumpfile --split dump", "not-split")
        infos.append((p, info))
    infos.sort(key=lambda pi: pi[1]["start_pfn"])
    first = infos[0][1]
    for p, info in infos[1:]:
        if info["fingerprint"] != first["fingerprint"]:
            raise FormatError(f"{p}: a part of another dump than {infos[0][0]} (its header's "
                            "utsname, time or VMCOREINFO differ)", "split-mismatch")
    warnings, pfn = [], 0
    for p, info in infos:
        if info["start_pfn"] > pfn:
            warnings.append(f"split dump: pages {pfn:#x}..{info['start_pfn']:#x} are in no part"
                            " at hand (a part is missing)")
        elif info["start_pfn"] < pfn:
            warnings.append(f"split dump: {p} overlaps the part before it")
        pfn = max(pfn, info["end_pfn"])
    if pfn < first["max_mapnr"]:
        warnings.append(f"split dump: pages {pfn:#x}..{first['max_mapnr']:#x} are in no part"
                        " at hand (a part is missing)")
    complete = not warnings
    result = {"count": len(infos) if complete else None, "complete": complete,
              "start_pfn": infos[0][1]["start_pfn"], "end_pfn": pfn,
              "fingerprint": first["fingerprint"],
              "parts": [{"core": p, "index": i if complete else None,
                         "start_pfn": info["start_pfn"], "end_pfn": info["end_pfn"]}
                        for i, (p, info) in enumerate(infos)]}
    return result, warnings


PEEK = (64 << 10) + 16   # a header and the start of a sub-header after a block of up to 64 KiB


def is_part_head(head: bytes) -> bool:
    """Do the first bytes of a stream (``PEEK`` of them) start a split part?"""
    if head[:8] != magic.KDUMP or len(head) < kdumphdr.HEADER_READ:
        return False
    cands = kdumplayout.candidates(head)
    if not cands:
        return False
    _points, e, bits, f, _failed = cands[0]
    at = f["block_size"] + (12 if bits == 64 else 8)
    if f["version"] < 2 or f["sub_hdr_size"] < 1 or len(head) < at + 4:
        return False
    return int.from_bytes(head[at:at + 4], "little" if e == "<" else "big") != 0


def join_record(record: dict, core: str) -> None:
    """A record with ``cores`` (parts of one split dump): check and order them, and say
    ``split`` for the whole set; ``core`` becomes its first part."""
    cores = record.get("cores")
    if cores is None:
        return
    if not isinstance(cores, list) or not cores or not all(
            isinstance(c, str) and os.path.isabs(c) for c in cores) or core not in cores:
        raise StepError("cores must be a list of absolute paths holding core", "bad-record")
    workdir = record.get("workdir")
    for c in cores:
        if isinstance(workdir, str) and not jobdir.inside(workdir, c):
            raise StepError(f"{c}: outside the job directory {workdir}", "bad-record")
        if not os.path.isfile(c):
            raise StepError(f"{c}: no such file", "not-found")
    if len(cores) == 1 and "split" not in record:
        return
    try:
        whole, warnings = describe(cores)
    except FormatError as exc:
        raise StepError(str(exc), exc.kind, dict(record)) from None
    record["cores"] = [p["core"] for p in whole["parts"]]
    record["core"] = record["cores"][0]
    record["split"] = whole
    if warnings:
        record["ident"].setdefault("warnings", []).extend(warnings)
    logs.get().info("split dump in %d parts: %s", len(cores),
                    ", ".join(os.path.basename(c) for c in record["cores"]))


def initial_records(files: list) -> list | None:
    """One record per dump: the parts of a split dump given together make one."""
    if not files:
        return None
    paths = [os.path.abspath(f) for f in files]
    return [{"core": g[0]} if len(g) == 1 else {"core": g[0], "cores": g}
            for g in group(paths)]
