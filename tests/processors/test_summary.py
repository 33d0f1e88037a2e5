"""Summary retry/validation logic with a scripted engine (no model)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from structsum.config import BudgetSettings, EngineSettings, Settings
from structsum.errors import OutputInvalid, TemplateNotFound, TextTooLong
from structsum.models import SummaryRequest
from structsum.processors.engine import GenerationRequest
from structsum.processors.summary import summarize, summarize_template
from structsum.processors.templates import load_template
from tests.fakes import FakeEngine

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 40},
        "points": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["title", "points"],
    "additionalProperties": False,
}
VALID = json.dumps({"title": "Release moves", "points": ["fix login", "post note"]})
INVALID = json.dumps({"title": "x", "points": []})  # title too short for the full schema
TRUNCATED = '{"title": "Release moves", "points": ["fix'


def make_template(root: Path, policy: str = "", template_id: str = "t1") -> Path:
    folder = root / template_id
    folder.mkdir(parents=True)
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    (folder / "example.json").write_text(VALID)
    (folder / "prompt.jinja").write_text("Summarize as JSON like {{ example }}.\nText:\n{{ text }}")
    (folder / "policy.toml").write_text(policy)
    return folder


def make_settings(root: Path, **budget: Any) -> Settings:
    return Settings(
        templates_dir=root,
        engine=EngineSettings(max_model_len=4096),
        budget=BudgetSettings(**budget),
    )


def request(text: str = "The team moved the release to Wednesday.") -> SummaryRequest:
    return SummaryRequest(text=text, template_id="t1")


RETRY_POLICY = """
[retry]
attempts = 3
temperatures = [0.7, 0.3, 0.0]
"""


def test_first_valid_answer_is_returned_after_one_attempt(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY)
    engine = FakeEngine([(VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert result.valid
    assert result.data == json.loads(VALID)
    assert result.errors == []
    assert [a.temperature for a in result.attempts] == [0.7]
    assert engine.requests[0].guide is not None and engine.requests[0].guide.kind == "json"
    assert result.usage.completion_tokens == result.attempts[0].usage.completion_tokens > 0
    assert len(result.schema_sha256) == 64
    assert result.model == "fake-model"


def test_invalid_answers_are_retried_at_the_policy_temperatures(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY)
    engine = FakeEngine([(INVALID, "stop"), (INVALID, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert result.valid
    assert result.temperatures == [0.7, 0.3, 0.0]
    assert [r.temperature for r in engine.requests] == [0.7, 0.3, 0.0]
    assert [a.valid for a in result.attempts] == [False, False, True]
    assert any("title" in e for e in result.attempts[0].errors)
    # usage is summed over every attempt
    assert result.usage.completion_tokens == sum(a.usage.completion_tokens for a in result.attempts)


def test_validation_errors_are_fed_back_into_the_retry_prompt(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + "feedback_errors = true\n")
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    summarize(request(), engine=engine, settings=make_settings(tmp_path))
    first, second = engine.requests
    assert len(second.messages) == len(first.messages) + 1
    assert "rejected" in second.messages[-1]["content"]
    assert "title" in second.messages[-1]["content"]
    assert INVALID in second.messages[-1]["content"]  # the rejected answer itself


def test_the_rejected_answer_is_shortened_to_the_configured_length(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + "feedback_errors = true\n")
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    settings = make_settings(tmp_path, feedback_answer_chars=8)
    summarize(request(), engine=engine, settings=settings)
    feedback = engine.requests[1].messages[-1]["content"]
    assert INVALID[:8] + "…" in feedback
    assert INVALID[:9] not in feedback


def test_no_feedback_when_the_policy_says_so(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + "feedback_errors = false\n")
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert engine.requests[0].messages == engine.requests[1].messages


def test_truncated_output_is_never_valid_and_gets_more_room(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + "truncation_growth = 2.0\n")
    complete_but_cut = VALID  # parses and validates, but the engine says it hit max_tokens
    engine = FakeEngine([(TRUNCATED, "length"), (complete_but_cut, "length"), (VALID, "stop")])
    settings = make_settings(tmp_path)
    result = summarize(request(), engine=engine, settings=settings)
    assert [a.valid for a in result.attempts] == [False, False, True]
    assert "cut at max_tokens" in result.attempts[0].errors[0]
    assert "cut at max_tokens" in result.attempts[1].errors[0]
    tokens = [r.max_tokens for r in engine.requests]
    assert tokens[0] is not None and tokens[1] == tokens[0] * 2


def test_exhausted_attempts_return_the_best_invalid_output_marked_invalid(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + 'on_exhausted = "return_invalid"\n')
    engine = FakeEngine([("not json", "stop"), (INVALID, "stop"), ("{}", "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert not result.valid
    assert result.data == json.loads(INVALID)  # fewest errors among parsed outputs
    assert result.errors
    assert len(result.attempts) == 3


def test_exhausted_attempts_raise_when_the_policy_says_error(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + 'on_exhausted = "error"\n')
    engine = FakeEngine([(INVALID, "stop")] * 3)
    with pytest.raises(OutputInvalid) as caught:
        summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert len(caught.value.details["attempts"]) == 3
    assert caught.value.details["errors"]


def test_unguided_attempts_follow_the_policy_and_tolerate_prose(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY + "guided = [true, false]\n")
    engine = FakeEngine([(INVALID, "stop"), (f"Here it is:\n```json\n{VALID}\n```", "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert result.valid
    assert [a.guided for a in result.attempts] == [True, False]
    assert engine.requests[1].guide is None


UNCAPPED_FIRST = """
[simplify]
max_items = 2
max_string_length = 30

[simplify.variants.uncapped]
strip_caps = true

[retry]
attempts = 3
decoding = ["uncapped", "default"]
"""


def _caps(guide_value: Any) -> tuple[int | None, int | None]:
    """(maxItems of points, maxLength of title) in a decoding schema."""
    properties = guide_value["properties"]
    return properties["points"].get("maxItems"), properties["title"].get("maxLength")


def test_each_attempt_is_guided_by_the_decoding_schema_the_policy_names(tmp_path: Path) -> None:
    make_template(tmp_path, UNCAPPED_FIRST)
    engine = FakeEngine([(INVALID, "stop"), (INVALID, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    guides = [r.guide for r in engine.requests]
    assert all(g is not None and g.kind == "json" for g in guides)
    # Uncapped: the schema's own caps are stripped too; then the policy's caps (last repeats).
    assert [_caps(g.value) for g in guides if g is not None] == [
        (None, None),
        (2, 30),
        (2, 30),
    ]
    assert [a.decoding for a in result.attempts] == ["uncapped", "default", "default"]
    assert all(a.guided for a in result.attempts)
    assert result.valid


def test_the_full_schema_judges_an_answer_its_uncapped_grammar_allowed(tmp_path: Path) -> None:
    make_template(tmp_path, UNCAPPED_FIRST)
    too_many = json.dumps({"title": "Release moves", "points": ["a", "b", "c", "d"]})
    engine = FakeEngine([(too_many, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    first = result.attempts[0]
    assert not first.valid and any("points" in e for e in first.errors)
    assert result.attempts[1].decoding == "default" and result.valid


def test_an_unguided_attempt_records_no_decoding_schema(tmp_path: Path) -> None:
    make_template(tmp_path, UNCAPPED_FIRST + "guided = [true, false]\n")
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert [(a.guided, a.decoding) for a in result.attempts] == [(True, "uncapped"), (False, None)]
    assert engine.requests[1].guide is None


def test_a_policy_without_variants_records_the_default_decoding(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY)
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert [a.decoding for a in result.attempts] == ["default", "default"]


def test_decoding_schemas_are_built_once_per_loaded_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structsum.processors import templates

    make_template(tmp_path, UNCAPPED_FIRST)
    calls: list[object] = []
    real = templates.simplify_schema

    def counting(schema: Any, policy: Any, registry: Any = None) -> Any:
        calls.append(policy)
        return real(schema, policy, registry)

    monkeypatch.setattr(templates, "simplify_schema", counting)
    settings = make_settings(tmp_path)
    for _ in range(2):
        engine = FakeEngine([(INVALID, "stop"), (INVALID, "stop"), (VALID, "stop")])
        summarize(request(), engine=engine, settings=settings)
    assert len(calls) == 2  # default and uncapped, at load; never per job


def test_mode_none_decodes_unguided_and_still_validates(tmp_path: Path) -> None:
    make_template(tmp_path, '[simplify]\nmode = "none"\n' + RETRY_POLICY)
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    result = summarize(request(), engine=engine, settings=make_settings(tmp_path))
    assert result.valid
    assert all(r.guide is None for r in engine.requests)


def test_unknown_template_is_a_typed_error(tmp_path: Path) -> None:
    make_template(tmp_path)
    with pytest.raises(TemplateNotFound):
        summarize(
            SummaryRequest(text="hello there", template_id="nope"),
            engine=FakeEngine([]),
            settings=make_settings(tmp_path),
        )


def test_text_over_the_hard_limit_is_refused_before_generation(tmp_path: Path) -> None:
    make_template(tmp_path)
    engine = FakeEngine([])
    with pytest.raises(TextTooLong):
        summarize(
            request("word " * 1000),
            engine=engine,
            settings=make_settings(tmp_path, max_input_chars=100),
        )
    assert engine.requests == []


def test_long_text_is_condensed_in_chunks_before_the_guided_summary(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY)

    def respond(req: GenerationRequest) -> tuple[str, str]:
        if req.guide is None:
            return "note about a part of the meeting.", "stop"
        return VALID, "stop"

    engine = FakeEngine(respond)
    settings = Settings(
        templates_dir=tmp_path,
        engine=EngineSettings(max_model_len=1024),
        budget=BudgetSettings(output_reserve=256, max_chunks=16),
    )
    long_text = " ".join(f"Sentence {i} of the long meeting." for i in range(600))
    result = summarize(request(long_text), engine=engine, settings=settings)
    assert result.valid
    assert result.chunks > 1
    assert engine.batches[0] == result.chunks  # the map stage runs as one batch
    final = engine.requests[-1]
    assert final.guide is not None
    assert "note about a part" in final.messages[-1]["content"]
    assert final.prompt_token_ids is not None
    assert final.max_tokens is not None
    assert len(final.prompt_token_ids) + final.max_tokens <= 1024


def test_too_many_chunks_is_a_typed_error(tmp_path: Path) -> None:
    make_template(tmp_path)
    settings = Settings(
        templates_dir=tmp_path,
        engine=EngineSettings(max_model_len=1024),
        budget=BudgetSettings(output_reserve=256, max_chunks=2),
    )
    with pytest.raises(TextTooLong, match="chunks") as raised:
        summarize(
            request(" ".join(f"Sentence {i} here." for i in range(2000))),
            engine=FakeEngine([]),
            settings=settings,
        )
    assert "MAX_CHUNKS" in raised.value.hint


def test_shipped_generic_template_is_used_by_default_settings() -> None:
    settings = Settings()
    example = (settings.templates_dir / "generic_summary_v1" / "example.json").read_text()
    engine = FakeEngine(lambda req: (example, "stop"))
    # On the CPU profile key points and action items are verbatim: the text holds them.
    copied = json.loads(example)["key_points"] + json.loads(example)["action_items"]
    text = " ".join(copied) + " We ship on Friday."
    result = summarize(
        SummaryRequest(text=text, template_id="generic_summary_v1"),
        engine=engine,
        settings=settings,
    )
    assert result.valid, result.errors


def test_a_loaded_template_is_used_as_given(tmp_path: Path) -> None:
    make_template(tmp_path, RETRY_POLICY)
    loaded = load_template(tmp_path, "t1")
    unguided = loaded.policy.model_copy(
        update={"simplify": loaded.policy.simplify.model_copy(update={"mode": "none"})}
    )
    template = replace(loaded, policy=unguided)  # edited in memory, not on disk
    engine = FakeEngine([(INVALID, "stop"), (VALID, "stop")])
    result = summarize_template(
        template, request(), engine=engine, settings=make_settings(tmp_path)
    )
    assert result.valid
    assert result.template_id == "t1"
    assert [r.guide for r in engine.requests] == [None, None]
    assert [a.temperature for a in result.attempts] == [0.7, 0.3]


def test_context_too_small_for_the_prompt_is_a_clear_error(tmp_path: Path) -> None:
    make_template(tmp_path)
    settings = Settings(templates_dir=tmp_path, engine=EngineSettings(max_model_len=256))
    engine = FakeEngine([])
    with pytest.raises(TextTooLong, match="no room for text") as raised:
        summarize(request(), engine=engine, settings=settings)
    assert engine.requests == []
    assert "MAX_MODEL_LEN" in raised.value.hint and "OUTPUT_RESERVE" in raised.value.hint
