"""Refuse template ``pattern``s that can backtrack catastrophically (ReDoS, CWE-1333).

Python's ``re`` backtracks and holds the GIL while it matches, so one pattern such
as ``^(a+)+$`` checked against a steered model output freezes the whole worker:
every job thread, the Celery consumer and the health endpoint. Length does not
bound that, structure does. The check walks ``re``'s own parse tree and refuses:

- a repetition nested inside an unbounded repetition (``(a+)+``, ``(a*b?)*``),
  unless a possessive quantifier or an atomic group stops backtracking inside;
- an alternation inside an unbounded repetition whose branches can start with the
  same character, or one of which can match the empty string (``(a|a)*``,
  ``(a|aa)*``, ``(\\w|\\d+)*``);
- backreferences (matching them is NP-hard in general);
- patterns longer than ``max_chars``, and patterns ``re`` cannot compile.

It is conservative: some safe patterns are refused (``([a-z]+ )*``); their
possessive or atomic rewrite (``([a-z]++ )*``) passes. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# re's own parser (private, stable since 3.11; sre_parse before): the tree ``re``
# will actually run, so nothing is lost to a second regex grammar.
from re import _constants as _c  # type: ignore[attr-defined, unused-ignore]
from re import _parser as _sre  # type: ignore[attr-defined, unused-ignore]
from typing import Any

from structsum.errors import PatternUnsafe

DEFAULT_MAX_PATTERN_CHARS = 256

# First-character sets: a frozenset of code points, or ANY_CHAR for "too many to list".
ANY_CHAR = None
FirstSet = frozenset[int] | None
_BARRIERS = {_c.POSSESSIVE_REPEAT, _c.ATOMIC_GROUP}
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT}
# A class wider than this many code points is treated as "any character".
_WIDE_RANGE = 256
# An outer repetition with more iterations than this counts as unbounded: nested inside
# it, a repetition's ways to split the input grow like (length ** bound).
_SMALL_REPEAT = 10


def check_pattern(pattern: str, *, max_chars: int = DEFAULT_MAX_PATTERN_CHARS) -> None:
    """Raise ``PatternUnsafe`` unless matching ``pattern`` is safe from exponential backtracking."""
    if len(pattern) > max_chars:
        raise PatternUnsafe(
            f"pattern has {len(pattern)} characters, over the bound: the limit is {max_chars}",
            {"pattern": pattern[:80], "limit": max_chars},
        )
    try:
        tree = _sre.parse(pattern)
    except re.error as exc:
        raise PatternUnsafe(f"pattern does not compile: {exc}", {"pattern": pattern}) from exc
    problem = _find_problem(list(tree), inside_unbounded=False)
    if problem:
        raise PatternUnsafe(f"pattern {pattern!r} {problem}", {"pattern": pattern})


def is_safe_pattern(pattern: str, *, max_chars: int = DEFAULT_MAX_PATTERN_CHARS) -> bool:
    try:
        check_pattern(pattern, max_chars=max_chars)
    except PatternUnsafe:
        return False
    return True


def _find_problem(
    items: list[Any], *, inside_unbounded: bool, separator: FirstSet = ANY_CHAR
) -> str | None:
    """The first unsafe construct in a parsed sequence, described, or None.

    ``separator``: the character(s) every iteration of the enclosing unbounded
    repetition starts with (``-`` in ``(?:-[a-z]{1,8})*``). A repetition nested
    inside that cannot match the separator cannot split an iteration in two, so
    it is safe; without a separator (``(a+)+``) it is not.
    """
    for op, arg in items:
        if op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            return "uses a backreference"
        if op in _BARRIERS:
            continue  # nothing inside can be backtracked into
        if op in _REPEATS:
            high, body = arg[1], list(arg[2])
            if inside_unbounded and high > 1 and _overlap(separator, _chars(body)):
                return "nests a repetition inside an unbounded repetition"
            if high == _c.MAXREPEAT or high > _SMALL_REPEAT:
                found = _find_problem(body, inside_unbounded=True, separator=_leading(body))
            else:
                found = _find_problem(body, inside_unbounded=inside_unbounded, separator=separator)
        elif op == _c.BRANCH:
            branches = [list(b) for b in arg[1]]
            if inside_unbounded and _ambiguous(branches):
                return "repeats an alternation whose branches can match the same text"
            found = None
            for branch in branches:
                found = found or _find_problem(
                    branch, inside_unbounded=inside_unbounded, separator=separator
                )
        elif op in (_c.SUBPATTERN, _c.ASSERT, _c.ASSERT_NOT):
            found = _find_problem(
                list(arg[-1]), inside_unbounded=inside_unbounded, separator=separator
            )
        else:
            found = None
        if found:
            return found
    return None


def _leading(body: list[Any]) -> FirstSet:
    """The characters a repeated body must start with, if it starts with one plain character."""
    while body and body[0][0] == _c.SUBPATTERN:
        body = list(body[0][1][-1])
    if not body:
        return ANY_CHAR
    op, arg = body[0]
    if op == _c.LITERAL:
        return frozenset({arg})
    if op == _c.IN:
        return _class_first(arg)
    return ANY_CHAR


def _chars(items: Iterable[Any]) -> FirstSet:
    """Every character a parsed sequence can match anywhere (ANY_CHAR when too many)."""
    found: FirstSet = frozenset()
    for op, arg in items:
        if op == _c.LITERAL:
            part: FirstSet = frozenset({arg})
        elif op == _c.IN:
            part = _class_first(arg)
        elif op in _REPEATS:
            part = _chars(arg[2])
        elif op in (_c.SUBPATTERN, _c.ATOMIC_GROUP):
            part = _chars(arg[-1] if op == _c.SUBPATTERN else arg)
        elif op == _c.BRANCH:
            part = frozenset()
            for branch in arg[1]:
                part = _union(part, _chars(branch))
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            part = frozenset()
        else:
            part = ANY_CHAR
        found = _union(found, part)
    return found


def _ambiguous(branches: list[list[Any]]) -> bool:
    """Branches whose first characters overlap, or one that can match empty beside others.

    ``re`` factors common prefixes out (``(a|aa)*`` becomes ``a(?:|a)*``), so an
    empty branch stands for "whatever follows", which may be the next iteration:
    treated as overlapping everything.
    """
    firsts = [_first(b) for b in branches]
    if len(branches) > 1 and any(nullable for _, nullable in firsts):
        return True
    seen: list[FirstSet] = []
    for first, _ in firsts:
        if any(_overlap(first, other) for other in seen):
            return True
        seen.append(first)
    return False


def _overlap(a: FirstSet, b: FirstSet) -> bool:
    if a is ANY_CHAR:
        return b is ANY_CHAR or bool(b)
    if b is ANY_CHAR:
        return bool(a)
    return bool(a & b)


def _union(a: FirstSet, b: FirstSet) -> FirstSet:
    return ANY_CHAR if a is ANY_CHAR or b is ANY_CHAR else a | b


def _first(items: Iterable[Any]) -> tuple[FirstSet, bool]:
    """The characters a sequence can start with, and whether it can match empty."""
    first: FirstSet = frozenset()
    for op, arg in items:
        item, nullable = _first_of(op, arg)
        first = _union(first, item)
        if not nullable:
            return first, False
    return first, True


def _first_of(op: Any, arg: Any) -> tuple[FirstSet, bool]:
    if op == _c.LITERAL:
        return frozenset({arg}), False
    if op == _c.IN:
        return _class_first(arg), False
    if op in (_c.NOT_LITERAL, _c.ANY, _c.CATEGORY):
        return ANY_CHAR, False
    if op in _REPEATS:
        first, nullable = _first(arg[2])
        return first, nullable or arg[0] == 0
    if op == _c.SUBPATTERN:
        return _first(arg[-1])
    if op == _c.ATOMIC_GROUP:
        return _first(arg)
    if op == _c.BRANCH:
        result: FirstSet = frozenset()
        any_nullable = False
        for branch in arg[1]:
            first, nullable = _first(branch)
            result, any_nullable = _union(result, first), any_nullable or nullable
        return result, any_nullable
    return frozenset(), True  # anchors and lookarounds consume nothing


def _class_first(items: list[Any]) -> FirstSet:
    chars: set[int] = set()
    for op, arg in items:
        if op == _c.LITERAL:
            chars.add(arg)
        elif op == _c.RANGE and arg[1] - arg[0] < _WIDE_RANGE:
            chars.update(range(arg[0], arg[1] + 1))
        else:  # NEGATE, CATEGORY, wide ranges
            return ANY_CHAR
    return frozenset(chars)
