"""Summary: guided JSON decoding against a template, full-schema validation, retries.

Two schemas meet here. The *decoding* schema (simplified per policy) constrains
the tokens; the *full* schema judges the result. Validation is what decides
``valid``; a guided decode only makes validity likely. Retries follow the
template's policy: temperatures and guided/unguided per attempt, the validation
errors fed back, and more room after an answer that ran out of tokens.
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
    Attempt,
    EnhancementRequest,
    EnhancementResult,
    SummaryRequest,
    SummaryResult,
    Usage,
)
from structsum.processors.budget import output_budget, text_allowance
from structsum.processors.chunking import split_text
from structsum.processors.engine import Engine, GenerationOutput, GenerationRequest, Guide
from structsum.processors.enhancement import check_length, enhance
from structsum.processors.prompts import (
    CONDENSE_SYSTEM,
    RETRY_FEEDBACK,
    SUMMARY_SYSTEM,
    language_instruction,
)
from structsum.processors.simplify import SimplifiedSchema
from structsum.processors.templates import Template, load_template, render_prompt, validate_instance

# How many validation errors are shown to the model on a retry; more only adds noise.
_FEEDBACK_ERRORS = 5


@dataclass(frozen=True)
class Judgement:
    data: dict[str, Any] | None
    errors: list[str]

    @property
    def valid(self) -> bool:
        return self.data is not None and not self.errors


def _extract_json(text: str) -> str:
    """Unguided answers may wrap the object in prose or fences; take the outer braces."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


def judge(output: GenerationOutput, schema: dict[str, Any], *, guided: bool) -> Judgement:
    """Parse and validate one answer against the FULL schema; truncation is never valid."""
    raw = output.text if guided else _extract_json(output.text)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        reason = "output was cut at max_tokens" if output.truncated else "output is not JSON"
        return Judgement(None, [f"{reason}: {exc.msg} at char {exc.pos}"])
    if not isinstance(data, dict):
        return Judgement(None, [f"output is JSON {type(data).__name__}, not an object"])
    errors = validate_instance(schema, data)
    if output.truncated:
        errors = [f"output was cut at max_tokens ({output.completion_tokens} tokens)", *errors]
    return Judgement(data, errors)


def settings_fingerprint(settings: Settings, template: Template, model: str) -> str:
    """Identifies what produced a result: model, engine, sampling and the template policy."""
    payload = {
        "model": model,
        "engine": settings.engine.model_dump(mode="json"),
        "sampling": settings.sampling.summary.model_dump(mode="json"),
        "policy": template.policy.model_dump(mode="json"),
        "schema": template.schema_sha256,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _guide(simplified: SimplifiedSchema) -> Guide | None:
    if simplified.mode == "json_schema" and simplified.schema is not None:
        return Guide("json", simplified.schema)
    if simplified.mode == "regex" and simplified.regex is not None:
        return Guide("regex", simplified.regex)
    if simplified.mode == "json_object":
        return Guide("json_object")
    return None


def _summary_messages(prompt: str, language: str | None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SUMMARY_SYSTEM + language_instruction(language)},
        {"role": "user", "content": prompt},
    ]


def condense(
    text: str, *, allowance: int, engine: Engine, settings: Settings
) -> tuple[str, int, Usage]:
    """Map stage: while the text is over ``allowance`` tokens, replace it by chunk notes.

    Returns the text that fits, the number of chunks of the first round (1 when
    nothing was condensed) and the tokens spent.
    """
    budget = settings.budget
    sampling = settings.sampling.condense
    max_model_len = settings.engine.max_model_len
    overhead = len(engine.tokenize_chat(_condense_messages("")))
    chunk_tokens = text_allowance(
        overhead, output_tokens=sampling.max_tokens, max_model_len=max_model_len, budget=budget
    )
    usage = Usage()
    first_round_chunks = 1
    previous_tokens: int | None = None
    for round_index in range(budget.max_condense_rounds):
        tokens = engine.count_tokens(text)
        if tokens <= allowance:
            return text, first_round_chunks, usage
        if previous_tokens is not None and tokens >= previous_tokens:
            raise TextTooLong(
                f"condensing does not shrink the text ({previous_tokens} -> {tokens} tokens)",
                {"tokens": tokens, "allowance": allowance},
            )
        previous_tokens = tokens
        chunks = split_text(
            text,
            max_tokens=chunk_tokens,
            overlap_tokens=budget.chunk_overlap_tokens,
            count=engine.count_tokens,
        )
        if len(chunks) > budget.max_chunks:
            raise TextTooLong(
                f"text needs {len(chunks)} chunks of {chunk_tokens} tokens, "
                f"the limit is {budget.max_chunks}",
                {"chunks": len(chunks), "limit": budget.max_chunks},
            )
        if round_index == 0:
            first_round_chunks = len(chunks)
        requests = [
            GenerationRequest(_condense_messages(chunk), sampling) for chunk in chunks
        ]
        outputs = engine.generate(requests)
        for output in outputs:
            usage = usage + Usage(
                prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens
            )
        text = "\n\n".join(output.text.strip() for output in outputs)
    if engine.count_tokens(text) > allowance:
        raise TextTooLong(
            f"text still exceeds the context after {budget.max_condense_rounds} condense rounds",
            {"rounds": budget.max_condense_rounds},
        )
    return text, first_round_chunks, usage


def _condense_messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": CONDENSE_SYSTEM}, {"role": "user", "content": text}]


def summarize(request: SummaryRequest, *, engine: Engine, settings: Settings) -> SummaryResult:
    started = time.perf_counter()
    template = load_template(settings.template_dirs, request.template_id)
    check_length(request.text, settings)
    policy = template.policy
    sampling = settings.sampling.summary
    max_model_len = settings.engine.max_model_len
    requested_tokens = policy.max_tokens or sampling.max_tokens

    enhancement: EnhancementResult | None = None
    text = request.text
    if request.enhance:
        enhancement = enhance(
            EnhancementRequest(text=text, language=request.language),
            engine=engine,
            settings=settings,
        )
        text = enhancement.text

    def render(body: str) -> list[dict[str, str]]:
        prompt = render_prompt(
            template, text=body, language=request.language, variables=request.variables
        )
        return _summary_messages(prompt, request.language)

    overhead = len(engine.tokenize_chat(render("")))
    allowance = text_allowance(
        overhead,
        output_tokens=min(requested_tokens, settings.budget.output_reserve),
        max_model_len=max_model_len,
        budget=settings.budget,
    )
    if allowance <= 0:
        raise TextTooLong(
            f"template {template.id!r}: its prompt ({overhead} tokens) and output reserve leave "
            f"no room for text within max_model_len={max_model_len}",
            {"prompt_tokens": overhead, "max_model_len": max_model_len},
        )
    text, chunks, usage = condense(text, allowance=allowance, engine=engine, settings=settings)
    messages = render(text)

    simplified = template.decoding
    guide = _guide(simplified)
    attempts: list[Attempt] = []
    judgements: list[Judgement] = []
    feedback: list[dict[str, str]] = []
    wanted = requested_tokens
    for index in range(policy.retry.attempts):
        guided = guide is not None and policy.retry.guided_for(index)
        attempt_messages = messages + feedback
        ids = engine.tokenize_chat(attempt_messages)
        plan = output_budget(
            len(ids), requested=wanted, max_model_len=max_model_len, budget=settings.budget
        )
        temperature = policy.retry.temperature_for(index)
        output = engine.generate(
            [
                GenerationRequest(
                    attempt_messages,
                    sampling,
                    guide=guide if guided else None,
                    temperature=temperature,
                    max_tokens=plan.max_tokens,
                    prompt_token_ids=ids,
                )
            ]
        )[0]
        judgement = judge(output, template.schema, guided=guided)
        judgements.append(judgement)
        attempt_usage = Usage(
            prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens
        )
        usage = usage + attempt_usage
        attempts.append(
            Attempt(
                index=index,
                temperature=temperature,
                guided=guided,
                finish_reason=output.finish_reason,
                usage=attempt_usage,
                elapsed_s=output.elapsed_s,
                ttft_s=output.ttft_s,
                valid=judgement.valid,
                errors=judgement.errors,
            )
        )
        if judgement.valid:
            break
        if output.truncated:
            wanted = int(plan.max_tokens * policy.retry.truncation_growth)
        if policy.retry.feedback_errors:
            shown = "; ".join(judgement.errors[:_FEEDBACK_ERRORS])
            feedback = [{"role": "user", "content": RETRY_FEEDBACK.format(errors=shown)}]

    best = _best(judgements)
    if not best.valid and policy.retry.on_exhausted == "error":
        raise OutputInvalid(
            f"template {template.id!r}: no valid output after {len(attempts)} attempts",
            {
                "attempts": [a.model_dump(mode="json") for a in attempts],
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
        attempts=attempts,
        usage=usage,
        elapsed_s=time.perf_counter() - started,
        model=engine.model_name,
        settings_fingerprint=settings_fingerprint(settings, template, engine.model_name),
        chunks=chunks,
        simplification=list(simplified.changes),
        enhancement=enhancement,
    )


def _best(judgements: list[Judgement]) -> Judgement:
    """The valid answer if any, else the parsed one with the fewest errors."""
    for judgement in judgements:
        if judgement.valid:
            return judgement
    parsed = [j for j in judgements if j.data is not None]
    if parsed:
        return min(parsed, key=lambda j: len(j.errors))
    return judgements[-1]
