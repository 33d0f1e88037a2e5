"""Bounded patterns, formats and numbers in the CPU default's decoding schema (issue 16).

The bundled model ran to ``max_tokens`` inside strings that kept a ``pattern`` or a
``format``: the grammar enforced the pattern but let the string grow forever. Each
bound here only restricts: what the decoder can write still satisfies the full schema.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from structsum.processors.bounded_regex import FORMAT_PATTERNS, bound_repetition, quantifiers
from structsum.processors.drafts import declared_draft, normalise
from structsum.processors.policy import default_policy
from structsum.processors.schema_walk import walk
from structsum.processors.simplify import (
    bound_free_json,
    bound_numbers,
    bound_patterns,
    format_patterns,
    simplify_schema,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "schema_corpus"


@pytest.mark.parametrize(
    "pattern, bounded",
    [
        (r"^\d+(\.\d+)?x$", r"^\d{1,30}(\.\d{1,30})?x$"),  # drupal-breakpoints
        (r"^[^ ]*$", r"^[^ ]{0,60}$"),
        (r"^(?:[a-z]+)(?:-[a-z]+)*$", r"^(?:[a-z]{1,20})(?:-[a-z]{1,20}){0,3}$"),
        (r"a{2,}", r"a{2,60}"),
        (r"[a-z]{1,100}", r"[a-z]{1,60}"),
        (r"[+*]+?", r"[+*]{1,60}?"),  # quantifier characters in a class stay literal
        (r"\{.*\}", r"\{.{0,60}\}"),  # escaped braces are no quantifier
        (r"^x{3}[a-z]{2,5}$", r"^x{3}[a-z]{2,5}$"),  # bounded already
        (r"[]a]+", r"[]a]{1,60}"),
    ],
)
def test_bound_repetition_rewrites_only_unbounded_quantifiers(pattern: str, bounded: str) -> None:
    assert bound_repetition(pattern, 60) == bounded
    assert bound_repetition(bounded, 60) == bounded  # idempotent


def test_a_lower_bound_above_the_share_is_kept() -> None:
    assert bound_repetition(r"a{50,}b+", 60) == r"a{50}b{1,30}"
    assert quantifiers(r"(?:ab)+")[0].after_group


PATTERNS = [r"^\d+(\.\d+)?x$", r"^[a-z_][a-z0-9_]*$", r"^(\d+\.)?(\d+\.)?(\d+)$", r"^v\d+-.*$"]


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), pattern=st.sampled_from(PATTERNS))
def test_what_a_bounded_pattern_accepts_the_original_accepts(data: Any, pattern: str) -> None:
    bounded = bound_repetition(pattern, 60)
    text = data.draw(st.from_regex(bounded, fullmatch=True))
    assert re.search(pattern, text)
    assert len(text) <= 70


@pytest.mark.parametrize("fmt", sorted(FORMAT_PATTERNS))
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_format_patterns_produce_strings_of_their_format(fmt: str, data: Any) -> None:
    text = data.draw(st.from_regex(FORMAT_PATTERNS[fmt], fullmatch=True))
    assert len(text) <= 200
    checker = Draft202012Validator.FORMAT_CHECKER
    assert checker.conforms(text, fmt)  # the formats jsonschema checks here
    if fmt == "date":
        datetime.date.fromisoformat(text)
    if fmt == "date-time":
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if fmt == "uri":
        parts = urlsplit(text)
        assert parts.scheme in ("http", "https") and parts.netloc


def test_format_strings_decode_by_a_bounded_pattern() -> None:
    schema = {
        "type": "object",
        "properties": {
            "u": {"type": "string", "format": "uri"},
            "p": {"type": "string", "format": "date", "pattern": "^2024-"},
            "x": {"type": "string", "format": "uuid"},
        },
    }
    out, changes = format_patterns(schema)
    assert out["properties"]["u"] == {"type": "string", "pattern": FORMAT_PATTERNS["uri"]}
    assert out["properties"]["p"] == {"type": "string", "pattern": "^2024-"}
    assert out["properties"]["x"]["format"] == "uuid"  # xgrammar bounds it already
    assert [c.restrictive for c in changes] == [True, False]
    assert schema["properties"]["u"]["format"] == "uri"  # the input is not modified


def test_pattern_strings_and_pattern_property_names_are_bounded() -> None:
    schema = {
        "type": "object",
        "properties": {
            "v": {"type": "string", "pattern": r"^\d+$", "maxLength": 8},
            "w": {"type": "string", "pattern": r"^\d+$", "minLength": 100},
            "envs": {
                "type": "object",
                "patternProperties": {"^[A-Z_][A-Z0-9_]*$": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    }
    out, changes = bound_patterns(schema, 60)
    assert out["properties"]["v"]["pattern"] == r"^\d{1,8}$"  # the string's own maxLength
    assert out["properties"]["w"]["pattern"] == r"^\d+$"  # minLength above the budget
    assert list(out["properties"]["envs"]["patternProperties"]) == ["^[A-Z_][A-Z0-9_]{0,60}$"]
    assert all(c.restrictive for c in changes)
    # ... and such a map gets a bounded count of keys like any other map.
    bounded, _ = bound_free_json(out, 3, 60)
    assert bounded["properties"]["envs"]["maxProperties"] == 3


def test_numbers_get_the_bounds_they_lack() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "m": {"type": "number", "minimum": 5},
            "k": {"type": "integer", "exclusiveMaximum": -3},
            "e": {"type": "integer", "enum": [1, 2]},
        },
    }
    out, changes = bound_numbers(schema, 1000)
    props = out["properties"]
    assert (props["n"]["minimum"], props["n"]["maximum"]) == (-1000, 1000)
    assert (props["m"]["minimum"], props["m"]["maximum"]) == (5, 1005)
    assert (props["k"]["minimum"], props["k"]["exclusiveMaximum"]) == (-1003, -3)
    assert "minimum" not in props["e"]
    assert len(changes) == 4 and all(c.restrictive for c in changes)


def _good_corpus() -> list[tuple[str, dict[str, Any]]]:
    manifest = json.loads((CORPUS / "sources.json").read_text(encoding="utf-8"))
    return [
        (item["file"], json.loads((CORPUS / item["file"]).read_text(encoding="utf-8")))
        for item in manifest["schemas"]
        if item["expect"] == "load"
    ]


def _unbounded(schema: dict[str, Any]) -> list[str]:
    """Where a CPU decoding schema still lets a string or number grow without end."""
    found = []
    for location, node in walk(schema):
        types = node.get("type")
        types = {types} if isinstance(types, str) else set(types or [])
        if "enum" in node or "const" in node:
            continue
        if "string" in types and "maxLength" not in node:
            pattern = node.get("pattern")
            if not isinstance(pattern, str) and node.get("format") not in ("uuid", "ipv4", "ipv6"):
                found.append(f"{location}: free string")
            elif isinstance(pattern, str) and any(q.high is None for q in quantifiers(pattern)):
                found.append(f"{location}: pattern {pattern!r}")
        if types & {"integer", "number"} and not (
            {"minimum", "exclusiveMinimum"} & set(node)
            and {"maximum", "exclusiveMaximum"} & set(node)
        ):
            found.append(f"{location}: number")
    return found


def test_no_string_or_number_of_the_corpus_decodes_unbounded_on_the_cpu_default() -> None:
    policy = default_policy("cpu").simplify
    problems = {}
    for name, schema in _good_corpus():
        decoding = simplify_schema(normalise(schema, declared_draft(schema))[0], policy).schema
        assert decoding is not None
        if found := _unbounded(decoding):
            problems[name] = found[:3]
    assert problems == {}


def test_the_corpus_decoding_schemas_pass_vllms_xgrammar_checks() -> None:
    xgrammar = pytest.importorskip("xgrammar")
    backend = pytest.importorskip("vllm.v1.structured_output.backend_xgrammar")
    policy = default_policy("cpu").simplify
    for name, schema in _good_corpus():
        decoding = simplify_schema(normalise(schema, declared_draft(schema))[0], policy).schema
        assert not backend.has_xgrammar_unsupported_json_features(decoding), name
        xgrammar.Grammar.from_json_schema(json.dumps(decoding))


def test_the_corpus_decoding_schemas_build_with_llguidance() -> None:
    """The GPU profile's backend: on an H100, propertyNames (from the map bound),
    unevaluatedProperties and min/maxProperties beside optional properties made
    llguidance refuse 30 of the 53 good schemas before the decoding schema avoided them."""
    llguidance = pytest.importorskip("llguidance")
    matcher = llguidance.LLMatcher
    policy = default_policy("gpu").simplify
    refused = {}
    for name, schema in _good_corpus():
        decoding = simplify_schema(normalise(schema, declared_draft(schema))[0], policy).schema
        failed, messages = matcher.validate_grammar_with_warnings(
            matcher.grammar_from_json_schema(decoding)
        )
        if failed:
            refused[name] = messages
    assert refused == {}
