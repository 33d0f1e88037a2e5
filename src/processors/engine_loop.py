"""What the local and the remote engine share: requests run on a private event loop.

Either engine keeps one asyncio loop on a daemon thread; ``generate`` may be called
from any number of job threads at once, and every request becomes a coroutine on
that loop (batched by vLLM in this process, or streamed to a server). Past a job's
deadline the waiting stops and the coroutines are cancelled. The in-flight and
progress counters are what the watchdog reads. Nothing here imports vLLM: a remote
worker has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from structsum.errors import EngineUnavailable, JobTimeout
from structsum.processors.generation import GenerationOutput, GenerationRequest


def chat_token_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt ids of ``messages`` under the tokenizer's chat template (generation prompt)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


class LoopEngine:
    """A private event-loop thread, the blocking ``generate`` over it, and its counters.

    Subclasses write ``_one`` (one request, on the loop; it adds 1 to ``_progress``
    per streamed output) and may wrap the wait in ``_generation_errors``.
    """

    # Completes "generation did not finish by the job's deadline (N request(s) cancelled...".
    _cancelled_where = ""
    _closed_message = "the engine is closed"

    def __init__(self, *, thread_name: str) -> None:
        # Read by the watchdog: requests running now, and streamed outputs so far
        # (each one means the engine made progress).
        self._progress_lock = threading.Lock()
        self._in_flight = 0
        self._progress = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=thread_name, daemon=True
        )
        self._thread.start()

    def _submit(self, coro: Any) -> Future[Any]:
        if not self._thread.is_alive():
            coro.close()
            raise EngineUnavailable(self._closed_message)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _one(self, request: GenerationRequest) -> GenerationOutput:
        raise NotImplementedError

    async def _many(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def _generation_errors(self) -> contextlib.AbstractContextManager[None]:
        """Maps what waiting on the requests raises onto the error tree (nothing here)."""
        return contextlib.nullcontext()

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]:
        """Run requests together; safe to call from many threads at once.

        Past ``deadline`` (a ``time.monotonic()`` instant) the waiting stops and the
        coroutines are cancelled, which aborts their requests (see each engine).
        """
        if not requests:
            return []
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise JobTimeout("the job's deadline passed before generation", {"late_s": -timeout})
        with self._progress_lock:
            self._in_flight += len(requests)
        try:
            future = self._submit(self._many(requests))
            try:
                with self._generation_errors():
                    return list(future.result(timeout=timeout))
            except FutureTimeout:
                future.cancel()
                raise JobTimeout(
                    f"generation did not finish by the job's deadline ({len(requests)} "
                    f"request(s) cancelled{self._cancelled_where})",
                    {"requests": len(requests), "waited_s": round(timeout or 0.0, 1)},
                ) from None
        finally:
            with self._progress_lock:
                self._in_flight -= len(requests)

    def progress(self) -> tuple[int, int]:
        """(requests in flight, outputs streamed so far): the watchdog's view of liveness."""
        with self._progress_lock:
            return self._in_flight, self._progress
