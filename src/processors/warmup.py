"""Warm grammars: compile every template's decoding grammar before the first job.

vLLM compiles a request's grammar when the request arrives (xgrammar and llguidance
keep a compile cache keyed by the schema, in the engine-core process), so without a
warm-up the first job of each template waits for the compile on top of its own
decode. A worker calls ``warm_grammars`` once after its engine loads and before it
consumes: one guided request per distinct decoding schema that a template's guided
attempts use (``[retry] decoding`` may name several), one output token each, all
in one batch, so the compiles run together on vLLM's compile pool.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from structsum.config import Settings
from structsum.processors.engine import Engine, GenerationRequest, Guide
from structsum.processors.policy import DEFAULT_DECODING
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
    # One label per grammar compiled: the template id, plus ":<variant>" for a
    # decoding schema other than [simplify] itself.
    grammars: tuple[str, ...] = ()


def _label(template_id: str, decoding: str) -> str:
    return template_id if decoding == DEFAULT_DECODING else f"{template_id}:{decoding}"


def _guide_key(guide: Guide) -> str:
    """Equal keys compile to the same grammar (vLLM's compile cache is keyed alike)."""
    return json.dumps([guide.kind, guide.value], sort_keys=True, separators=(",", ":"))


def warmup_requests(
    settings: Settings, template_ids: Sequence[str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], list[GenerationRequest]]:
    """One request per distinct guide the templates' guided attempts use.

    Returns the templates warmed, a label per grammar, and the requests. A template
    whose attempts are all unguided (``mode = "none"``, ``guided = [false]``) is skipped,
    and so is a decoding schema with verbatim fields under the settings' profile: each
    request builds its own grammar from its text (processors/verbatim.py), so its own
    grammar is never used and warming it would only cost.
    """
    # Every id the worker can serve: the user's folder and the shipped templates.
    ids = list_templates(settings.template_dirs) if template_ids is None else template_ids
    warmed: list[str] = []
    labels: list[str] = []
    requests: list[GenerationRequest] = []
    seen: set[str] = set()
    for template_id in ids:
        loaded = load_template(settings.template_dirs, template_id, settings.templates)
        template = loaded.for_profile(settings.profile)
        for decoding in template.policy.retry.guided_decodings():
            simplified = template.decodings[decoding]
            guide = simplified.guide
            if guide is None or simplified.verbatim_paths or _guide_key(guide) in seen:
                continue
            seen.add(_guide_key(guide))
            if template_id not in warmed:
                warmed.append(template_id)
            labels.append(_label(template_id, decoding))
            requests.append(
                GenerationRequest(
                    WARMUP_MESSAGES,
                    settings.sampling.summary,
                    guide=guide,
                    temperature=0.0,
                    max_tokens=WARMUP_TOKENS,
                )
            )
    return tuple(warmed), tuple(labels), requests


def warm_grammars(
    engine: Engine, settings: Settings, template_ids: Sequence[str] | None = None
) -> Warmup:
    """Compile the templates' grammars in one batch; errors propagate to the caller."""
    templates, grammars, requests = warmup_requests(settings, template_ids)
    started = time.perf_counter()
    if requests:
        engine.generate(requests)
    warmup = Warmup(templates, time.perf_counter() - started, grammars)
    log.info(
        "%d grammars of %d templates compiled in %.2f s: %s",
        len(grammars),
        len(templates),
        warmup.seconds,
        ", ".join(grammars),
    )
    return warmup
