"""Prompts of a fixed length, schema variants and validity, with a fake tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from structsum.bench.workload import (
    BUILTIN_TEXT,
    fit_prompt,
    list_template_ids,
    load_corpus,
    schema_valid,
    schema_variants,
    system_prompt,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def chat_ids(messages: list[dict[str, str]]) -> list[int]:
    """One token per character, plus a fixed template around the messages."""
    text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
    return [ord(c) for c in text]


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def test_prompts_hit_the_target_length_and_differ_by_offset() -> None:
    source = [ord(c) for c in "abcdefghij" * 50]
    first = fit_prompt(
        chat_ids=chat_ids, decode=decode, source_ids=source, system="s", input_len=120, offset=0
    )
    second = fit_prompt(
        chat_ids=chat_ids, decode=decode, source_ids=source, system="s", input_len=120, offset=3
    )
    assert abs(len(first) - 120) <= 2
    assert first != second


def test_a_prompt_with_no_room_for_text_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        fit_prompt(
            chat_ids=chat_ids,
            decode=decode,
            source_ids=[97],
            system="s" * 50,
            input_len=40,
            offset=0,
        )


def test_corpus_falls_back_to_the_built_in_text(tmp_path: Path) -> None:
    texts, source = load_corpus([tmp_path / "missing"])
    assert texts == [BUILTIN_TEXT]
    assert "built-in" in source
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    assert load_corpus([tmp_path]) == (["hello"], str(tmp_path))


def test_variants_of_a_shipped_template() -> None:
    template_id = "generic_summary_v1"
    assert template_id in list_template_ids(SCHEMAS)
    variants, notes = schema_variants(SCHEMAS, [template_id], ["full", "simplified", "uncapped"])
    by_name = {v.name: v for v in variants}
    assert set(by_name) == {"full", "simplified", "uncapped"}, notes
    full = by_name["full"]
    assert full.guide_value == full.full_schema
    assert "maxLength" not in str(by_name["uncapped"].guide_value)
    assert all(v.full_schema == full.full_schema for v in variants)


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown schema variants"):
        schema_variants(SCHEMAS, ["generic_summary_v1"], ["tiny"])


def test_validity_is_the_full_schema_not_json_loads() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}},
        "required": ["a"],
    }
    validator = Draft202012Validator(schema)
    assert schema_valid('{"a": "abc"}', validator)
    assert not schema_valid('{"a": "abcd"}', validator)  # parses, but too long
    assert not schema_valid('{"a": "ab', validator)  # cut at max_tokens
    assert system_prompt(schema).endswith("keys: a.")
