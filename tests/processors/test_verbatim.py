"""Verbatim fields: marks, the substring check, the per-request enum and the retry on a miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from structsum.config import GroundingSettings, Settings
from structsum.errors import SchemaInvalid, TemplateInvalid
from structsum.models import SummaryRequest
from structsum.processors.policy import Policy, SimplifyPolicy
from structsum.processors.simplify import inline_refs, simplify_schema
from structsum.processors.summary import summarize
from structsum.processors.templates import load_template
from structsum.processors.verbatim import (
    ANNOTATION,
    is_verbatim,
    mark,
    request_guide,
    sentences,
    verbatim_errors,
)
from tests.fakes import FakeEngine

MARK = {ANNOTATION: {"verbatim": True}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"quote": {"type": "string", "minLength": 5, "maxLength": 60, **MARK}},
    "properties": {
        "title": {"type": "string"},
        "quotes": {"type": "array", "items": {"$ref": "#/$defs/quote"}},
        "points": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "quotes", "points"],
    "additionalProperties": False,
}
SOURCE = (
    'Ravi: I\'ll send the "Billing" screenshots today.\n'
    "Sofia:   the   café   banner is ready\ttomorrow. Legal asked about a C:\\temp path? "
    "Yes. " + "This sentence is far too long to be one option, so it is split at its commas, "
    "and each clause stays a piece of the text."
)
GROUNDING = GroundingSettings(max_options=10, max_option_chars=60, min_option_chars=8)


# --- the check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "the café banner is ready tomorrow.",  # runs of spaces and a tab in the source
        "the cafe\u0301 banner",  # decomposed é (NFD) matches the composed one
        'send the "Billing" screenshots',  # quotes, as JSON decoding gives them
        "a C:\\temp path?",  # a backslash, as JSON decoding gives it
        "  Ravi: I'll send\n the",  # a line break and the ends of the value
    ],
)
def test_copied_values_pass(value: str) -> None:
    assert is_verbatim(value, SOURCE)


@pytest.mark.parametrize(
    "value",
    [
        "the cafe banner",  # accent dropped: not the source's words
        'send the \\"Billing\\" screenshots',  # still JSON-escaped: not what the text says
        "The café banner",  # case differs
        "banner is ready on Friday",  # invented ending
        "   ",  # empty after normalisation
    ],
)
def test_other_values_fail(value: str) -> None:
    assert not is_verbatim(value, SOURCE)


def test_errors_name_each_invalid_value_by_location() -> None:
    template_schema = mark(SCHEMA, ["/properties/points/items"])
    inlined = simplify_schema(template_schema, SimplifyPolicy(drop_keywords=[]))
    assert inlined.verbatim_paths  # both the $defs quote and the pointer
    data = {
        "title": "Anything goes here",
        "quotes": ["the café banner is ready", "an invented quote"],
        "points": ["Legal asked about a C:\\temp path?"],
    }
    errors, checked = verbatim_errors(data, inline_refs(template_schema)[0], SOURCE)
    assert checked == 3
    assert errors == ["$.quotes[1]: 'an invented quote' is not copied word for word from the text"]


# --- marks and the decoding schema -------------------------------------------------------


def test_annotation_never_reaches_the_decoding_schema() -> None:
    decoding = simplify_schema(SCHEMA, SimplifyPolicy())
    assert ANNOTATION not in json.dumps(decoding.schema)
    assert decoding.verbatim_paths == (("properties", "quotes", "items"),)
    assert "removed x-structsum at $.properties.quotes.items" in decoding.changes


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("/properties/nope", "names nothing"),
        ("/properties/quotes", "string schema"),
        ("properties/title", "JSON pointer"),
    ],
)
def test_a_bad_pointer_fails_loudly(pointer: str, message: str) -> None:
    with pytest.raises(SchemaInvalid, match=message):
        mark(SCHEMA, [pointer])


def test_sentences_are_normalised_bounded_pieces_of_the_source() -> None:
    pieces = sentences(SOURCE, min_chars=8, max_chars=60)
    assert "the café banner is ready tomorrow." in " ".join(pieces).replace("Sofia: ", "")
    assert "Yes." not in pieces  # under min_chars
    assert all(8 <= len(p) <= 60 and is_verbatim(p, SOURCE) for p in pieces)
    assert "and each clause stays a piece of the text." in pieces  # a clause of a long one


def test_guidance_keeps_the_templates_own_guide() -> None:
    """llguidance breaks on the enums (measured on a GPU): there the check alone holds."""
    decoding = simplify_schema(SCHEMA, SimplifyPolicy())
    assert request_guide(decoding, SOURCE, GROUNDING, "guidance") == decoding.guide
    xgrammar = request_guide(decoding, SOURCE, GROUNDING, "xgrammar")
    assert xgrammar is not None and xgrammar != decoding.guide


def test_the_guide_of_a_request_makes_verbatim_fields_enums_of_its_sentences() -> None:
    decoding = simplify_schema(SCHEMA, SimplifyPolicy())
    guide = request_guide(decoding, SOURCE, GROUNDING)
    assert guide is not None and guide.kind == "json" and isinstance(guide.value, dict)
    quote = guide.value["properties"]["quotes"]["items"]
    expected = [p for p in sentences(SOURCE, min_chars=8, max_chars=60) if 5 <= len(p) <= 60]
    assert quote == {"type": "string", "enum": expected}
    # The enum is JSON: a quote and a backslash of the text survive a round trip exactly.
    assert json.loads(json.dumps(guide.value)) == guide.value
    assert any('"Billing"' in option for option in quote["enum"])
    assert any("C:\\temp" in option for option in quote["enum"])
    # Other fields are untouched, and the template's own guide is unchanged.
    assert guide.value["properties"]["title"] == decoding.schema["properties"]["title"]  # type: ignore[index]
    assert decoding.guide is not None and decoding.guide.value == decoding.schema


def test_option_count_is_bounded_and_spread_over_the_text() -> None:
    text = " ".join(f"Sentence number {i} of the text." for i in range(100))
    decoding = simplify_schema(SCHEMA, SimplifyPolicy())
    guide = request_guide(decoding, text, GROUNDING)
    assert guide is not None and isinstance(guide.value, dict)
    options = guide.value["properties"]["quotes"]["items"]["enum"]
    assert len(options) == GROUNDING.max_options
    assert options[0] == "Sentence number 0 of the text." and "number 90 " in options[-1]


def test_a_text_of_short_pieces_still_offers_them() -> None:
    decoding = simplify_schema(SCHEMA, SimplifyPolicy(drop_keywords=[]))
    guide = request_guide(decoding, "Yes. Friday. Ok.", GROUNDING)
    assert guide is not None and isinstance(guide.value, dict)
    # Under min_option_chars, but within the quote's own minLength of 5.
    assert guide.value["properties"]["quotes"]["items"]["enum"] == ["Friday."]


def test_a_field_with_no_fitting_sentence_stays_free() -> None:
    decoding = simplify_schema(SCHEMA, SimplifyPolicy(drop_keywords=[]))
    guide = request_guide(decoding, "Yes. No. Ok.", GROUNDING)
    assert guide is not None and guide.value == decoding.schema


# --- policy, profiles, the pipeline ------------------------------------------------------


def test_profile_overrides_merge_over_the_policy() -> None:
    policy = Policy.model_validate(
        {
            "verbatim": ["/a"],
            "retry": {"attempts": 2},
            "profiles": {"cpu": {"verbatim": ["/b"], "example": False, "retry": {"attempts": 4}}},
        }
    )
    cpu = policy.for_profile("cpu")
    assert (cpu.verbatim, cpu.example, cpu.retry.attempts) == (["/b"], False, 4)
    assert cpu.retry.temperatures == policy.retry.temperatures  # tables merge key by key
    gpu = policy.for_profile("gpu")
    assert (gpu.verbatim, gpu.example, gpu.retry.attempts) == (["/a"], True, 2)
    assert cpu.for_profile("cpu") == cpu


def test_a_typo_in_a_profile_fails_at_load(tmp_path: Path) -> None:
    folder = _template(tmp_path, '[profiles.cpu]\nverbatm = ["/properties/title"]\n')
    with pytest.raises(TemplateInvalid, match=r"profiles\.cpu: unknown key 'verbatm'"):
        load_template(folder.parent, folder.name)


def _template(root: Path, policy: str) -> Path:
    folder = root / "t1"
    folder.mkdir()
    schema = {k: v for k, v in SCHEMA.items() if k != "$defs"}
    schema["properties"] = {
        **SCHEMA["properties"],
        "quotes": {"type": "array", "items": {"type": "string", **MARK}},
    }
    (folder / "schema.json").write_text(json.dumps(schema))
    (folder / "example.json").write_text(
        json.dumps({"title": "Example", "quotes": ["An example quote."], "points": ["p"]})
    )
    (folder / "prompt.jinja").write_text(
        "{% if example %}Like {{ example }}.{% endif %}\n{{ text }}"
    )
    (folder / "policy.toml").write_text(policy)
    return folder


def test_a_quote_not_in_the_text_is_retried_and_the_copied_one_kept(tmp_path: Path) -> None:
    _template(tmp_path, "[retry]\nattempts = 2\n[profiles.cpu]\nexample = false\n")
    answers = iter(
        [
            {"title": "Banner", "quotes": ["The banner is ready."], "points": []},
            {"title": "Banner", "quotes": ["the   café banner is ready"], "points": []},
        ]
    )
    engine = FakeEngine(lambda request: (json.dumps(next(answers)), "stop"))
    settings = Settings(templates_dir=tmp_path, profile="cpu", grounding=GROUNDING)
    result = summarize(
        SummaryRequest(text=SOURCE, template_id="t1"), engine=engine, settings=settings
    )
    assert result.valid and len(result.attempts) == 2
    assert "is not copied word for word" in result.attempts[0].errors[0]
    assert result.grounding is not None
    assert (result.grounding.verbatim_fields, result.grounding.verbatim_copied) == (1, 1)
    # The decode was constrained to the text, and the CPU profile left the example out.
    first = engine.requests[0]
    assert first.guide is not None and isinstance(first.guide.value, dict)
    options = first.guide.value["properties"]["quotes"]["items"]["enum"]
    assert "Sofia: the café banner is ready tomorrow." in options
    assert "Like" not in first.messages[-1]["content"]
