"""``find -regextype T -regex P`` semantics as Python regular expressions.

Why: ``rpmFilter``/``debFilter`` come from the original CAS configuration,
where they were handed to GNU find; a site's existing filter must select the
same packages here.  Python's ``re`` is neither POSIX basic nor extended, so
each pattern is translated token by token under the GNU syntax bits find
uses for its type (findutils ``lib/regextype.c``, gnulib ``regex.h``):
grouping ``\\( \\)`` vs ``( )``, alternation ``\\|`` vs ``|``, intervals
``\\{ \\}`` vs ``{ }`` (or none: emacs, awk), ``\\+ \\?`` vs ``+ ?``, bracket
expressions with ``[:class:]`` and (awk) backslash escapes, GNU operators
``\\w \\< \\> \\` \\'``, context-dependent ``^ $ *`` in basic syntaxes.  The
match is against the whole path, as find's ``-regex`` is (``fullmatch``).
The behaviour was checked against GNU find 4.9 (tests/test_admin_regex.py
runs both side by side).
"""

import re
from dataclasses import dataclass

from caslib.errors import FormatError



@dataclass(frozen=True)
class Syntax:
    bk_parens: bool        # \( \) group; else ( )
    bk_vbar: bool          # \| alternates; else |
    intervals: bool        # {m,n} repetition exists
    bk_braces: bool        # written \{ \}
    bk_plus_qm: bool       # \+ \? are operators; else + ?
    classes: bool          # [:alpha:] inside brackets
    escape_in_lists: bool  # backslash escapes inside brackets (awk)
    gnu_ops: bool          # \w \W \s \S \b \B \< \> \` \'
    backrefs: bool         # \1 .. \9
    indep_anchors: bool    # ^ $ are anchors anywhere
    leading_op_error: bool  # a leading * is an error; else a literal
    invalid_interval_literal: bool  # a bad { is a literal {
    dot_newline: bool      # . matches a newline


_BRE = Syntax(True, True, True, True, True, True, False, True, True, False, False, False, True)
_ERE = Syntax(False, False, True, False, False, True, False, True, True, True, True, False, True)
_EMACS = Syntax(True, True, False, False, False, False, False, True, True, False, False, False, False)

SYNTAXES = {
    "posix-basic": _BRE, "grep": _BRE, "ed": _BRE, "sed": _BRE,
    "posix-extended": _ERE,
    "egrep": _ERE.__class__(**{**_ERE.__dict__, "leading_op_error": False,
                               "invalid_interval_literal": True}),
    "posix-egrep": _ERE.__class__(**{**_ERE.__dict__, "leading_op_error": False,
                                     "invalid_interval_literal": True}),
    "awk": _ERE.__class__(**{**_ERE.__dict__, "intervals": False, "escape_in_lists": True,
                             "gnu_ops": False, "backrefs": False, "leading_op_error": False}),
    "posix-awk": _ERE.__class__(**{**_ERE.__dict__, "escape_in_lists": True, "gnu_ops": False,
                                   "invalid_interval_literal": True}),
    "gnu-awk": _ERE.__class__(**{**_ERE.__dict__, "escape_in_lists": True,
                                 "leading_op_error": False, "invalid_interval_literal": True}),
    "emacs": _EMACS,
    "findutils-default": _EMACS.__class__(**{**_EMACS.__dict__, "dot_newline": True}),
}

_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "0-9a-zA-Z", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "xdigit": "0-9A-Fa-f",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "print": r"\x20-\x7e", "graph": r"\x21-\x7e", "cntrl": r"\x00-\x1f\x7f",
}
_GNU_OPS = {"w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S", "b": r"\b", "B": r"\B",
            "<": r"\b(?=\w)", ">": r"\b(?<=\w)", "`": r"\A", "'": r"\Z"}


def _set_char(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _bracket(p: str, i: int, syn: Syntax, where: str) -> tuple[str, int]:
    """Translate the bracket expression starting after '[' at ``i``; return (text, next index)."""
    n = len(p)
    neg = i < n and p[i] == "^"
    if neg:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= n:
            raise FormatError(f"{where}: unmatched [ or [^", "config")
        c = p[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if syn.classes and c == "[" and i + 1 < n and p[i + 1] in ":=.":
            kind = p[i + 1]
            end = p.find(kind + "]", i + 2)
            if end < 0:
                raise FormatError(f"{where}: unmatched [{kind}", "config")
            name = p[i + 2:end]
            i = end + 2
            if kind == ":":
                if name not in _CLASSES:
                    raise FormatError(f"{where}: invalid character class [:{name}:]", "config")
                items.append(_CLASSES[name])
                continue
            if len(name) != 1:
                raise FormatError(f"{where}: unsupported collating element [{kind}{name}{kind}]", "config")
            c = name
        elif syn.escape_in_lists and c == "\\" and i + 1 < n:
            c = p[i + 1]
            i += 2
        else:
            i += 1
        # a range c-d (a '-' right before ']' is a literal)
        if i + 1 < n and p[i] == "-" and p[i + 1] != "]":
            d = p[i + 1]
            i += 2
            if syn.escape_in_lists and d == "\\" and i < n:
                d = p[i]
                i += 1
            elif syn.classes and d == "[" and i < n and p[i] in ".=":
                kind = p[i]
                end = p.find(kind + "]", i + 1)
                if end < 0 or end - i - 1 != 1:
                    raise FormatError(f"{where}: bad range end", "config")
                d = p[i + 1]
                i = end + 2
            if ord(d) < ord(c):
                raise FormatError(f"{where}: invalid range end {c}-{d}", "config")
            items.append(_set_char(c) + "-" + _set_char(d))
        else:
            items.append(_set_char(c))
    return "[" + ("^" if neg else "") + "".join(items) + "]", i


class _Frame:
    def __init__(self):
        self.items: list[str] = []
        self.last = "start"  # start | atom | quantified | anchor | alt


def translate(pattern: str, regex_type: str, what: str = "regex") -> str:
    """The Python ``re`` source equivalent to ``pattern`` under find's ``regex_type``."""
    syn = SYNTAXES.get(regex_type)
    if syn is None:
        raise FormatError(f"regexType {regex_type!r} is not supported (use one of "
                         + ", ".join(sorted(SYNTAXES)) + ")", "config")
    where = f"{what} {pattern!r} ({regex_type})"
    p, n, i = pattern, len(pattern), 0
    stack = [_Frame()]
    groups_open = groups_done = 0

    def atom(text: str) -> None:
        stack[-1].items.append(text)
        stack[-1].last = "atom"

    def at_start() -> bool:
        return stack[-1].last in ("start", "alt") or (stack[-1].last == "anchor"
                                                     and not syn.indep_anchors)

    def quantify(q: str, literal: str) -> None:
        f = stack[-1]
        if at_start():
            if syn.leading_op_error:
                raise FormatError(f"{where}: nothing to repeat before {literal!r}", "config")
            atom(re.escape(literal))
            return
        if f.last == "anchor":
            atom(re.escape(literal))
            return
        if f.last == "quantified":
            f.items[-1] = "(?:" + f.items[-1] + ")"
        f.items[-1] += q
        f.last = "quantified"

    def interval(j: int, close: str) -> int | None:
        """Parse m,n up to ``close``; return the index after it, or None when malformed."""
        end = p.find(close, j)
        if end < 0:
            return None
        m = re.fullmatch(r"(\d*)(,?)(\d*)", p[j:end])
        if not m or not (m[1] or m[2]):
            return None
        lo = int(m[1]) if m[1] else 0
        hi = (int(m[3]) if m[3] else None) if m[2] else lo
        if (hi is not None and hi < lo) or lo > 32767 or (hi or 0) > 32767:
            raise FormatError(f"{where}: invalid interval {p[j:end]!r}", "config")
        quantify("{%d}" % lo if not m[2] else "{%d,%s}" % (lo, "" if hi is None else hi),
                 p[j - len(close):end + len(close)])
        return end + len(close)

    def ends_here(j: int) -> bool:
        """For '$' in basic syntaxes: at the end, or before a group close / alternation."""
        if j >= n:
            return True
        if syn.bk_parens:
            return p.startswith("\\)", j) or (syn.bk_vbar and p.startswith("\\|", j))
        return p[j] in ")|"

    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise FormatError(f"{where}: trailing backslash", "config")
            d = p[i + 1]
            i += 2
            if syn.bk_parens and d == "(":
                stack.append(_Frame())
                groups_open += 1
            elif syn.bk_parens and d == ")":
                if len(stack) == 1:
                    raise FormatError(f"{where}: unmatched \\)", "config")
                f = stack.pop()
                groups_done += 1
                atom("(" + "".join(f.items) + ")")
            elif syn.bk_vbar and d == "|":
                stack[-1].items.append("|")
                stack[-1].last = "alt"
            elif syn.intervals and syn.bk_braces and d == "{":
                nxt = interval(i, "\\}")
                if nxt is None:
                    raise FormatError(f"{where}: invalid \\{{ interval", "config")
                i = nxt
            elif syn.bk_plus_qm and d in "+?":
                quantify(d, d)
            elif d in "123456789" and syn.backrefs:
                if int(d) > groups_done:
                    raise FormatError(f"{where}: invalid back reference \\{d}", "config")
                atom(f"(?:\\{d})")
            elif syn.gnu_ops and d in _GNU_OPS:
                text = _GNU_OPS[d]
                stack[-1].items.append(text)
                stack[-1].last = "anchor" if d in "bB<>`'" else "atom"
            else:
                atom(re.escape(d))
            continue
        i += 1
        if c == "[":
            text, i = _bracket(p, i, syn, where)
            atom(text)
        elif c == "(" and not syn.bk_parens:
            stack.append(_Frame())
            groups_open += 1
        elif c == ")" and not syn.bk_parens:
            if len(stack) == 1:
                atom(re.escape(c))  # RE_UNMATCHED_RIGHT_PAREN_ORD
            else:
                f = stack.pop()
                groups_done += 1
                atom("(" + "".join(f.items) + ")")
        elif c == "|" and not syn.bk_vbar:
            stack[-1].items.append("|")
            stack[-1].last = "alt"
        elif c == "{" and syn.intervals and not syn.bk_braces:
            nxt = interval(i, "}")
            if nxt is None:
                if syn.invalid_interval_literal or at_start():
                    atom(re.escape(c))
                else:
                    raise FormatError(f"{where}: invalid {{ interval", "config")
            else:
                i = nxt
        elif c == "*" or (c in "+?" and not syn.bk_plus_qm):
            quantify(c, c)
        elif c == "^":
            if syn.indep_anchors or at_start():
                stack[-1].items.append("^")
                stack[-1].last = "anchor"
            else:
                atom(re.escape(c))
        elif c == "$":
            if syn.indep_anchors or ends_here(i):
                stack[-1].items.append(r"\Z")
                stack[-1].last = "anchor"
            else:
                atom(re.escape(c))
        elif c == ".":
            atom("(?s:.)" if syn.dot_newline else "[^\\n]")
        else:
            atom(re.escape(c))
    if len(stack) != 1:
        raise FormatError(f"{where}: unmatched ( or \\(", "config")
    return "".join(stack[0].items)


def compile(pattern: str, regex_type: str, what: str = "regex") -> re.Pattern:
    """Compile for ``fullmatch`` against a whole path; FormatError (one line) when invalid."""
    source = translate(pattern, regex_type, what)
    try:
        return re.compile(source)
    except re.error as exc:
        raise FormatError(f"{what} {pattern!r} ({regex_type}): {exc}", "config") from None


def matcher(pattern: str, regex_type: str, what: str = "regex"):
    """A function path -> bool with find's ``-regex`` semantics."""
    rx = compile(pattern, regex_type, what)
    return lambda path: rx.fullmatch(path) is not None
