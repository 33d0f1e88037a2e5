"""Summary: guided JSON decoding against a template, full-schema validation, retries.

Two schemas meet here. The *decoding* schema (simplified per policy) constrains
the tokens; the *full* schema judges the result. Validation is what decides
``valid``; a guided decode only makes validity likely.

A request runs through three stages, each reading one loaded ``Template``:
``prepare`` (enhancement, token budget, condensing, the rendered prompt),
``run_attempts`` (processors/attempts.py: decode, judge, retry per policy) and
``build_result`` (the result, or ``OutputInvalid`` when the policy says so).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from structsum.config import Settings
from structsum.errors import OutputInvalid, TextTooLong
from structsum.models import (
    EnhancementRequest,
    EnhancementResult,
    Grounding,
    SummaryRequest,
    SummaryResult,
    Usage,
)
from structsum.processors.attempts import Outcome, requested_tokens, run_attempts
from structsum.processors.budget import text_allowance
from structsum.processors.condense import condense
from structsum.processors.engine import Engine
from structsum.processors.enhancement import check_length, enhance
from structsum.processors.grounding import grounding
from structsum.processors.prompts import SUMMARY_SYSTEM, language_instruction
from structsum.processors.rendering import render_prompt
from structsum.processors.result_cache import ResultStore, digest, request_key, through_cache
from structsum.processors.templates import Template, load_template
from structsum.processors.verbatim import verbatim_errors


@dataclass(frozen=True)
class Prepared:
    """A request made ready to decode: its messages fit the context with room to answer."""

    messages: list[dict[str, str]]
    chunks: int  # chunks of the first condense round; 1 when nothing was condensed
    usage: Usage  # tokens spent before the summary (condensing)
    enhancement: EnhancementResult | None
    # The request's text as sent: what verbatim fields are copied from and grounding
    # is measured against (the prompt may hold a cleaned-up or condensed version).
    source: str = ""


def settings_fingerprint(settings: Settings, template: Template, model: str) -> str:
    """Identifies what produced a result: model, engine, sampling and the template policy."""
    payload = {
        "model": model,
        "engine": settings.engine.model_dump(mode="json"),
        "sampling": settings.sampling.summary.model_dump(mode="json"),
        "policy": template.policy.model_dump(mode="json"),
        "grounding": settings.grounding.model_dump(mode="json"),
        "schema": template.schema_sha256,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cache_fingerprint(settings: Settings, template: Template, model: str, *, enhance: bool) -> str:
    """What the result cache keys on besides the request: more than the result's fingerprint.

    The budget and condense sampling decide what a long text becomes before the
    summary, the prompt decides what the model reads, and enhancement settings
    matter when the text is enhanced first.
    """
    payload = {
        "result": settings_fingerprint(settings, template, model),
        "budget": settings.budget.model_dump(mode="json"),
        "condense": settings.sampling.condense.model_dump(mode="json"),
        "prompt": template.prompt_source,
        "system": SUMMARY_SYSTEM,
        "enhancement": settings.sampling.enhancement.model_dump(mode="json") if enhance else None,
    }
    return digest(payload)


def _messages(template: Template, request: SummaryRequest, text: str) -> list[dict[str, str]]:
    prompt = render_prompt(
        template, text=text, language=request.language, variables=request.variables
    )
    return [
        {"role": "system", "content": SUMMARY_SYSTEM + language_instruction(request.language)},
        {"role": "user", "content": prompt},
    ]


def _enhanced(
    request: SummaryRequest, *, engine: Engine, settings: Settings
) -> tuple[str, EnhancementResult | None]:
    """The text to summarize: the request's, or its cleaned-up version when asked for."""
    if not request.enhance:
        return request.text, None
    enhancement = enhance(
        EnhancementRequest(text=request.text, language=request.language),
        engine=engine,
        settings=settings,
    )
    return enhancement.text, enhancement


def _text_allowance(
    template: Template, request: SummaryRequest, *, engine: Engine, settings: Settings
) -> int:
    """Tokens of text the rendered prompt can hold and still leave room for the answer."""
    max_model_len = settings.engine.max_model_len
    overhead = len(engine.tokenize_chat(_messages(template, request, "")))
    allowance = text_allowance(
        overhead,
        output_tokens=min(requested_tokens(template, settings), settings.budget.output_reserve),
        max_model_len=max_model_len,
        budget=settings.budget,
    )
    if allowance <= 0:
        raise TextTooLong(
            f"template {template.id!r}: its prompt ({overhead} tokens) and output reserve leave "
            f"no room for text within max_model_len={max_model_len}",
            {"prompt_tokens": overhead, "max_model_len": max_model_len},
            hint="shorten the template's prompt, lower STRUCTSUM_BUDGET__OUTPUT_RESERVE, "
            "or raise STRUCTSUM_ENGINE__MAX_MODEL_LEN",
        )
    return allowance


def prepare(
    template: Template, request: SummaryRequest, *, engine: Engine, settings: Settings
) -> Prepared:
    """Stage 1: enhancement, token budget and condensing, ending in the rendered prompt."""
    check_length(request.text, settings)
    text, enhancement = _enhanced(request, engine=engine, settings=settings)
    allowance = _text_allowance(template, request, engine=engine, settings=settings)
    text, chunks, usage = condense(text, allowance=allowance, engine=engine, settings=settings)
    return Prepared(_messages(template, request, text), chunks, usage, enhancement, request.text)


def build_result(
    template: Template,
    prepared: Prepared,
    outcome: Outcome,
    *,
    engine: Engine,
    settings: Settings,
    started: float,
) -> SummaryResult:
    """Stage 3: the result, or OutputInvalid when no attempt was valid and the policy says so."""
    best = outcome.best
    if not best.valid and template.policy.retry.on_exhausted == "error":
        raise OutputInvalid(
            f"template {template.id!r}: no valid output after {len(outcome.attempts)} attempts",
            {
                "attempts": [a.model_dump(mode="json") for a in outcome.attempts],
                "errors": best.errors,
                "data": best.data,
            },
        )
    return SummaryResult(
        template_id=template.id,
        schema_sha256=template.schema_sha256,
        data=best.data,
        valid=best.valid,
        errors=best.errors,
        attempts=outcome.attempts,
        usage=prepared.usage + outcome.usage,
        elapsed_s=time.perf_counter() - started,
        model=engine.model_name,
        settings_fingerprint=settings_fingerprint(settings, template, engine.model_name),
        chunks=prepared.chunks,
        simplification=list(template.decoding.changes),
        enhancement=prepared.enhancement,
        grounding=summary_grounding(template, best.data, prepared.source, settings=settings),
    )


def summary_grounding(
    template: Template, data: dict[str, Any] | None, source: str, *, settings: Settings
) -> Grounding | None:
    """How much of ``data`` comes from ``source`` (processors/grounding.py); None: no data."""
    if data is None:
        return None
    failed, checked = [], 0
    if template.has_verbatim:
        failed, checked = verbatim_errors(data, template.marked_schema, source)
    return grounding(
        data,
        source,
        schema=template.schema,
        min_chars=settings.grounding.min_word_chars,
        verbatim_checked=checked,
        verbatim_failed=len(failed),
    )


def summarize_template(
    template: Template, request: SummaryRequest, *, engine: Engine, settings: Settings
) -> SummaryResult:
    """Summarize with an already loaded template (``request.template_id`` is not read).

    For callers that hold a template themselves: a template checker, a benchmark
    that edits the policy in memory. The policy's overrides for the settings' profile
    apply here (``Template.for_profile``).
    """
    started = time.perf_counter()
    template = template.for_profile(settings.profile)
    prepared = prepare(template, request, engine=engine, settings=settings)
    outcome = run_attempts(
        template, prepared.messages, engine=engine, settings=settings, source=prepared.source
    )
    return build_result(
        template, prepared, outcome, engine=engine, settings=settings, started=started
    )


def summarize(
    request: SummaryRequest,
    *,
    engine: Engine,
    settings: Settings,
    cache: ResultStore | None = None,
) -> SummaryResult:
    """The public entry (tasks, CLI): load the request's template, then summarize with it.

    With a ``cache``, an identical earlier request (same text, template, variables,
    language and settings) returns its stored result and the engine does nothing;
    only valid summaries are stored.
    """
    template = load_template(settings.template_dirs, request.template_id, settings.templates)
    fingerprint = cache_fingerprint(settings, template, engine.model_name, enhance=request.enhance)
    return through_cache(
        cache,
        settings.cache,
        key=request_key("summary", request, fingerprint),
        model=SummaryResult,
        use_cache=request.use_cache,
        compute=lambda: summarize_template(template, request, engine=engine, settings=settings),
        keep=lambda result: result.valid,
    )
