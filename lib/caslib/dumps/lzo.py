"""LZO1X decompression, for the pages of ``makedumpfile -l`` dumps.

Why: makedumpfile compresses each page of a ``-l`` dump with liblzo2's
``lzo1x_1_compress``; reading those pages (cas-ident's ``init_uts_ns``,
cas-dmesg's log) needs the decoder, and the standard library has none.
The stream is a sequence of literal runs and back-references (the LZO1X
format of liblzo2 ``lzo1x_d.ch`` and linux ``lib/lzo/lzo1x_decompress_safe.c``):

- an instruction byte ``t`` below 16 at the top of the loop starts a literal
  run of ``t + 3`` bytes (``t == 0``: 15 plus the extended length that
  follows, each zero byte adding 255);
- ``t >= 64`` (M2): copy ``(t >> 5) + 1`` bytes from distance
  ``1 + ((t >> 2) & 7) + (next << 3)``;
- ``32 <= t < 64`` (M3): length ``(t & 31) + 2`` (extended when 0), distance
  ``1 + (le16 >> 2)``;
- ``16 <= t < 32`` (M4): length ``(t & 7) + 2`` (extended when 0), distance
  ``0x4000 + ((t & 8) << 11) + (le16 >> 2)``; distance 0x4000 ends the stream;
- ``t < 16`` right after a match (M1): two bytes from distance
  ``1 + (t >> 2) + (next << 2)``, or three bytes from ``0x801 + ...`` right
  after a literal run;
- the low two bits of a match's last-read offset byte give 0..3 literals
  that follow it.

Every read is checked: a corrupt page raises ``caslib.errors.FormatError``, never reads or
writes out of bounds, and output stops at ``out_size`` bytes.
"""

from caslib.errors import FormatError


def _extend(data: bytes, ip: int, base: int) -> tuple[int, int]:
    """Extended length: zero bytes add 255 each, the first non-zero byte ends it."""
    n = len(data)
    t = 0
    while ip < n and data[ip] == 0:
        t += 255
        ip += 1
        if t > 1 << 24:
            raise FormatError("run length is absurd")
    if ip >= n:
        raise FormatError("input ends inside a run length")
    return t + base + data[ip], ip + 1


def decompress(data: bytes, out_size: int) -> bytes:
    """Decode one LZO1X block that must produce at most ``out_size`` bytes."""
    out = bytearray()
    n = len(data)
    ip = 0

    def literals(count: int) -> None:
        nonlocal ip
        if ip + count > n:
            raise FormatError("input ends inside a literal run")
        if len(out) + count > out_size:
            raise FormatError(f"output exceeds {out_size} bytes")
        out.extend(data[ip:ip + count])
        ip += count

    def copy(dist: int, length: int) -> None:
        start = len(out) - dist
        if start < 0:
            raise FormatError("back-reference before the start of the output")
        if len(out) + length > out_size:
            raise FormatError(f"output exceeds {out_size} bytes")
        if dist >= length:
            out.extend(out[start:start + length])
        else:  # overlapping: the copy repeats the last ``dist`` bytes
            chunk = out[start:]
            reps, rest = divmod(length, dist)
            out.extend(chunk * reps + chunk[:rest])

    def byte() -> int:
        nonlocal ip
        if ip >= n:
            raise FormatError("input ends inside an instruction")
        ip += 1
        return data[ip - 1]

    state = "loop"
    if n and data[0] > 17:
        t = byte() - 17
        literals(t)
        state = "after_literals" if t >= 4 else "after_match"
    while True:
        if state == "loop":
            t = byte()
            if t < 16:
                if t == 0:
                    t, ip = _extend(data, ip, 15)
                literals(t + 3)
                state = "after_literals"
                continue
        else:
            t = byte()
        if t < 16:
            if state == "after_literals":  # a 3-byte match from far back
                copy(1 + 0x800 + (t >> 2) + (byte() << 2), 3)
            else:                          # M1: 2 bytes from near
                copy(1 + (t >> 2) + (byte() << 2), 2)
            low = data[ip - 2] & 3
        elif t >= 64:                      # M2
            copy(1 + ((t >> 2) & 7) + (byte() << 3), (t >> 5) + 1)
            low = data[ip - 2] & 3
        elif t >= 32:                      # M3
            length = t & 31
            if length == 0:
                length, ip = _extend(data, ip, 31)
            lo, hi = byte(), byte()
            copy(1 + (lo >> 2) + (hi << 6), length + 2)
            low = lo & 3
        else:                              # M4, or the end marker
            length = t & 7
            if length == 0:
                length, ip = _extend(data, ip, 7)
            lo, hi = byte(), byte()
            dist = ((t & 8) << 11) + (lo >> 2) + (hi << 6)
            if dist == 0:
                if ip != n:
                    raise FormatError(f"{n - ip} bytes of input after the end marker")
                return bytes(out)
            copy(dist + 0x4000, length + 2)
            low = lo & 3
        if low:
            literals(low)
            state = "after_match"
        else:
            state = "loop"
