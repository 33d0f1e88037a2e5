"""Template patterns that would freeze a worker (exponential backtracking) are refused."""

from __future__ import annotations

import pytest

from structsum.errors import PatternUnsafe, SchemaInvalid
from structsum.processors.regex_safety import check_pattern, is_safe_pattern


@pytest.mark.parametrize(
    "pattern",
    [
        r"^(a+)+$",
        r"^(a*)*$",
        r"(?:\w+\s?)*$",
        r"^(a|a)*$",
        r"^(a|aa)*$",
        r"^(\w|\d+)*x$",
        r"^(-[a-z-]+)*$",
        r"^([a-z]+)*$",
        r"^(.*a){20}$",
        r"(\w+)\1",
        r"^(x+x+)+y$",
    ],
)
def test_catastrophic_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternUnsafe) as info:
        check_pattern(pattern)
    assert isinstance(info.value, SchemaInvalid)  # callers that catch SchemaInvalid see it
    assert info.value.hint


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[a-z0-9][a-z0-9 -]{1,29}$",  # the shipped one
        r"^\d{4}-\d{2}-\d{2}$",
        r"^(\d{1,3}\.){3}\d{1,3}$",
        r"^[A-Z]{2,8}(?:-[A-Z0-9]{1,8})*$",
        r"^(ab|cd)*$",
        r"^(a++)+$",
        r"^(?:-[A-Z0-9]{1,8})*$",
        r"^(?:, [a-z]+)*$",
        r"^(?>a+)+$",
        r"^(?:low|medium|high)$",
        r"^\S+@\S+$",
    ],
)
def test_ordinary_patterns_pass(pattern: str) -> None:
    check_pattern(pattern)
    assert is_safe_pattern(pattern)


def test_length_is_bounded() -> None:
    with pytest.raises(PatternUnsafe, match="limit is 10"):
        check_pattern("a" * 11, max_chars=10)
    check_pattern("a" * 10, max_chars=10)


def test_a_pattern_re_cannot_compile_is_refused() -> None:
    with pytest.raises(PatternUnsafe, match="does not compile"):
        check_pattern("(unclosed")
