"""Summary through the real bundled model: valid JSON for the full schema, every time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from structsum.config import Settings
from structsum.models import SummaryRequest
from structsum.processors.summary import summarize
from structsum.processors.verbatim import is_verbatim

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "scripts" / "samples" / "meeting.txt"
INTERVIEW = ROOT / "tests" / "data" / "inputs" / "interview_employee_exit.txt"

pytestmark = pytest.mark.engine


def test_sample_meeting_summary_is_valid(engine: Any, settings: Settings) -> None:
    request = SummaryRequest(text=SAMPLE.read_text(), template_id="generic_summary_v1")
    result = summarize(request, engine=engine, settings=settings)
    schema = json.loads((settings.templates_dir / "generic_summary_v1/schema.json").read_text())
    assert result.valid, result.attempts
    jsonschema.validate(result.data, schema)
    assert result.attempts[-1].finish_reason == "stop"
    assert result.usage.completion_tokens == sum(a.usage.completion_tokens for a in result.attempts)
    assert result.chunks == 1
    assert result.grounding is not None and result.grounding.score is not None
    if settings.profile == "cpu":  # extractive key points on the CPU profile (issue 15)
        assert all(is_verbatim(point, SAMPLE.read_text()) for point in result.data["key_points"])


def test_quotes_are_decoded_from_the_text_and_checked(engine: Any, settings: Settings) -> None:
    """interview_summary_v1's quotes are verbatim on the CPU profile (the engine's): the
    decode is constrained to the text's sentences, so the first attempt's quotes pass."""
    text = INTERVIEW.read_text()
    request = SummaryRequest(text=text, template_id="interview_summary_v1")
    result = summarize(request, engine=engine, settings=settings)
    assert result.valid, result.attempts
    assert result.data is not None and result.data["quotes"], result.data
    assert all(is_verbatim(q["quote"], text) for q in result.data["quotes"])
    assert not any("word for word" in e for a in result.attempts for e in a.errors)
    assert result.grounding is not None
    assert result.grounding.verbatim == 1.0
    # Quotes, plus follow-ups where the profile makes them verbatim too (CPU).
    assert result.grounding.verbatim_fields >= len(result.data["quotes"])


def test_enhance_then_summarize(engine: Any, settings: Settings) -> None:
    request = SummaryRequest(
        text="um so the team uh agreed to move the release to wednesday, Tom fixes login",
        template_id="generic_summary_v1",
        enhance=True,
    )
    result = summarize(request, engine=engine, settings=settings)
    assert result.enhancement is not None and result.enhancement.text.strip()
    assert result.valid, result.attempts
    assert result.usage.prompt_tokens > 0


def test_text_longer_than_the_context_is_condensed_then_summarized(
    engine: Any, settings: Settings
) -> None:
    small = settings.model_copy(
        update={"engine": settings.engine.model_copy(update={"max_model_len": 2048})}
    )
    text = "\n\n".join([SAMPLE.read_text()] * 4)
    assert engine.count_tokens(text) > 2048
    # The running engine has a larger context; budgeting for 1024 must still keep
    # every prompt plus its answer under 2048 tokens and produce a valid summary.
    result = summarize(
        SummaryRequest(text=text, template_id="generic_summary_v1"), engine=engine, settings=small
    )
    assert result.chunks > 1
    assert result.valid, result.attempts
    for attempt in result.attempts:
        assert attempt.usage.prompt_tokens + attempt.usage.completion_tokens <= 2048


def test_each_attempt_decodes_with_the_schema_its_policy_names(
    engine: Any, settings: Settings, tmp_path: Path
) -> None:
    """A variant's caps reach vLLM's grammar: the answer keeps them, the full schema judges it."""
    import shutil

    shutil.copytree(settings.templates_dir / "generic_summary_v1", tmp_path / "generic_summary_v1")
    policy = tmp_path / "generic_summary_v1" / "policy.toml"
    policy.write_text(
        policy.read_text().replace("attempts = 3", 'attempts = 1\ndecoding = ["tight"]')
        + "\n[simplify.variants.tight]\nmax_items = 1\nmax_string_length = 40\n"
    )
    local = settings.model_copy(update={"templates_dir": tmp_path})
    request = SummaryRequest(text=SAMPLE.read_text(), template_id="generic_summary_v1")
    result = summarize(request, engine=engine, settings=local)
    (attempt,) = result.attempts
    assert (attempt.decoding, attempt.guided) == ("tight", True)
    assert result.data is not None and attempt.finish_reason == "stop"
    assert all(len(result.data[key]) <= 1 for key in ("key_points", "action_items", "tags"))
    assert len(result.data["summary"]) <= 40 and len(result.data["title"]) <= 40
    # The full schema judges it: a 40-character summary may be too short for it or not.
    schema = json.loads((tmp_path / "generic_summary_v1/schema.json").read_text())
    assert result.valid == jsonschema.Draft202012Validator(schema).is_valid(result.data)
