"""Snappy (raw block format) decompression, for the pages of ``makedumpfile -p`` dumps.

Why: makedumpfile built with libsnappy compresses each page with
``snappy_compress``; the standard library has no decoder.  Format (Google
snappy ``format_description.txt``): a varint with the uncompressed length,
then elements whose tag byte's low two bits say what follows:

- ``00`` literal: length ``(tag >> 2) + 1``; 60..63 mean the length minus one
  is in the next 1..4 little-endian bytes;
- ``01`` copy: length ``4 + ((tag >> 2) & 7)``, offset ``(tag >> 5) << 8`` plus
  one byte;
- ``10`` copy: length ``(tag >> 2) + 1``, 2-byte little-endian offset;
- ``11`` copy: length ``(tag >> 2) + 1``, 4-byte little-endian offset.

Corrupt input raises ``caslib.errors.FormatError``; the output never exceeds ``out_size``.
"""

from caslib.errors import FormatError


def decompress(data: bytes, out_size: int) -> bytes:
    """Decode one raw snappy block that must produce at most ``out_size`` bytes."""
    n = len(data)
    length, shift, ip = 0, 0, 0
    while True:
        if ip >= n or shift > 28:
            raise FormatError("bad length varint")
        b = data[ip]
        ip += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    if length > out_size:
        raise FormatError(f"says {length} bytes, more than {out_size}")
    out = bytearray()
    while ip < n:
        tag = data[ip]
        ip += 1
        kind = tag & 3
        if kind == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                if ip + extra > n:
                    raise FormatError("input ends inside a literal length")
                size = int.from_bytes(data[ip:ip + extra], "little")
                ip += extra
            size += 1
            if ip + size > n or len(out) + size > length:
                raise FormatError("literal runs past the input or the output")
            out += data[ip:ip + size]
            ip += size
            continue
        if kind == 1:
            if ip >= n:
                raise FormatError("input ends inside a copy")
            size, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | data[ip]
            ip += 1
        else:
            width = 2 if kind == 2 else 4
            if ip + width > n:
                raise FormatError("input ends inside a copy")
            size, offset = (tag >> 2) + 1, int.from_bytes(data[ip:ip + width], "little")
            ip += width
        start = len(out) - offset
        if offset == 0 or start < 0 or len(out) + size > length:
            raise FormatError("copy reaches outside the output")
        if offset >= size:
            out += out[start:start + size]
        else:
            chunk = out[start:]
            reps, rest = divmod(size, offset)
            out += chunk * reps + chunk[:rest]
    if len(out) != length:
        raise FormatError(f"decoded {len(out)} bytes, the header says {length}")
    return bytes(out)
