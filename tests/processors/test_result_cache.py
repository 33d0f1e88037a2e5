"""The result cache over a scripted engine: a hit never reaches the engine; TTL and bypass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from structsum.config import CacheSettings, SamplingSettings, Settings, TaskSampling
from structsum.models import EnhancementRequest, SummaryRequest, SummaryResult
from structsum.processors.engine import GenerationRequest
from structsum.processors.enhancement import enhance
from structsum.processors.summary import summarize
from tests.fakes import FakeEngine, MemoryStore

EXAMPLE = (Path(__file__).parents[2] / "schemas" / "document_brief_v1" / "example.json").read_text()
TEXT = "Alice: we ship on Friday. Bob: I write the release notes. Carol: QA signs off Thursday."
# No verbatim field in any profile: the example is a valid answer to any text.
TEMPLATE = "document_brief_v1"


def answer(request: GenerationRequest) -> tuple[str, str]:
    return (EXAMPLE, "stop") if request.guide is not None else ("Clean text.", "stop")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(answer)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def settings(ttl_s: int = 600, **overrides: object) -> Settings:
    return Settings(cache=CacheSettings(ttl_s=ttl_s), **overrides)  # type: ignore[arg-type]


def run(
    engine: FakeEngine, store: MemoryStore, config: Settings, **request: object
) -> SummaryResult:
    fields: dict[str, object] = {"text": TEXT, "template_id": TEMPLATE, **request}
    return summarize(SummaryRequest(**fields), engine=engine, settings=config, cache=store)  # type: ignore[arg-type]


def test_a_hit_returns_the_stored_result_without_calling_the_engine(
    engine: FakeEngine, store: MemoryStore
) -> None:
    first = run(engine, store, settings())
    calls = len(engine.requests)
    assert calls >= 1 and not first.cached

    second = run(engine, store, settings())

    assert len(engine.requests) == calls  # the engine saw nothing
    assert second.cached
    assert second.data == first.data == json.loads(EXAMPLE)
    assert second.model_dump(exclude={"cached"}) == first.model_dump(exclude={"cached"})


def test_entries_expire_after_the_ttl(engine: FakeEngine, store: MemoryStore) -> None:
    run(engine, store, settings(ttl_s=60))
    assert store.ttls == [60]
    calls = len(engine.requests)

    store.now = 59.0
    assert run(engine, store, settings(ttl_s=60)).cached
    store.now = 61.0
    fresh = run(engine, store, settings(ttl_s=60))

    assert not fresh.cached
    assert len(engine.requests) == 2 * calls


def test_bypass_runs_the_engine_and_replaces_the_entry(
    engine: FakeEngine, store: MemoryStore
) -> None:
    run(engine, store, settings())
    calls = len(engine.requests)

    bypassed = run(engine, store, settings(), use_cache=False)

    assert not bypassed.cached
    assert len(engine.requests) == 2 * calls
    stored = SummaryResult.model_validate_json(next(iter(store.items.values()))[0])
    assert stored.elapsed_s == bypassed.elapsed_s  # the fresh result replaced the old one
    assert len(store.items) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"text": TEXT + " Dan: and the demo is on Monday."},
        {"language": "de"},
        {"template_id": "meeting_minutes_v1"},
        {"enhance": True},
    ],
)
def test_a_different_request_misses(
    engine: FakeEngine, store: MemoryStore, change: dict[str, object]
) -> None:
    run(engine, store, settings())
    assert not run(engine, store, settings(), **change).cached


def test_other_sampling_settings_miss(engine: FakeEngine, store: MemoryStore) -> None:
    run(engine, store, settings())
    colder = settings(sampling=TaskSampling(summary=SamplingSettings(temperature=0.1)))
    assert not run(engine, store, colder).cached


def test_an_invalid_summary_is_not_stored(store: MemoryStore) -> None:
    broken = FakeEngine(lambda r: ('{"title": 1}', "stop"))
    result = run(broken, store, settings())
    assert not result.valid
    assert store.items == {}


def test_disabled_cache_is_never_read_or_written(engine: FakeEngine, store: MemoryStore) -> None:
    off = Settings(cache=CacheSettings(enabled=False))
    run(engine, store, off)
    assert store.items == {}
    assert not run(engine, store, off).cached


def test_enhancement_is_cached_too(engine: FakeEngine, store: MemoryStore) -> None:
    request = EnhancementRequest(text=TEXT)
    first = enhance(request, engine=engine, settings=settings(), cache=store)
    calls = len(engine.requests)
    second = enhance(request, engine=engine, settings=settings(), cache=store)
    assert len(engine.requests) == calls
    assert second.cached and second.text == first.text == "Clean text."


def test_an_unreadable_entry_is_a_miss(engine: FakeEngine, store: MemoryStore) -> None:
    run(engine, store, settings())
    key = next(iter(store.items))
    store.items[key] = ('{"not": "a result"}', 1e9)
    assert not run(engine, store, settings()).cached
