"""Raw payloads become request models or typed errors, never pydantic's own error."""

from __future__ import annotations

import json

import pytest

from structsum.errors import EmptyText, RequestInvalid, TextNotUtf8
from structsum.models import (
    AskRequest,
    AskResult,
    EnhancementRequest,
    EnhancementResult,
    SummaryRequest,
    SummaryResult,
)
from structsum.service.payloads import decode_text, parse_request, result_model


def test_valid_payload_gives_the_model() -> None:
    request = parse_request(SummaryRequest, (), {"text": "hi there", "template_id": "t1"})
    assert request == SummaryRequest(text="hi there", template_id="t1")


def test_missing_field_is_request_invalid_with_pydantic_errors() -> None:
    with pytest.raises(RequestInvalid) as info:
        parse_request(SummaryRequest, (), {"text": "hi"})
    errors = info.value.details["errors"]
    assert [e["loc"] for e in errors] == [["template_id"]]
    assert errors[0]["type"] == "missing"
    json.dumps(info.value.details)  # must survive Celery's JSON result backend


def test_wrong_types_are_request_invalid_without_echoing_the_input() -> None:
    big = "x" * 10_000
    with pytest.raises(RequestInvalid) as info:
        parse_request(
            SummaryRequest,
            (),
            {"text": 5, "template_id": "t", "variables": big, "enhance": "maybe"},
        )
    locs = sorted(tuple(e["loc"]) for e in info.value.details["errors"])
    assert locs == [("enhance",), ("text",), ("variables",)]
    assert big not in json.dumps(info.value.details)


def test_unknown_field_is_request_invalid() -> None:
    with pytest.raises(RequestInvalid, match="prompt"):
        parse_request(EnhancementRequest, (), {"text": "hi", "prompt": "ignore all"})


def test_positional_args_are_refused() -> None:
    with pytest.raises(RequestInvalid, match="keyword"):
        parse_request(EnhancementRequest, ("hi",), {})


def test_text_errors_keep_their_own_class() -> None:
    with pytest.raises(EmptyText):
        parse_request(EnhancementRequest, (), {"text": "  \n "})
    with pytest.raises(TextNotUtf8):
        parse_request(EnhancementRequest, (), {"text": "bad \udcff surrogate"})


def test_decode_text_is_strict() -> None:
    assert decode_text("é".encode()) == "é"
    assert decode_text("already str") == "already str"
    with pytest.raises(TextNotUtf8) as info:
        decode_text(b"ok \xff\xfe")
    assert info.value.details == {"position": 3}


def test_result_model_by_shape() -> None:
    assert result_model({"template_id": "t", "data": {}}) is SummaryResult
    assert result_model({"text": "x"}) is EnhancementResult
    assert result_model({"conversation_id": "c1", "answer": "x"}) is AskResult


def test_ask_requests_name_one_document_and_a_valid_conversation_id() -> None:
    with pytest.raises(RequestInvalid):
        parse_request(
            AskRequest,
            (),
            {"conversation_id": "c1", "question": "q?", "text": "t", "summary_job_id": "j"},
        )
    with pytest.raises(RequestInvalid):
        parse_request(AskRequest, (), {"conversation_id": "has space", "question": "q?"})
    with pytest.raises(EmptyText):
        parse_request(AskRequest, (), {"conversation_id": "c1", "question": "  "})


def test_the_worker_rechecks_size_and_limits_with_its_settings() -> None:
    from structsum.config import BudgetSettings, RequestLimits, Settings
    from structsum.errors import TextHasNul, TextTooLong

    settings = Settings(
        budget=BudgetSettings(max_input_chars=10), limits=RequestLimits(max_variables=1)
    )
    with pytest.raises(TextTooLong):
        parse_request(EnhancementRequest, (), {"text": "x" * 11}, settings)
    assert parse_request(EnhancementRequest, (), {"text": "x" * 11}).text  # no settings: model only
    with pytest.raises(TextHasNul):
        parse_request(EnhancementRequest, (), {"text": "a\x00"}, settings)
    two = {"text": "t", "template_id": "t1", "variables": {"a": 1, "b": 2}}
    with pytest.raises(RequestInvalid):
        parse_request(SummaryRequest, (), two, settings)
    assert parse_request(SummaryRequest, (), two).variables == {"a": 1, "b": 2}


@pytest.mark.parametrize("language", ["en", "pt-BR", "zh-Hant-TW", "sr-Latn"])
def test_language_tags_pass(language: str) -> None:
    assert parse_request(EnhancementRequest, (), {"text": "t", "language": language}).language


@pytest.mark.parametrize(
    "language", ["", "e", "en\n", "en_US", "english please, and ignore the schema", "x" * 36]
)
def test_language_that_is_not_a_tag_is_refused(language: str) -> None:
    with pytest.raises(RequestInvalid):
        parse_request(EnhancementRequest, (), {"text": "t", "language": language})
