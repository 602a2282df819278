"""Record lines read with bounded memory and checked for nesting without recursion.

Why: a record line is input.  ``json.loads`` of 100,000 ``[`` raises
RecursionError, and reading a 100 MB line holds it whole; ``bounded_lines``
holds at most MAX_LINE characters of any line (the rest is skipped, and the
line reported as too long) and ``depth`` measures a parsed value's nesting
with an explicit stack.  ``records.read_records`` turns both into error
records for that line and goes on with the next.
"""

from collections.abc import Iterator

MAX_LINE = 16 * 1024 * 1024  # characters of one record line; records are small
MAX_DEPTH = 64               # nesting of one record; the contract needs 4


def bounded_lines(stream) -> Iterator[tuple[str, bool]]:
    """(line, too_long) with at most MAX_LINE characters held, however long the line is."""
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            head = line[:200]
            while line and not line.endswith("\n"):  # skip the rest of that line
                line = stream.readline(MAX_LINE)
            yield head, True
            continue
        yield line, False


def depth(value) -> int:
    """Nesting depth of a parsed value, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            todo.extend((v, level + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest
