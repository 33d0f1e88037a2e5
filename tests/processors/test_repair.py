"""Meaning-preserving repairs before validation (no engine)."""

from __future__ import annotations

from typing import Any

from structsum.processors.attempts import judge
from structsum.processors.engine import GenerationOutput
from structsum.processors.repair import drop_duplicate_items

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "attendees": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "notes": {"type": "array", "items": {"type": "string"}},
        "groups": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
    },
}


def test_repeats_go_where_the_schema_says_unique_and_only_there() -> None:
    data = {
        "attendees": ["Lena", "Jonas", "Lena"],
        "notes": ["same", "same"],
        "groups": [["a", "a", "b"], ["c"]],
    }
    repaired, changes = drop_duplicate_items(data, SCHEMA)
    assert repaired == {
        "attendees": ["Lena", "Jonas"],
        "notes": ["same", "same"],
        "groups": [["a", "b"], ["c"]],
    }
    assert changes == [
        "dropped 1 repeated item(s) at $.attendees",
        "dropped 1 repeated item(s) at $.groups[0]",
    ]
    assert data["attendees"] == ["Lena", "Jonas", "Lena"]  # the input is not modified


def test_objects_compare_by_value_whatever_their_key_order() -> None:
    schema = {"type": "array", "uniqueItems": True}
    repaired, changes = drop_duplicate_items([{"a": 1, "b": 2}, {"b": 2, "a": 1}], schema)
    assert repaired == [{"a": 1, "b": 2}] and len(changes) == 1


def output(text: str) -> GenerationOutput:
    return GenerationOutput(
        text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop", elapsed_s=0.0
    )


def test_judge_repairs_only_when_the_policy_allows() -> None:
    answer = output('{"attendees": ["Lena", "Lena"]}')
    strict = judge(answer, SCHEMA, guided=True)
    assert not strict.valid and "non-unique" in strict.errors[0]
    repaired = judge(answer, SCHEMA, guided=True, repair_unique_items=True)
    assert repaired.valid
    assert repaired.data == {"attendees": ["Lena"]}
    assert repaired.repairs == ["dropped 1 repeated item(s) at $.attendees"]
