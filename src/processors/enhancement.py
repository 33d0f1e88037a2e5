"""Enhancement: clean up raw text with the model, no output constraints.

Cleaned text is about as long as its input, so long text is cut into chunks
that leave room for an answer of the same size; the chunks run as one batch.
"""

from __future__ import annotations

import time

from structsum.config import Settings
from structsum.errors import TextTooLong
from structsum.models import EnhancementRequest, EnhancementResult, Usage
from structsum.processors.budget import output_budget
from structsum.processors.chunking import split_text
from structsum.processors.engine import Engine, GenerationRequest
from structsum.processors.prompts import ENHANCE_SYSTEM, language_instruction
from structsum.processors.result_cache import ResultStore, digest, request_key, through_cache


def check_length(text: str, settings: Settings) -> None:
    limit = settings.budget.max_input_chars
    if len(text) > limit:
        raise TextTooLong(
            f"text has {len(text)} characters, the limit is {limit}",
            {"chars": len(text), "limit": limit},
            hint="split the text, or raise STRUCTSUM_BUDGET__MAX_INPUT_CHARS",
        )


def _messages(system: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def cache_fingerprint(settings: Settings, model: str) -> str:
    """What an enhancement's output depends on besides the request (the result cache key)."""
    return digest(
        {
            "model": model,
            "engine": settings.engine.model_dump(mode="json"),
            "sampling": settings.sampling.enhancement.model_dump(mode="json"),
            "budget": settings.budget.model_dump(mode="json"),
            "system": ENHANCE_SYSTEM,
        }
    )


def enhance(
    request: EnhancementRequest,
    *,
    engine: Engine,
    settings: Settings,
    cache: ResultStore | None = None,
) -> EnhancementResult:
    """Clean the text up; with a ``cache``, an identical earlier request is served from it."""
    return through_cache(
        cache,
        settings.cache,
        key=request_key("enhancement", request, cache_fingerprint(settings, engine.model_name)),
        model=EnhancementResult,
        use_cache=request.use_cache,
        compute=lambda: _enhance(request, engine=engine, settings=settings),
    )


def _enhance(
    request: EnhancementRequest, *, engine: Engine, settings: Settings
) -> EnhancementResult:
    started = time.perf_counter()
    check_length(request.text, settings)
    sampling = settings.sampling.enhancement
    budget = settings.budget
    max_model_len = settings.engine.max_model_len
    system = ENHANCE_SYSTEM + language_instruction(request.language)

    overhead = len(engine.tokenize_chat(_messages(system, "")))
    room = max_model_len - overhead - budget.safety_margin
    chunk_tokens = min(sampling.max_tokens, int(room / (1 + budget.enhancement_output_ratio)))
    chunks = split_text(
        request.text.strip(), max_tokens=chunk_tokens, overlap_tokens=0, count=engine.count_tokens
    )
    if len(chunks) > budget.max_chunks:
        raise TextTooLong(
            f"text needs {len(chunks)} chunks, the limit is {budget.max_chunks}",
            {"chunks": len(chunks), "limit": budget.max_chunks},
            hint="split the text, or raise STRUCTSUM_BUDGET__MAX_CHUNKS "
            "(or STRUCTSUM_ENGINE__MAX_MODEL_LEN: larger chunks)",
        )

    requests = []
    for chunk in chunks:
        messages = _messages(system, chunk)
        ids = engine.tokenize_chat(messages)
        wanted = max(
            budget.min_output_tokens,
            int((len(ids) - overhead) * budget.enhancement_output_ratio),
        )
        plan = output_budget(
            len(ids),
            requested=min(sampling.max_tokens, wanted),
            max_model_len=max_model_len,
            budget=budget,
        )
        requests.append(
            GenerationRequest(messages, sampling, max_tokens=plan.max_tokens, prompt_token_ids=ids)
        )
    outputs = engine.generate(requests)

    usage = Usage()
    for output in outputs:
        usage = usage + Usage(
            prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens
        )
    ttfts = [o.ttft_s for o in outputs if o.ttft_s is not None]
    return EnhancementResult(
        text="\n\n".join(o.text.strip() for o in outputs),
        truncated=any(o.truncated for o in outputs),
        usage=usage,
        elapsed_s=time.perf_counter() - started,
        ttft_s=min(ttfts) if ttfts else None,
        model=engine.model_name,
        chunks=len(chunks),
    )
