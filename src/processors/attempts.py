"""The attempt loop: decode, judge against the full schema, retry per the template policy.

Only an invalid answer is retried here (parse or validation errors, truncation);
engine outages propagate to the caller, whose retry layer (Celery) handles them.
Each attempt follows the policy: its temperature, whether it is guided and by
which decoding schema (``[retry] decoding``; the full schema judges every answer).
A retry also sees the rejected answer with its errors, and gets more room after an
answer that ran out of tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from structsum.config import Settings
from structsum.models import Attempt, Usage
from structsum.processors.budget import output_budget
from structsum.processors.engine import Engine, GenerationOutput, GenerationRequest, Guide
from structsum.processors.prompts import RETRY_FEEDBACK
from structsum.processors.repair import drop_duplicate_items
from structsum.processors.schema_registry import SchemaRegistry
from structsum.processors.templates import Template, validate_instance
from structsum.processors.verbatim import request_guide, verbatim_errors

# How many validation errors are shown to the model on a retry; more only adds noise.
_FEEDBACK_ERRORS = 5
ELLIPSIS = "…"


@dataclass(frozen=True)
class Judgement:
    data: dict[str, Any] | None
    errors: list[str]
    repairs: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.data is not None and not self.errors


@dataclass(frozen=True)
class Outcome:
    """Every attempt made, the answer to report, and the tokens all attempts spent."""

    attempts: list[Attempt]
    best: Judgement
    usage: Usage


def _extract_json(text: str) -> str:
    """Unguided answers may wrap the object in prose or fences; take the outer braces."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


def judge(
    output: GenerationOutput,
    schema: dict[str, Any],
    *,
    guided: bool,
    repair_unique_items: bool = False,
    format_checking: bool = True,
    registry: SchemaRegistry | None = None,
) -> Judgement:
    """Parse and validate one answer against the FULL schema; truncation is never valid.

    Raw control characters (a literal newline or tab) inside strings are accepted:
    llguidance's JSON grammar lets them through, strict JSON does not, and the answer
    means the same either way. The result carries the parsed data, re-serialised by
    whoever reads it, so nothing malformed reaches a user (measured on an H200 with the
    bundled model: 5-10% of guided answers failed on this alone).
    """
    raw = output.text if guided else _extract_json(output.text)
    try:
        data = json.loads(raw, strict=False)
    except json.JSONDecodeError as exc:
        reason = "output was cut at max_tokens" if output.truncated else "output is not JSON"
        return Judgement(None, [f"{reason}: {exc.msg} at char {exc.pos}"])
    if not isinstance(data, dict):
        return Judgement(None, [f"output is JSON {type(data).__name__}, not an object"])
    repairs: list[str] = []
    if repair_unique_items:
        data, repairs = drop_duplicate_items(data, schema)
    errors = validate_instance(schema, data, format_checking=format_checking, registry=registry)
    if output.truncated:
        errors = [f"output was cut at max_tokens ({output.completion_tokens} tokens)", *errors]
    return Judgement(data, errors, repairs)


def best_judgement(judgements: list[Judgement]) -> Judgement:
    """The valid answer if any, else the parsed one with the fewest errors."""
    for judgement in judgements:
        if judgement.valid:
            return judgement
    parsed = [j for j in judgements if j.data is not None]
    if parsed:
        return min(parsed, key=lambda j: len(j.errors))
    return judgements[-1]


def shorten(text: str, limit: int) -> str:
    """The first ``limit`` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def retry_feedback(answer: str, errors: list[str], *, answer_chars: int) -> dict[str, str]:
    """The user turn that tells the model what it answered and why that was rejected."""
    shown = "; ".join(errors[:_FEEDBACK_ERRORS])
    content = RETRY_FEEDBACK.format(answer=shorten(answer, answer_chars), errors=shown)
    return {"role": "user", "content": content}


def requested_tokens(template: Template, settings: Settings) -> int:
    """The answer length a template asks for; the budget may give less, never more."""
    return template.policy.max_tokens or settings.sampling.summary.max_tokens


def _decode(
    messages: list[dict[str, str]],
    *,
    guide: Guide | None,
    temperature: float,
    wanted: int,
    engine: Engine,
    settings: Settings,
) -> tuple[GenerationOutput, int]:
    """One budgeted request; returns the output and the max_tokens it was given."""
    ids = engine.tokenize_chat(messages)
    plan = output_budget(
        len(ids),
        requested=wanted,
        max_model_len=settings.engine.max_model_len,
        budget=settings.budget,
    )
    request = GenerationRequest(
        messages,
        settings.sampling.summary,
        guide=guide,
        temperature=temperature,
        max_tokens=plan.max_tokens,
        prompt_token_ids=ids,
    )
    return engine.generate([request])[0], plan.max_tokens


def check_verbatim(judgement: Judgement, template: Template, source: str) -> Judgement:
    """The judgement with an error for each verbatim field not copied from ``source``."""
    if judgement.data is None or not template.has_verbatim:
        return judgement
    errors, _ = verbatim_errors(judgement.data, template.marked_schema, source)
    if not errors:
        return judgement
    return Judgement(judgement.data, [*judgement.errors, *errors], judgement.repairs)


def run_attempts(
    template: Template,
    messages: list[dict[str, str]],
    *,
    engine: Engine,
    settings: Settings,
    source: str | None = None,
) -> Outcome:
    """Decode until an answer is valid or the policy's attempts are spent.

    ``source``: the text the summary is of; with it, verbatim fields are constrained
    to it while decoding and checked against it after (processors/verbatim.py).
    """
    retry = template.policy.retry
    attempts: list[Attempt] = []
    judgements: list[Judgement] = []
    usage = Usage()
    feedback: list[dict[str, str]] = []
    wanted = requested_tokens(template, settings)
    for index in range(retry.attempts):
        decoding, simplified = template.decoding_for(index)
        guide = None
        if retry.guided_for(index):
            # With the source, verbatim fields become enums of its sentences (per request).
            backend = settings.engine.structured_output_backend
            guide = (
                simplified.guide
                if source is None
                else request_guide(simplified, source, settings.grounding, backend)
            )
        temperature = retry.temperature_for(index)
        output, max_tokens = _decode(
            messages + feedback,
            guide=guide,
            temperature=temperature,
            wanted=wanted,
            engine=engine,
            settings=settings,
        )
        judgement = judge(
            output,
            template.schema,
            guided=guide is not None,
            repair_unique_items=retry.repair_unique_items,
            format_checking=template.format_checking,
            registry=template.registry,
        )
        if source is not None:
            judgement = check_verbatim(judgement, template, source)
        judgements.append(judgement)
        attempt = _record(
            index,
            output,
            judgement,
            temperature=temperature,
            decoding=decoding if guide is not None else None,
        )
        attempts.append(attempt)
        usage = usage + attempt.usage
        if judgement.valid:
            break
        if output.truncated:
            wanted = int(max_tokens * retry.truncation_growth)
        if retry.feedback_errors:
            answer_chars = settings.budget.feedback_answer_chars
            feedback = [retry_feedback(output.text, judgement.errors, answer_chars=answer_chars)]
    return Outcome(attempts, best_judgement(judgements), usage)


def _record(
    index: int,
    output: GenerationOutput,
    judgement: Judgement,
    *,
    temperature: float,
    decoding: str | None,
) -> Attempt:
    return Attempt(
        index=index,
        temperature=temperature,
        guided=decoding is not None,
        decoding=decoding,
        finish_reason=output.finish_reason,
        usage=Usage(prompt_tokens=output.prompt_tokens, completion_tokens=output.completion_tokens),
        elapsed_s=output.elapsed_s,
        ttft_s=output.ttft_s,
        valid=judgement.valid,
        errors=judgement.errors,
        repairs=judgement.repairs,
    )
