"""Follow-up questions: history trimming (real tokenizer), prompt layout, stored turns."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from structsum.config import ConversationSettings, Settings
from structsum.errors import ConversationMismatch, EmptyText
from structsum.models import AskRequest, Turn
from structsum.processors.ask import ask, trim_history
from structsum.processors.engine import GenerationRequest
from tests.fakes import FakeEngine, MemoryStore

DOCUMENT = "Alice: we ship v2 on Friday. Bob: I write the release notes by Thursday."
EXAMPLE = (
    Path(__file__).parents[2] / "schemas" / "generic_summary_v1" / "example.json"
).read_text()


def turns(count: int) -> list[Turn]:
    return [
        Turn(question=f"Question number {i}: who writes the notes?", answer=f"Bob, answer {i}.")
        for i in range(1, count + 1)
    ]


def test_trim_keeps_the_most_recent_turns_first(bundled_tokenizer: Any) -> None:
    def count(text: str) -> int:
        return len(bundled_tokenizer.encode(text, add_special_tokens=False))

    assert trim_history(turns(8), max_turns=8, max_tokens=10_000, count=count) == turns(8)
    # one over the limit: down to the newest half at once, not one turn less
    kept = trim_history(turns(9), max_turns=8, max_tokens=10_000, count=count)
    assert [t.answer for t in kept] == [f"Bob, answer {i}." for i in (6, 7, 8, 9)]
    kept = trim_history(turns(10), max_turns=4, max_tokens=10_000, count=count)
    assert [t.answer for t in kept] == [f"Bob, answer {i}." for i in (9, 10)]


def test_trim_then_drops_whole_turns_to_the_token_limit(bundled_tokenizer: Any) -> None:
    def count(text: str) -> int:
        return len(bundled_tokenizer.encode(text, add_special_tokens=False))

    history = turns(10)
    sizes = [count(t.question) + count(t.answer) for t in history]
    assert min(sizes) > 10  # real BPE tokens, not words
    everything = sum(sizes)
    assert trim_history(history, max_turns=10, max_tokens=everything, count=count) == history
    # one token over: whole turns go, oldest first, until half the limit is left
    kept = trim_history(history, max_turns=10, max_tokens=everything - 1, count=count)
    assert sum(sizes[-len(kept) :]) <= (everything - 1) // 2 < sum(sizes[-len(kept) - 1 :])
    assert kept == history[-len(kept) :]


def test_a_full_history_is_cut_once_then_grows_again() -> None:
    """What keeps the prefix cache useful past the limit: prompts are byte-identical
    extensions of the previous one except on the turn that trims."""
    engine, store = FakeEngine(answers), MemoryStore()
    config = settings(max_history_turns=4, max_history_tokens=10_000)
    ask(question("Q1?", text=DOCUMENT), document=DOCUMENT, engine=engine, settings=config,
        store=store)  # fmt: skip
    kept = [
        ask(question(f"Q{i}?"), document=None, engine=engine, settings=config, store=store)
        for i in range(2, 11)
    ]
    assert [r.history_turns for r in kept] == [1, 2, 3, 4, 2, 3, 4, 2, 3]
    prompts = [r.messages for r in engine.requests]
    extends = [later[: len(earlier)] == earlier for earlier, later in itertools.pairwise(prompts)]
    assert extends == [True, True, True, True, False, True, True, False, True]


def test_a_full_history_is_cut_to_the_turns_the_settings_keep() -> None:
    """The default keeps 2 of 8: the trimming turn recomputes 2 turns, not 4."""
    assert Settings().conversation.history_turns_after_trim == 2
    kept = trim_history(turns(9), max_turns=8, max_tokens=1_000, count=len, keep_turns=2)
    assert [t.answer for t in kept] == ["Bob, answer 8.", "Bob, answer 9."]
    assert trim_history(turns(9), max_turns=8, max_tokens=1_000, count=len, keep_turns=0) == []
    # never more than half the limit: otherwise the next turn would trim again
    kept = trim_history(turns(9), max_turns=6, max_tokens=1_000, count=len, keep_turns=10)
    assert kept == turns(9)[-3:]
    engine, store = FakeEngine(answers), MemoryStore()
    config = settings(max_history_turns=4, history_turns_after_trim=1, max_history_tokens=10_000)
    ask(question("Q1?", text=DOCUMENT), document=DOCUMENT, engine=engine, settings=config,
        store=store)  # fmt: skip
    kept_counts = [
        ask(
            question(f"Q{i}?"), document=None, engine=engine, settings=config, store=store
        ).history_turns
        for i in range(2, 9)
    ]
    assert kept_counts == [1, 2, 3, 4, 1, 2, 3]


def test_trim_to_zero_turns() -> None:
    assert trim_history(turns(3), max_turns=0, max_tokens=1_000, count=len) == []
    assert trim_history(turns(3), max_turns=3, max_tokens=0, count=len) == []
    assert trim_history(turns(3), max_turns=1, max_tokens=1_000, count=len) == turns(3)[-1:]


def settings(**conversation: Any) -> Settings:
    return Settings(conversation=ConversationSettings(**conversation))


def question(asked: str, **fields: Any) -> AskRequest:
    return AskRequest(conversation_id="c1", question=asked, **fields)


def answers(request: GenerationRequest) -> tuple[str, str]:
    return (f"answer to: {request.messages[-1]['content']}", "stop")


def test_each_prompt_starts_with_the_previous_prompt_and_answer() -> None:
    """Fixed parts first, byte-identical across turns: what the prefix cache reuses."""
    engine, store = FakeEngine(answers), MemoryStore()
    config = settings(max_history_turns=10, max_history_tokens=10_000)
    ask(question("Who ships?", text=DOCUMENT), document=DOCUMENT, engine=engine,
        settings=config, store=store)  # fmt: skip
    for i in range(2, 5):
        ask(question(f"Question {i}?"), document=None, engine=engine, settings=config, store=store)

    prompts = [r.messages for r in engine.requests]
    for earlier, later in itertools.pairwise(prompts):
        answer = {"role": "assistant", "content": f"answer to: {earlier[-1]['content']}"}
        assert later[: len(earlier) + 1] == [*earlier, answer]
    assert prompts[0][0]["role"] == "system" and DOCUMENT in prompts[0][0]["content"]
    assert all(p[0] == prompts[0][0] for p in prompts)


def test_history_is_trimmed_and_stored_with_the_ttl() -> None:
    engine, store = FakeEngine(answers), MemoryStore()
    config = settings(max_history_turns=2, max_history_tokens=10_000, ttl_s=90)
    ask(question("Q1?", text=DOCUMENT), document=DOCUMENT, engine=engine, settings=config,
        store=store)  # fmt: skip
    results = [
        ask(question(f"Q{i}?"), document=None, engine=engine, settings=config, store=store)
        for i in range(2, 6)
    ]

    assert [r.turn for r in results] == [2, 3, 4, 5]
    # a limit of 2: kept 1, 2, then 3 stored turns are over it and the newest one stays
    assert [r.history_turns for r in results] == [1, 2, 1, 2]
    last = engine.requests[-1].messages
    assert [m["content"] for m in last if m["role"] == "user"] == ["Q3?", "Q4?", "Q5?"]
    assert set(store.ttls) == {90}
    store.now = 91.0  # expired: the conversation is gone
    with pytest.raises(EmptyText):
        ask(question("Q6?"), document=None, engine=engine, settings=config, store=store)


def test_another_document_in_the_same_conversation_is_refused() -> None:
    engine, store = FakeEngine(answers), MemoryStore()
    ask(question("Q1?", text=DOCUMENT), document=DOCUMENT, engine=engine, settings=settings(),
        store=store)  # fmt: skip
    with pytest.raises(ConversationMismatch):
        ask(question("Q2?", text="Another text."), document="Another text.", engine=engine,
            settings=settings(), store=store)  # fmt: skip


def test_a_template_guides_the_answer_and_validates_it() -> None:
    engine = FakeEngine(lambda r: (EXAMPLE, "stop"))
    result = ask(
        question("Summarize it.", text=DOCUMENT, template_id="generic_summary_v1"),
        document=DOCUMENT,
        engine=engine,
        settings=settings(),
        store=MemoryStore(),
    )
    assert engine.requests[0].guide is not None
    assert result.valid and result.data == json.loads(EXAMPLE)


def test_free_answers_use_the_ask_sampling_with_stop_strings() -> None:
    engine = FakeEngine(answers)
    config = settings()
    result = ask(question("Who?", text=DOCUMENT), document=DOCUMENT, engine=engine,
                 settings=config, store=MemoryStore())  # fmt: skip
    sent = engine.requests[0]
    assert sent.guide is None and result.valid is None and result.data is None
    assert sent.sampling == config.sampling.ask
    assert sent.sampling.stop and sent.sampling.skip_special_tokens
