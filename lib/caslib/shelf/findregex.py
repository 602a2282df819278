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
        if p[i] == "]" and not first:
            return "[" + ("^" if neg else "") + "".join(items) + "]", i + 1
        first = False
        c, i, is_class = _list_char(p, i, syn, where)
        if is_class:
            items.append(c)
        elif i + 1 < n and p[i] == "-" and p[i + 1] != "]":  # a '-' before ']' is a literal
            d, i = _range_end(p, i + 1, syn, where)
            if ord(d) < ord(c):
                raise FormatError(f"{where}: invalid range end {c}-{d}", "config")
            items.append(_set_char(c) + "-" + _set_char(d))
        else:
            items.append(_set_char(c))


def _list_char(p: str, i: int, syn: Syntax, where: str) -> tuple[str, int, bool]:
    """One item of a bracket expression at ``i``: (character, next index, False), or
    (the class's set text, next index, True) for ``[:name:]``."""
    c = p[i]
    if syn.classes and c == "[" and i + 1 < len(p) and p[i + 1] in ":=.":
        kind = p[i + 1]
        end = p.find(kind + "]", i + 2)
        if end < 0:
            raise FormatError(f"{where}: unmatched [{kind}", "config")
        name = p[i + 2:end]
        if kind == ":":
            if name not in _CLASSES:
                raise FormatError(f"{where}: invalid character class [:{name}:]", "config")
            return _CLASSES[name], end + 2, True
        if len(name) != 1:
            raise FormatError(f"{where}: unsupported collating element "
                              f"[{kind}{name}{kind}]", "config")
        return name, end + 2, False
    if syn.escape_in_lists and c == "\\" and i + 1 < len(p):
        return p[i + 1], i + 2, False
    return c, i + 1, False


def _range_end(p: str, i: int, syn: Syntax, where: str) -> tuple[str, int]:
    """The end of a range whose first character is at ``i``: (character, next index)."""
    n = len(p)
    d = p[i]
    i += 1
    if syn.escape_in_lists and d == "\\" and i < n:
        return p[i], i + 1
    if syn.classes and d == "[" and i < n and p[i] in ".=":
        end = p.find(p[i] + "]", i + 1)
        if end < 0 or end - i - 1 != 1:
            raise FormatError(f"{where}: bad range end", "config")
        return p[i + 1], end + 2
    return d, i


class _Frame:
    def __init__(self):
        self.items: list[str] = []
        self.last = "start"  # start | atom | quantified | anchor | alt


class _Translator:
    """One pass over a pattern: a stack of open groups, each a list of Python ``re`` text."""

    def __init__(self, pattern: str, syn: Syntax, where: str):
        self.p, self.n, self.syn, self.where = pattern, len(pattern), syn, where
        self.stack = [_Frame()]
        self.groups_done = 0

    def fail(self, why: str) -> FormatError:
        return FormatError(f"{self.where}: {why}", "config")

    def atom(self, text: str) -> None:
        self.stack[-1].items.append(text)
        self.stack[-1].last = "atom"

    def mark(self, text: str, last: str) -> None:
        """An anchor or alternation: text that is not an atom a quantifier could follow."""
        self.stack[-1].items.append(text)
        self.stack[-1].last = last

    def at_start(self) -> bool:
        last = self.stack[-1].last
        return last in ("start", "alt") or (last == "anchor" and not self.syn.indep_anchors)

    def open_group(self) -> None:
        self.stack.append(_Frame())

    def close_group(self) -> None:
        f = self.stack.pop()
        self.groups_done += 1
        self.atom("(" + "".join(f.items) + ")")

    def quantify(self, q: str, literal: str) -> None:
        f = self.stack[-1]
        if self.at_start():
            if self.syn.leading_op_error:
                raise self.fail(f"nothing to repeat before {literal!r}")
            self.atom(re.escape(literal))
        elif f.last == "anchor":
            self.atom(re.escape(literal))
        else:
            if f.last == "quantified":
                f.items[-1] = "(?:" + f.items[-1] + ")"
            f.items[-1] += q
            f.last = "quantified"

    def interval(self, j: int, close: str) -> int | None:
        """Parse m,n up to ``close``; return the index after it, or None when malformed."""
        p = self.p
        end = p.find(close, j)
        if end < 0:
            return None
        m = re.fullmatch(r"(\d*)(,?)(\d*)", p[j:end])
        if not m or not (m[1] or m[2]):
            return None
        lo = int(m[1]) if m[1] else 0
        hi = (int(m[3]) if m[3] else None) if m[2] else lo
        if (hi is not None and hi < lo) or lo > 32767 or (hi or 0) > 32767:
            raise self.fail(f"invalid interval {p[j:end]!r}")
        self.quantify("{%d}" % lo if not m[2] else "{%d,%s}" % (lo, "" if hi is None else hi),
                      p[j - len(close):end + len(close)])
        return end + len(close)

    def ends_here(self, j: int) -> bool:
        """For '$' in basic syntaxes: at the end, or before a group close / alternation."""
        if j >= self.n:
            return True
        if self.syn.bk_parens:
            return self.p.startswith("\\)", j) or (self.syn.bk_vbar and self.p.startswith("\\|", j))
        return self.p[j] in ")|"

    def escaped(self, d: str, i: int) -> int:
        """The backslash sequence ``\\d`` whose next character is at ``i``; the next index."""
        syn = self.syn
        if syn.bk_parens and d == "(":
            self.open_group()
        elif syn.bk_parens and d == ")":
            if len(self.stack) == 1:
                raise self.fail("unmatched \\)")
            self.close_group()
        elif syn.bk_vbar and d == "|":
            self.mark("|", "alt")
        elif syn.intervals and syn.bk_braces and d == "{":
            nxt = self.interval(i, "\\}")
            if nxt is None:
                raise self.fail("invalid \\{ interval")
            return nxt
        elif syn.bk_plus_qm and d in "+?":
            self.quantify(d, d)
        elif d in "123456789" and syn.backrefs:
            if int(d) > self.groups_done:
                raise self.fail(f"invalid back reference \\{d}")
            self.atom(f"(?:\\{d})")
        elif syn.gnu_ops and d in _GNU_OPS:
            self.mark(_GNU_OPS[d], "anchor" if d in "bB<>`'" else "atom")
        else:
            self.atom(re.escape(d))
        return i

    def special(self, c: str, i: int) -> int | None:
        """A character that may be an operator, the next one at ``i``: the next index, or
        None when ``c`` is no operator here."""
        syn = self.syn
        if c == "[":
            text, i = _bracket(self.p, i, syn, self.where)
            self.atom(text)
        elif c == "(" and not syn.bk_parens:
            self.open_group()
        elif c == ")" and not syn.bk_parens:
            if len(self.stack) == 1:
                return None  # RE_UNMATCHED_RIGHT_PAREN_ORD: a literal
            self.close_group()
        elif c == "|" and not syn.bk_vbar:
            self.mark("|", "alt")
        elif c == "{" and syn.intervals and not syn.bk_braces:
            return self.brace(i)
        elif c == "*" or (c in "+?" and not syn.bk_plus_qm):
            self.quantify(c, c)
        elif c == "^" and (syn.indep_anchors or self.at_start()):
            self.mark("^", "anchor")
        elif c == "$" and (syn.indep_anchors or self.ends_here(i)):
            self.mark(r"\Z", "anchor")
        elif c == ".":
            self.atom("(?s:.)" if syn.dot_newline else "[^\\n]")
        else:
            return None
        return i

    def brace(self, i: int) -> int:
        """An unescaped '{' (ERE): an interval, or a literal where find takes it so."""
        nxt = self.interval(i, "}")
        if nxt is not None:
            return nxt
        if self.syn.invalid_interval_literal or self.at_start():
            self.atom(re.escape("{"))
            return i
        raise self.fail("invalid { interval")

    def run(self) -> str:
        p, i = self.p, 0
        while i < self.n:
            c = p[i]
            if c == "\\":
                if i + 1 >= self.n:
                    raise self.fail("trailing backslash")
                i = self.escaped(p[i + 1], i + 2)
                continue
            nxt = self.special(c, i + 1)
            if nxt is None:
                self.atom(re.escape(c))
                nxt = i + 1
            i = nxt
        if len(self.stack) != 1:
            raise self.fail("unmatched ( or \\(")
        return "".join(self.stack[0].items)


def translate(pattern: str, regex_type: str, what: str = "regex") -> str:
    """The Python ``re`` source equivalent to ``pattern`` under find's ``regex_type``."""
    syn = SYNTAXES.get(regex_type)
    if syn is None:
        raise FormatError(f"regexType {regex_type!r} is not supported (use one of "
                          + ", ".join(sorted(SYNTAXES)) + ")", "config")
    return _Translator(pattern, syn, f"{what} {pattern!r} ({regex_type})").run()


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
