"""Through the real worker: the result cache in Redis, and a 10-turn conversation.

Shares the session worker of test_worker.py (one engine start). Run under
`flock /tmp/structsum-engine.lock`.
"""

from __future__ import annotations

import itertools

import pytest
import redis
from typer.testing import CliRunner

from structsum import client
from structsum.config import Settings, get_settings
from structsum.models import AskResult
from structsum.service.stats import collect
from tests.service.conftest import WorkerProcess, worker_env

pytestmark = [pytest.mark.service, pytest.mark.engine]

JOB_TIMEOUT_S = 300.0
NOTE = (
    "Alice: so um we ship v2 on Friday. Bob: ok I will write the release notes by "
    "Thursday. Carol: QA signs off Thursday afternoon, if the staging server is up."
)
QUESTIONS = [
    "When does v2 ship?",
    "Who writes the release notes?",
    "By when?",
    "Who signs off?",
    "When does QA sign off?",
    "What could stop the sign-off?",
    "Which version ships?",
    "What does Bob do?",
    "What does Carol do?",
    "Name everyone in the note.",
]


def test_an_identical_request_is_served_from_the_cache(
    worker: WorkerProcess, service_settings: Settings
) -> None:
    text = NOTE + " (cache test)"
    first = client.enqueue_enhancement(text, settings=service_settings).result(JOB_TIMEOUT_S)
    hits = worker.metric("structsum_result_cache_total", task="structsum.enhance", outcome="hit")
    looked_up = worker.metric("structsum_engine_prefix_queries_tokens")

    second = client.enqueue_enhancement(text, settings=service_settings).result(JOB_TIMEOUT_S)

    assert not first.cached and second.cached
    assert second.text == first.text
    after = worker.metric("structsum_result_cache_total", task="structsum.enhance", outcome="hit")
    assert after == (hits or 0) + 1
    # the engine saw nothing: not one prompt token was looked up for the hit
    assert worker.metric("structsum_engine_prefix_queries_tokens") == looked_up

    bypassed = client.enqueue_enhancement(text, use_cache=False, settings=service_settings).result(
        JOB_TIMEOUT_S
    )
    assert not bypassed.cached
    assert (worker.metric("structsum_engine_prefix_queries_tokens") or 0) > (looked_up or 0)

    # stored in the result backend's Redis with the configured TTL
    queue, cache = service_settings.queue, service_settings.cache
    backend = redis.Redis.from_url(queue.backend_url)
    keys = list(backend.scan_iter(f"{queue.key_prefix}{cache.key_prefix}*"))
    assert keys
    assert all(0 < backend.ttl(key) <= cache.ttl_s for key in keys)


def ask_on_the_command_line(
    service_settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str
) -> AskResult:
    from structsum.commands.service import app

    for key, value in worker_env(service_settings).items():
        if key.startswith("STRUCTSUM_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["ask", *args])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.stderr
    return AskResult.model_validate_json(done.stdout)


def test_a_ten_turn_conversation(
    worker: WorkerProcess, service_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hits_before = worker.metric("structsum_engine_prefix_hits_tokens") or 0.0
    limits = service_settings.conversation
    results = []
    for i, question in enumerate(QUESTIONS[:-1]):
        handle = client.ask(
            "ten-turns",
            question,
            text=NOTE if i == 0 else None,
            max_tokens=12,
            settings=service_settings,
        )
        results.append(handle.result(JOB_TIMEOUT_S))
    # the last turn through `structsum ask`: the conversation is the worker's, not the client's
    results.append(
        ask_on_the_command_line(
            service_settings, monkeypatch, "ten-turns", QUESTIONS[-1], "--max-tokens", "12"
        )
    )

    assert [r.turn for r in results] == list(range(1, 11))
    # kept turns grow to the limit, then a full history is cut to its newest few
    stored, expected = 0, []
    keep = min(limits.history_turns_after_trim, limits.max_history_turns // 2)
    for _ in range(10):
        kept = stored if stored <= limits.max_history_turns else keep
        expected.append(kept)
        stored = kept + 1
    assert [r.history_turns for r in results] == expected
    assert all(r.answer and r.usage.completion_tokens <= 12 for r in results)
    assert all(r.valid is None and r.data is None for r in results)
    # later turns reuse the system part, the document and the kept turns
    assert (worker.metric("structsum_engine_prefix_hits_tokens") or 0.0) > hits_before
    engine = collect(timeout=5.0, settings=service_settings)["workers"][worker.hostname]
    assert engine["structsum"]["engine"]["prefix_hit_rate"] > 0  # `structsum stats` shows it
    # the prompt grows by one turn each time until the turn limit trims it
    grown = [r.usage.prompt_tokens for r in results][: limits.max_history_turns + 1]
    assert all(a < b for a, b in itertools.pairwise(grown))
