"""Bounded regular expressions for the decoding schema, so that a small model must stop.

A grammar that keeps a schema's ``pattern`` or ``format`` lets the model write the
string for as long as it likes: ``^\\d+(\\.\\d+)?x$`` accepts a thousand digits, and
xgrammar's ``uri``, ``email``, ``hostname`` and ``date-time`` (fractional seconds)
are unbounded too. xgrammar cannot combine a pattern with ``maxLength`` (vLLM
refuses the schema), so the bound has to be in the regex itself. On the CPU build
the bundled 135M model measurably did not close such strings (issue 16: the
corpus answers that stayed invalid ran to ``max_tokens`` inside one).

- :func:`bound_repetition` rewrites the unbounded quantifiers of a pattern
  (``*``, ``+``, ``{n,}``, and ``{n,m}`` past the budget) into bounded ones, so the
  repeated parts of a string share about ``budget`` characters;
- :data:`FORMAT_PATTERNS` are bounded regexes for the formats xgrammar builds
  unbounded grammars for. Each accepts a subset of its format.

Both only restrict: every string they accept is accepted by the original pattern
or format. They shape the decoding schema only; the full schema validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A repeated group (``(\.\d+)*``) repeats at most this often in the decoding pattern: its
# inner repetitions multiply with it.
GROUP_REPEAT = 3

_DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
_HOUR_MINUTE = r"([01][0-9]|2[0-3]):[0-5][0-9]"
_TIME = rf"{_HOUR_MINUTE}:[0-5][0-9](\.[0-9]{{1,3}})?(Z|[+-]{_HOUR_MINUTE})"
_LABEL = r"[a-z0-9]{1,20}"
_HOST = rf"{_LABEL}(\.{_LABEL}){{0,3}}\.[a-z]{{2,6}}"
_SEGMENT = r"[A-Za-z0-9._~-]{1,20}"
_POINTER = r"(/[A-Za-z0-9_.-]{1,20}){0,4}"

# format -> a bounded regex whose strings all satisfy the format: years 1900-2099 and
# days up to 28, so that every date exists; [0-9], as Python reads \d as any Unicode
# digit. Formats xgrammar already bounds (uuid, ipv4, ipv6) keep the backend's grammar.
FORMAT_PATTERNS: dict[str, str] = {
    "date": rf"^{_DATE}$",
    "time": rf"^{_TIME}$",
    "date-time": rf"^{_DATE}T{_TIME}$",
    "duration": r"^P([0-9]{1,4}[YMWD]|T[0-9]{1,4}[HMS]|[0-9]{1,4}DT[0-9]{1,2}H)$",
    "email": rf"^{_LABEL}(\.{_LABEL}){{0,2}}@{_HOST}$",
    "hostname": rf"^{_LABEL}(\.{_LABEL}){{0,3}}$",
    "uri": rf"^https?://{_HOST}(/{_SEGMENT}){{0,4}}$",
    "uri-reference": rf"^(https?://{_HOST})?(/{_SEGMENT}){{0,4}}$",
    "uri-template": rf"^https?://{_HOST}(/({_SEGMENT}|\{{[a-z_]{{1,20}}\}})){{0,4}}$",
    "json-pointer": rf"^{_POINTER}$",
    "relative-json-pointer": rf"^(0|[1-9][0-9]{{0,2}})(#|{_POINTER})$",
}

_BRACES = re.compile(r"\{(\d+)(,(\d*))?\}")


@dataclass(frozen=True)
class _Quantifier:
    start: int
    end: int
    low: int
    high: int | None  # None: unbounded
    after_group: bool


def _skip_class(pattern: str, i: int) -> int:
    """The index just past the character class that starts at ``pattern[i] == '['``."""
    i += 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":  # a literal ] first in the class
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def quantifiers(pattern: str) -> list[_Quantifier]:
    """The greedy or lazy quantifiers of ``pattern`` outside character classes, in order.

    A ``?`` after ``(`` is group syntax and a ``{`` that is no ``{n}``/``{n,}``/``{n,m}``
    is a literal, as in Python's ``re``.
    """
    found: list[_Quantifier] = []
    previous = "start"  # start, atom, group, quantifier, open
    i = 0
    while i < len(pattern):
        char = pattern[i]
        quantifiable = previous in ("atom", "group")
        if char == "\\":
            i, previous = i + 2, "atom"
        elif char == "[":
            i, previous = _skip_class(pattern, i), "atom"
        elif char in "*+" and quantifiable:
            found.append(_Quantifier(i, i + 1, int(char == "+"), None, previous == "group"))
            i, previous = i + 1, "quantifier"
        elif char == "?":
            i, previous = i + 1, "quantifier" if quantifiable else previous
        elif char == "{" and quantifiable and (braces := _BRACES.match(pattern, i)):
            low = int(braces[1])
            high = low if braces[2] is None else (int(braces[3]) if braces[3] else None)
            found.append(_Quantifier(i, braces.end(), low, high, previous == "group"))
            i, previous = braces.end(), "quantifier"
        elif char in "(|":
            i, previous = i + 1, "open"
        elif char == ")":
            i, previous = i + 1, "group"
        else:
            i, previous = i + 1, "atom"
    return found


def bound_repetition(pattern: str, budget: int) -> str:
    """``pattern`` with its unbounded (or over-``budget``) quantifiers bounded.

    The repeated parts share ``budget``: with two unbounded quantifiers each repeats
    at most ``budget // 2`` times; a repeated group at most :data:`GROUP_REPEAT`
    times. A quantifier's lower bound is kept. The result accepts a subset of what
    ``pattern`` accepts; ``pattern`` itself when nothing needs bounding or the
    rewrite does not compile.
    """
    wide = [q for q in quantifiers(pattern) if q.high is None or q.high > budget]
    if not wide:
        return pattern
    share = max(1, budget // len(wide))
    out, last = [], 0
    for q in wide:
        bound = max(q.low, min(share, GROUP_REPEAT) if q.after_group else share)
        if q.high is not None:
            bound = min(bound, q.high)
        out.append(pattern[last : q.start])
        out.append(f"{{{q.low}}}" if bound == q.low else f"{{{q.low},{bound}}}")
        last = q.end
    out.append(pattern[last:])
    bounded = "".join(out)
    try:
        re.compile(bounded)
    except re.error:
        return pattern
    return bounded
