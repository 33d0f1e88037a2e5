"""Warm grammars: compile every template's decoding grammar before the first job.

vLLM compiles a request's grammar when the request arrives (xgrammar and llguidance
keep a compile cache keyed by the schema, in the engine-core process), so without a
warm-up the first job of each template waits for the compile on top of its own
decode. A worker calls ``warm_grammars`` once after its engine loads and before it
consumes: one guided request per template, one output token each, all in one batch,
so the compiles run together on vLLM's compile pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from structsum.config import Settings
from structsum.processors.engine import Engine, GenerationRequest
from structsum.processors.templates import list_templates, load_template

log = logging.getLogger(__name__)

# One output token: enough for vLLM to compile the grammar and fill one mask.
WARMUP_TOKENS = 1
WARMUP_MESSAGES = [{"role": "user", "content": "Answer in JSON."}]


@dataclass(frozen=True)
class Warmup:
    """What the warm-up compiled, for the worker's start log."""

    templates: tuple[str, ...]
    seconds: float


def warmup_requests(
    settings: Settings, template_ids: Sequence[str] | None = None
) -> tuple[tuple[str, ...], list[GenerationRequest]]:
    """One guided request per template whose policy guides decoding (``none`` is skipped)."""
    # Every id the worker can serve: the user's folder and the shipped templates.
    ids = list_templates(settings.template_dirs) if template_ids is None else template_ids
    warmed: list[str] = []
    requests: list[GenerationRequest] = []
    for template_id in ids:
        guide = load_template(
            settings.template_dirs, template_id, settings.templates
        ).decoding.guide
        if guide is None:
            continue
        warmed.append(template_id)
        requests.append(
            GenerationRequest(
                WARMUP_MESSAGES,
                settings.sampling.summary,
                guide=guide,
                temperature=0.0,
                max_tokens=WARMUP_TOKENS,
            )
        )
    return tuple(warmed), requests


def warm_grammars(
    engine: Engine, settings: Settings, template_ids: Sequence[str] | None = None
) -> Warmup:
    """Compile the templates' grammars in one batch; errors propagate to the caller."""
    templates, requests = warmup_requests(settings, template_ids)
    started = time.perf_counter()
    engine.generate(requests)
    warmup = Warmup(templates, time.perf_counter() - started)
    log.info(
        "grammars of %d templates compiled in %.2f s: %s",
        len(templates),
        warmup.seconds,
        ", ".join(templates),
    )
    return warmup
