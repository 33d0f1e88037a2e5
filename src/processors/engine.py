"""The inference engine: one vLLM ``AsyncLLM`` per process, driven from any thread.

Why AsyncLLM and not the offline ``LLM`` class: a Celery worker runs many jobs
in threads, and each job's requests must join the engine's running batch as soon
as they arrive (continuous batching). ``AsyncLLM`` lives on one private event
loop thread; ``generate`` may be called from any number of threads at once and
every request goes straight into the same scheduler. Streaming the cumulative
output gives the time to first token for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from structsum.config import EngineSettings
from structsum.logs import engine_environment
from structsum.processors.engine_loop import LoopEngine, chat_token_ids
from structsum.processors.engine_stats import CounterSink, EngineCounters, stat_logger_factory
from structsum.processors.generation import Engine as Engine
from structsum.processors.generation import GenerationOutput as GenerationOutput
from structsum.processors.generation import GenerationRequest as GenerationRequest
from structsum.processors.guide import Guide as Guide
from structsum.processors.vllm_args import build_engine_args as build_engine_args
from structsum.processors.vllm_args import build_sampling_params as build_sampling_params
from structsum.processors.vllm_args import engine_errors as engine_errors

if TYPE_CHECKING:
    from structsum.processors.remote_engine import RemoteEngine

log = logging.getLogger(__name__)

# Seconds vLLM gives its engine-core processes to exit after SIGTERM before it
# force-kills them (its default, 5 s, is too short on a busy 2-core box: it then
# warns and leaks shared memory). close() waits a little longer, as a backstop.
ENGINE_STOP_GRACE_S = 30.0
CLOSE_TIMEOUT_S = ENGINE_STOP_GRACE_S + 15.0


class VllmEngine(LoopEngine):
    """vLLM's AsyncLLM on a private event-loop thread, with a blocking, thread-safe API."""

    # The runtime reads it: this engine's processes are the worker's own to watch.
    remote = False

    def __init__(self, settings: EngineSettings, model: str) -> None:
        self.settings = settings
        self.model_name = model
        self._ids = itertools.count()
        # Prefix-cache and speculation counters, added up by a stat logger of ours.
        self._counters = CounterSink()
        super().__init__(thread_name="structsum-engine-loop")
        started = time.perf_counter()
        self._llm: Any = self._submit(self._create()).result()
        self._tokenizer: Any = self._llm.get_tokenizer()
        self.load_s = time.perf_counter() - started
        log.info("engine ready", extra={"model": model, "load_s": round(self.load_s, 1)})

    async def _create(self) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        # Scheduler stats on, read by our logger. Passing custom loggers keeps vLLM's
        # periodic logging one out on the versions that know them; 0.32 adds it anyway,
        # but it only writes when do_log_stats() is called, which structsum never does.
        args = build_engine_args(self.settings, self.model_name)
        args.disable_log_stats = False
        return AsyncLLM.from_engine_args(args, stat_loggers=[stat_logger_factory(self._counters)])

    def counters(self) -> EngineCounters:
        """Prefix-cache and speculation totals since the engine started (tokens)."""
        return self._counters.read()

    # --- tokens -----------------------------------------------------------------

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_token_ids(self._tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    # --- generation ---------------------------------------------------------------

    async def _one(self, request: GenerationRequest) -> GenerationOutput:
        from vllm.inputs import TokensPrompt

        ids = request.prompt_token_ids or self.tokenize_chat(request.messages)
        params = build_sampling_params(
            request, disable_any_whitespace=self.settings.disable_any_whitespace
        )
        request_id = f"structsum-{next(self._ids)}"
        started = time.perf_counter()
        ttft: float | None = None
        final: Any = None
        async for output in self._llm.generate(
            TokensPrompt(prompt_token_ids=ids), params, request_id
        ):
            if ttft is None and output.outputs and output.outputs[0].token_ids:
                ttft = time.perf_counter() - started
            final = output
            self._progress += 1  # the loop thread alone writes it
        elapsed = time.perf_counter() - started
        completion = final.outputs[0]
        return GenerationOutput(
            text=completion.text,
            prompt_tokens=len(ids),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason,
            elapsed_s=elapsed,
            ttft_s=ttft,
            token_ids=list(completion.token_ids),
        )

    def _generation_errors(self) -> contextlib.AbstractContextManager[None]:
        # vLLM aborts a request whose ``AsyncLLM.generate`` coroutine is cancelled, so
        # no token is generated for a job that gave up.
        return engine_errors()

    @property
    def errored(self) -> bool:
        """vLLM's own flag: the engine core process died or the engine shut down."""
        llm = self._llm
        return llm is None or bool(llm.errored)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prompt prefix, so the next request pays its whole prefill.

        For benchmarks that time a first job after a worker starts more than once.
        """
        with engine_errors():
            self._submit(self._llm.reset_prefix_cache()).result()

    def check_health(self, timeout_s: float = 10.0) -> None:
        with engine_errors():
            self._submit(self._llm.check_health()).result(timeout=timeout_s)

    async def _shutdown(self) -> None:
        """Stop vLLM on its own loop, the task that reads engine outputs first.

        ``AsyncLLM.shutdown`` stops the engine-core process before it cancels its
        output handler; the handler then finds the core gone and logs an
        ``EngineDeadError`` traceback at ERROR level. Cancelled first, it has
        nothing to report. Requests still waiting are cancelled last, so no caller
        waits on a loop that is about to stop.
        """
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        self._llm.shutdown(timeout=ENGINE_STOP_GRACE_S)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Shut vLLM down and stop the loop thread; a second call does nothing."""
        if not self._thread.is_alive():
            return
        try:
            self._submit(self._shutdown()).result(timeout=CLOSE_TIMEOUT_S)
        except Exception:  # closing goes on whatever vLLM raised: the loop must stop
            log.warning(
                "vLLM did not shut down cleanly; stopping its loop anyway",
                exc_info=True,
                extra={"model": self.model_name},
            )
        # Drop the AsyncLLM now: its __del__ shuts down again, which fails noisily
        # when it only runs at interpreter exit, after vLLM's modules are torn down.
        self._llm = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLOSE_TIMEOUT_S)

    def abandon(self) -> None:
        """Let go of an engine whose processes are already gone (killed after a failure).

        A polite shutdown would wait on a dead or stopped engine core; this only drops
        the AsyncLLM (its ``__del__`` would try again at exit) and stops the loop.
        """
        self._llm = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)


_engine: VllmEngine | RemoteEngine | None = None
_engine_lock = threading.Lock()


def load_engine(settings: EngineSettings, cache_dir: Any) -> VllmEngine | RemoteEngine:
    """The process's engine, built on first call (thread-safe); later calls reuse it.

    ``engine.kind`` picks it: vLLM in this process, or a client of a vLLM server.
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            engine_environment()  # before vLLM (and transformers) are first imported
            if settings.kind == "remote":
                from structsum.processors.remote_engine import RemoteEngine

                _engine = RemoteEngine(settings, cache_dir=cache_dir)
            else:
                from structsum.processors.model_store import resolve_model

                _engine = VllmEngine(settings, resolve_model(settings.model, cache_dir))
        return _engine


def loaded_engine() -> VllmEngine | None:
    """The process's engine if one was loaded, without loading one (figures, stats)."""
    with _engine_lock:
        return _engine


def forget_engine() -> None:
    """Abandon the process's engine after its processes were killed (see ``abandon``)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.abandon()
            _engine = None


def close_engine() -> None:
    """Close the process's engine, if one was loaded; safe to call more than once."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.close()
            _engine = None
