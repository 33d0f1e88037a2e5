"""VllmEngine.generate stops at the deadline and cancels the request (no vLLM needed).

The AsyncLLM is replaced by a stand-in whose ``generate`` is an async generator
like vLLM's: cancelling the coroutine that iterates it raises CancelledError
inside it, which is where vLLM calls ``abort(request_id)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from structsum.config import EngineSettings, SamplingSettings
from structsum.errors import JobTimeout
from structsum.processors import engine as engine_module
from structsum.processors.engine import GenerationRequest, VllmEngine

REQUEST = GenerationRequest(
    [{"role": "user", "content": "hi"}], SamplingSettings(), prompt_token_ids=[1, 2, 3]
)


class StallingLLM:
    """Streams one token, then never another, like a hung engine core."""

    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.errored = False

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        try:
            yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=[7], text="x")])
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.aborted.append(request_id)  # what vLLM's AsyncLLM.generate does here
            raise


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VllmEngine, StallingLLM]]:
    monkeypatch.setattr(engine_module, "build_sampling_params", lambda *a, **k: None)
    monkeypatch.setattr("vllm.inputs.TokensPrompt", dict, raising=False)
    import vllm.v1.engine.exceptions  # noqa: F401  (imported by engine_errors(); slow once)

    engine = VllmEngine.__new__(VllmEngine)
    llm = StallingLLM()
    engine.settings = EngineSettings()
    engine.model_name = "stalling"
    engine._ids = iter(range(100))  # type: ignore[assignment]
    engine._progress_lock = threading.Lock()
    engine._in_flight = 0
    engine._progress = 0
    engine._loop = asyncio.new_event_loop()
    engine._thread = threading.Thread(target=engine._loop.run_forever, daemon=True)
    engine._thread.start()
    engine._llm = llm
    yield engine, llm
    engine._loop.call_soon_threadsafe(engine._loop.stop)
    engine._thread.join(timeout=5)


def test_deadline_cancels_the_request_and_raises_job_timeout(
    stalled: tuple[VllmEngine, StallingLLM],
) -> None:
    engine, llm = stalled
    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        engine.generate([REQUEST, REQUEST], deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 3
    assert JobTimeout.retryable and info.value.hint
    deadline = time.monotonic() + 3
    while len(llm.aborted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(llm.aborted) == ["structsum-0", "structsum-1"]
    in_flight, produced = engine.progress()
    assert in_flight == 0  # the watchdog sees nothing in flight any more
    assert produced == 2  # one streamed output per request


def test_a_passed_deadline_generates_nothing(stalled: tuple[VllmEngine, StallingLLM]) -> None:
    engine, llm = stalled
    with pytest.raises(JobTimeout):
        engine.generate([REQUEST], deadline=time.monotonic() - 1)
    assert engine.progress() == (0, 0)
    assert llm.aborted == []


def test_errored_reads_vllms_flag(stalled: tuple[VllmEngine, StallingLLM]) -> None:
    engine, llm = stalled
    assert engine.errored is False
    llm.errored = True
    assert engine.errored is True
