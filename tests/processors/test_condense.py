"""The map stage on its own: text over the allowance becomes chunk notes (scripted engine)."""

from __future__ import annotations

import pytest

from structsum.config import BudgetSettings, EngineSettings, Settings
from structsum.errors import TextTooLong
from structsum.processors.condense import condense
from structsum.processors.engine import GenerationRequest
from tests.fakes import FakeEngine

SETTINGS = Settings(
    engine=EngineSettings(max_model_len=1024),
    budget=BudgetSettings(output_reserve=256, max_chunks=16),
)


def test_text_that_fits_is_returned_untouched_without_generating() -> None:
    engine = FakeEngine([])
    text, chunks, usage = condense("a short text", allowance=10, engine=engine, settings=SETTINGS)
    assert (text, chunks) == ("a short text", 1)
    assert usage.prompt_tokens == usage.completion_tokens == 0
    assert engine.requests == []


def test_long_text_becomes_one_note_per_chunk_in_one_batch() -> None:
    def note(request: GenerationRequest) -> tuple[str, str]:
        assert request.guide is None  # notes are free text
        return " note. ", "stop"

    engine = FakeEngine(note)
    long_text = " ".join(f"Sentence {i} of the meeting." for i in range(600))
    text, chunks, usage = condense(long_text, allowance=200, engine=engine, settings=SETTINGS)
    assert chunks > 1
    assert engine.batches == [chunks]
    assert text == "\n\n".join(["note."] * chunks)
    assert usage.completion_tokens == chunks
    assert all(r.sampling == SETTINGS.sampling.condense for r in engine.requests)


def test_notes_that_do_not_shrink_the_text_are_refused() -> None:
    long_text = " ".join(f"Sentence {i} of the meeting." for i in range(600))
    engine = FakeEngine(lambda request: (long_text, "stop"))
    with pytest.raises(TextTooLong, match="does not shrink") as raised:
        condense(long_text, allowance=200, engine=engine, settings=SETTINGS)
    assert "MAX_MODEL_LEN" in raised.value.hint
