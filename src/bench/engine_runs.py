"""The raw-engine benchmark's measurement: one AsyncLLM per backend, batches timed per request.

The engine and every request are built by ``structsum.processors.engine``
(``build_engine_args``, ``build_sampling_params``), the same code the service
runs, so the benchmark measures what a worker sends and cannot drift from it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Any, cast

from structsum.bench.stats import RequestSample
from structsum.bench.workload import (
    SchemaVariant,
    fit_prompt,
    load_corpus,
    schema_valid,
    system_prompt,
)
from structsum.config import EngineSettings, SamplingSettings
from structsum.processors.engine import GenerationRequest, build_sampling_params
from structsum.processors.guide import Guide, GuideKind

# Backend name in vLLM -> the module that must be importable for it.
BACKEND_MODULES = {"xgrammar": "xgrammar", "guidance": "llguidance", "outlines": "outlines_core"}
# Finish reasons of requests that vLLM ended without a usable answer.
FAILED_FINISH = ("abort", "error")
# Prompt windows of successive requests start this many tokens apart: different texts,
# so no two requests of a batch share more than the system prompt.
PROMPT_STRIDE = 131
# A CPU engine needs an explicit KV cache; on a GPU, 0 lets vLLM size it.
CPU_KV_CACHE_GIB = 2.0


def installed_backends() -> list[str]:
    return [name for name, module in BACKEND_MODULES.items() if importlib.util.find_spec(module)]


def on_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def engine_settings(args: argparse.Namespace, backend: str) -> EngineSettings:
    """The benchmark's flags as the service's engine settings (one engine-args mapping)."""
    kv_gib = args.kv_cache_gib
    if kv_gib is None:
        kv_gib = 0.0 if on_gpu() else CPU_KV_CACHE_GIB
    return EngineSettings(
        tokenizer=args.tokenizer,
        load_format=args.load_format,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_space_gib=kv_gib,
        enforce_eager=args.enforce_eager,
        enable_prefix_caching=args.enable_prefix_caching,
        seed=args.seed,
        structured_output_backend=cast(Any, backend),
        disable_any_whitespace=args.disable_any_whitespace,
        mask_threads=mask_threads(args, backend),
        mask_batch_size=args.mask_batch_size,
    )


def mask_threads(args: argparse.Namespace, backend: str) -> int:
    """The flag, else what the hardware profile gives a worker on this backend."""
    if args.mask_threads is not None:
        return int(args.mask_threads)
    from structsum.config import get_settings
    from structsum.config.profiles import default_mask_threads

    return default_mask_threads(get_settings().profile, backend)


def variant_guide(variant: SchemaVariant | None) -> Guide | None:
    """The guide a schema variant carries (its kind was chosen by its decoding schema)."""
    if variant is None:
        return None
    return Guide(cast(GuideKind, variant.guide_kind), variant.guide_value)


def bench_request(
    args: argparse.Namespace, variant: SchemaVariant | None, max_tokens: int
) -> GenerationRequest:
    """Unguided: exactly ``max_tokens`` tokens. Guided: up to ``max_tokens``.

    The prompt ids go with each request (``Runner.one``); only sampling lives here.
    Neutral penalties: the arms compare decoding, not sampling choices.
    """
    sampling = SamplingSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=1.0,
        max_tokens=max_tokens,
    )
    guide = variant_guide(variant)
    return GenerationRequest([], sampling, guide=guide, exact_length=guide is None)


def sampling_params(
    args: argparse.Namespace, variant: SchemaVariant | None, max_tokens: int
) -> Any:
    """vLLM's params for one arm, streamed as deltas so that each token can be timed."""
    return build_sampling_params(
        bench_request(args, variant, max_tokens),
        disable_any_whitespace=args.disable_any_whitespace,
        deltas=True,
    )


def chat_ids_fn(tokenizer: Any) -> Any:
    def chat_ids(messages: list[dict[str, str]]) -> list[int]:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    return chat_ids


def build_prompts(
    args: argparse.Namespace, tokenizer: Any, variants: list[SchemaVariant]
) -> tuple[list[list[int]], str]:
    """``max(batch sizes)`` prompts, each a different window of the input texts."""
    texts, source = load_corpus(args.inputs_dir or ())
    source_ids: list[int] = tokenizer.encode("\n\n".join(texts), add_special_tokens=False)
    system = system_prompt(variants[0].full_schema if variants else None)
    prompts = [
        fit_prompt(
            chat_ids=chat_ids_fn(tokenizer),
            decode=lambda ids: str(tokenizer.decode(ids)),
            source_ids=source_ids,
            system=system,
            input_len=args.input_len,
            offset=i * PROMPT_STRIDE,
        )
        for i in range(max(args.batch_sizes))
    ]
    return prompts, source


@dataclass
class _Stream:
    """What the client saw of one streamed request so far (deltas, not cumulative)."""

    started: float
    last: float
    ttft_ms: float | None = None
    tokens: int = 0
    finish: str | None = None
    itl_ms: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def add(self, delta: Any, now: float) -> None:
        count = len(delta.token_ids)
        if count:
            if self.ttft_ms is None:
                self.ttft_ms = (now - self.started) * 1000.0
            else:
                self.itl_ms.extend([(now - self.last) * 1000.0 / count] * count)
            self.last = now
            self.tokens += count
        self.text.append(delta.text)
        self.finish = delta.finish_reason or self.finish

    def sample(self, input_tokens: int, error: str | None, *, itl: bool) -> RequestSample:
        return RequestSample(
            input_tokens=input_tokens,
            output_tokens=self.tokens,
            ttft_ms=self.ttft_ms,
            e2e_ms=(time.perf_counter() - self.started) * 1000.0,
            itl_ms=self.itl_ms if itl else [],
            finish_reason=self.finish,
            error=error,
        )


class Runner:
    """Sends batches to one AsyncLLM and times each request from the client side."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._ids = itertools.count()

    async def one(
        self, prompt: list[int], params: Any, started: float
    ) -> tuple[RequestSample, str]:
        from vllm.inputs import TokensPrompt

        request_id = f"bench-{next(self._ids)}"
        stream = _Stream(started=started, last=started)
        try:
            async for output in self.llm.generate(
                TokensPrompt(prompt_token_ids=prompt), params, request_id
            ):
                stream.add(output.outputs[0], time.perf_counter())
        except Exception as exc:  # a failed request is a result: counted, reported, exit 1
            failure = f"{type(exc).__name__}: {exc}"
            return stream.sample(len(prompt), failure, itl=False), "".join(stream.text)
        # vLLM ends a request whose grammar fails to compile (outlines' regex timeout,
        # say) without raising, with no tokens. That is a failure.
        ok = stream.tokens > 0 and stream.finish not in FAILED_FINISH
        error = None if ok else f"finish={stream.finish}"
        return stream.sample(len(prompt), error, itl=True), "".join(stream.text)

    async def batch(
        self, prompts: list[list[int]], params: Any
    ) -> tuple[list[RequestSample], list[str], float]:
        started = time.perf_counter()
        results = await asyncio.gather(*(self.one(p, params, started) for p in prompts))
        duration = time.perf_counter() - started
        return [r[0] for r in results], [r[1] for r in results], duration


def judge_samples(
    samples: list[RequestSample], texts: list[str], validator: Any
) -> list[RequestSample]:
    """Mark each answered request valid or not against the FULL schema."""
    return [
        s if s.error else replace(s, valid=schema_valid(t, validator))
        for s, t in zip(samples, texts, strict=True)
    ]


async def probe_compile(
    runner: Runner,
    args: argparse.Namespace,
    prompt: list[int],
    variant: SchemaVariant,
    baseline_ms: float,
) -> tuple[float | None, str | None]:
    """First-request overhead of a schema: a 2-token guided request, minus unguided.

    vLLM compiles a grammar when its first request arrives and caches it by schema, so
    this is the compile cost a new template pays once per engine.
    """
    params = sampling_params(args, variant, 2)
    try:
        samples, _, duration = await asyncio.wait_for(
            runner.batch([prompt], params), timeout=args.compile_timeout_s
        )
    except TimeoutError:
        return None, f"first request took over {args.compile_timeout_s:.0f} s (grammar compile)"
    if samples[0].error:
        return None, samples[0].error
    return max(0.0, duration * 1000.0 - baseline_ms), None
