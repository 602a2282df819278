"""LKCD crash dump headers (v7..v9): the kernel they name.

Why: LKCD (and s390's zgetdump, which writes the same header) puts the
crashed kernel's utsname and the crash time in the dump header, so the
kernel is named without scanning memory.

``dump_header`` (lkcd ``dump.h``; crash ``lkcd_dump_v8.h``): u64 magic,
u32 version, header_size, dump_level, page_size, u64 memory_size,
memory_start, memory_end, u32 num_dump_pages, char panic_string[256] @52,
the crash time, then six 65-byte utsname fields.  The time is {u64 sec,
u64 usec} in packed v8+ headers (utsname @324), a native struct timeval
before: 64-bit aligned (@328) or 32-bit (@316).
"""

import struct

from caslib.dumps import kdumphdr

MAGICS = (0xA8190173618F23ED, 0xA8190173618F23CD)
UTSNAME_AT = ((324, 308, "Q"), (328, 312, "Q"), (316, 308, "I"))  # utsname, time, word


def read(head: bytes) -> dict | None:
    """``{version, utsname, timestamp, panic_string}`` where a layout's sysname says Linux."""
    e = "<" if int.from_bytes(head[:8], "little") in MAGICS else ">"
    for at, time_at, word in UTSNAME_AT:
        if len(head) < at + 390:
            continue
        uts = kdumphdr.parse_utsname(head[at:at + 390])
        if uts["sysname"] == "Linux" and uts["release"]:
            panic = head[52:308].split(b"\0", 1)[0].decode("utf-8", "replace").strip()
            return {"version": struct.unpack_from(e + "I", head, 8)[0], "utsname": uts,
                    "timestamp": struct.unpack_from(e + word, head, time_at)[0],
                    "panic_string": panic if panic and panic.isprintable() else None}
    return None
