"""Judging one answer and the feedback a retry gets (no engine, no template files)."""

from __future__ import annotations

import json
from typing import Any

from structsum.processors.attempts import (
    ELLIPSIS,
    Judgement,
    best_judgement,
    judge,
    retry_feedback,
    shorten,
)
from structsum.processors.engine import GenerationOutput

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 3}},
    "required": ["title"],
}


def output(text: str, finish: str = "stop") -> GenerationOutput:
    return GenerationOutput(
        text=text,
        prompt_tokens=10,
        completion_tokens=len(text.split()),
        finish_reason=finish,
        elapsed_s=0.01,
    )


def test_a_valid_answer_is_judged_valid() -> None:
    judgement = judge(output('{"title": "Release"}'), SCHEMA, guided=True)
    assert judgement.valid
    assert judgement.data == {"title": "Release"}


def test_full_schema_errors_make_an_answer_invalid() -> None:
    judgement = judge(output('{"title": "x"}'), SCHEMA, guided=True)
    assert not judgement.valid
    assert judgement.data == {"title": "x"}
    assert any("title" in error for error in judgement.errors)


def test_a_truncated_answer_is_never_valid_even_when_it_validates() -> None:
    judgement = judge(output('{"title": "Release"}', "length"), SCHEMA, guided=True)
    assert not judgement.valid
    assert judgement.errors[0].startswith("output was cut at max_tokens")


def test_a_raw_newline_inside_a_string_is_read_as_the_newline_it_means() -> None:
    # llguidance's JSON grammar admits control characters inside strings; the value
    # is the same as with the escape, and the result holds data, not this raw text.
    judgement = judge(output('{"title": "Release\nplan"}'), SCHEMA, guided=True)
    assert judgement.valid
    assert judgement.data == {"title": "Release\nplan"}
    assert json.loads(json.dumps(judgement.data)) == judgement.data


def test_unparsable_and_non_object_answers_carry_no_data() -> None:
    cut = judge(output('{"title": "Rel', "length"), SCHEMA, guided=True)
    assert cut.data is None and "cut at max_tokens" in cut.errors[0]
    prose = judge(output("no json here"), SCHEMA, guided=True)
    assert prose.data is None and "not JSON" in prose.errors[0]
    listed = judge(output("[1, 2]"), SCHEMA, guided=True)
    assert listed.data is None and "not an object" in listed.errors[0]


def test_an_unguided_answer_may_wrap_its_object_in_prose() -> None:
    text = 'Sure:\n```json\n{"title": "Release"}\n```'
    assert judge(output(text), SCHEMA, guided=False).valid
    assert not judge(output(text), SCHEMA, guided=True).valid


def test_best_is_the_valid_answer_else_the_parsed_one_with_fewest_errors() -> None:
    unparsed = Judgement(None, ["not JSON"])
    two = Judgement({"a": 1}, ["e1", "e2"])
    one = Judgement({"b": 2}, ["e1"])
    valid = Judgement({"c": 3}, [])
    assert best_judgement([unparsed, two, valid, one]) is valid
    assert best_judgement([unparsed, two, one]) is one
    assert best_judgement([unparsed, Judgement(None, ["last"])]).errors == ["last"]


def test_shorten_cuts_only_what_is_over_the_limit() -> None:
    assert shorten("abcdef", 6) == "abcdef"
    assert shorten("abcdefg", 6) == "abcdef" + ELLIPSIS


def test_retry_feedback_shows_the_rejected_answer_and_its_errors() -> None:
    answer = json.dumps({"title": "x", "points": ["a" * 50]})
    message = retry_feedback(answer, [f"error {i}" for i in range(8)], answer_chars=20)
    assert message["role"] == "user"
    content = message["content"]
    assert "rejected" in content
    assert answer[:20] + ELLIPSIS in content
    assert answer[:21] not in content
    assert "error 0; error 1" in content and "error 4" in content
    assert "error 5" not in content  # only the first five errors are shown
