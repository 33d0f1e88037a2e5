"""Enhancement: unconstrained clean-up, chunked to leave room for an answer of equal size."""

from __future__ import annotations

from typing import Any

import pytest

from structsum.config import BudgetSettings, EngineSettings, Settings
from structsum.errors import TextTooLong
from structsum.models import EnhancementRequest
from structsum.processors.engine import GenerationRequest
from structsum.processors.enhancement import enhance
from tests.fakes import FakeEngine


def echo_upper(request: GenerationRequest) -> tuple[str, str]:
    return request.messages[-1]["content"].upper(), "stop"


def test_short_text_is_one_unguided_request() -> None:
    engine = FakeEngine(echo_upper)
    result = enhance(
        EnhancementRequest(text="um so we ship friday"), engine=engine, settings=Settings()
    )
    assert result.text == "UM SO WE SHIP FRIDAY"
    assert result.chunks == 1
    assert not result.truncated
    (request,) = engine.requests
    assert request.guide is None
    assert request.sampling == Settings().sampling.enhancement
    assert result.usage.completion_tokens == 5


def test_long_text_is_chunked_into_one_batch_and_reassembled_in_order() -> None:
    engine = FakeEngine(echo_upper)
    settings = Settings(engine=EngineSettings(max_model_len=512))
    sentences = [f"Sentence {i} is here." for i in range(200)]
    result = enhance(EnhancementRequest(text=" ".join(sentences)), engine=engine, settings=settings)
    assert result.chunks > 1
    assert engine.batches == [result.chunks]
    assert result.text.replace("\n\n", " ").split() == " ".join(sentences).upper().split()
    for request in engine.requests:
        assert request.prompt_token_ids is not None and request.max_tokens is not None
        assert len(request.prompt_token_ids) + request.max_tokens <= 512


def test_a_cut_answer_is_reported_as_truncated() -> None:
    engine = FakeEngine([("Cleaned but cut", "length")])
    result = enhance(EnhancementRequest(text="some text"), engine=engine, settings=Settings())
    assert result.truncated


def test_text_over_the_limit_is_refused() -> None:
    settings = Settings(budget=BudgetSettings(max_input_chars=10))
    engine = FakeEngine([])
    with pytest.raises(TextTooLong) as caught:
        enhance(EnhancementRequest(text="x" * 11), engine=engine, settings=settings)
    assert caught.value.details == {"chars": 11, "limit": 10}
    assert "STRUCTSUM_BUDGET__MAX_INPUT_CHARS" in caught.value.hint
    assert engine.requests == []


def test_text_over_the_chunk_limit_names_the_chunk_limit() -> None:
    settings = Settings(
        engine=EngineSettings(max_model_len=512), budget=BudgetSettings(max_chunks=2)
    )
    engine = FakeEngine(echo_upper)
    text = " ".join(f"Sentence {i} is here." for i in range(200))
    with pytest.raises(TextTooLong) as caught:
        enhance(EnhancementRequest(text=text), engine=engine, settings=settings)
    assert caught.value.details["limit"] == 2
    # The character limit was not what stopped it: the hint says which limit was.
    assert "STRUCTSUM_BUDGET__MAX_CHUNKS" in caught.value.hint
    assert "MAX_INPUT_CHARS" not in caught.value.hint
    assert engine.requests == []


@pytest.mark.engine
def test_real_model_cleans_a_transcript(engine: Any, settings: Settings) -> None:
    text = "um so yeah the the release is uh moved to wednesday because QA needs two days"
    result = enhance(EnhancementRequest(text=text), engine=engine, settings=settings)
    assert result.text.strip()
    assert result.model == engine.model_name
    assert result.usage.prompt_tokens > len(text.split())
    assert result.usage.completion_tokens > 0
    assert result.ttft_s is not None and result.ttft_s <= result.elapsed_s
