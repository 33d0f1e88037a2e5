"""What the benchmarks feed the engine: input texts, prompts of a fixed token length,
and the decoding schemas of each template (full and simplified).

The template loader and simplifier of ``structsum.processors`` are imported lazily:
the raw-engine benchmark runs on a GPU machine that carries only what it needs, and
a schema variant that cannot be built is skipped with a note, never faked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Re-exported: the engine benchmark and its tests import them from here.
from structsum.bench.inputs import BUILTIN_TEXT as BUILTIN_TEXT
from structsum.bench.inputs import load_corpus as load_corpus

SYSTEM_PROMPT = (
    "You summarize meeting notes and documents. Answer with one JSON object only, "
    "with the keys: {keys}."
)

VARIANTS = ("full", "simplified", "uncapped")


@dataclass(frozen=True)
class SchemaVariant:
    """One way to guide decoding for a template; ``full_schema`` always judges validity."""

    template_id: str
    name: str  # full | simplified | uncapped
    guide_kind: str  # json | regex | json_object
    guide_value: dict[str, Any] | str | None
    full_schema: dict[str, Any] = field(repr=False)
    changes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.template_id}:{self.name}"


def schema_variants(
    templates_dir: Path, template_ids: Sequence[str], names: Sequence[str]
) -> tuple[list[SchemaVariant], list[str]]:
    """The decoding schemas to benchmark, and notes on what could not be built.

    ``full`` decodes with the template's schema as written; ``simplified`` with the
    schema its policy makes; ``uncapped`` with that policy minus every length cap
    (the measured largest cost on GPUs).
    """
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown schema variants {unknown}; known: {list(VARIANTS)}")
    variants: list[SchemaVariant] = []
    notes: list[str] = []
    for template_id in template_ids:
        full, policy, note = _load_template(templates_dir, template_id)
        if note:
            notes.append(note)
        for name in names:
            if name == "full":
                variants.append(SchemaVariant(template_id, "full", "json", full, full))
                continue
            built = _simplified(full, policy, uncapped=name == "uncapped")
            if isinstance(built, str):
                notes.append(f"{template_id}:{name} skipped: {built}")
                continue
            kind, value, changes = built
            variants.append(SchemaVariant(template_id, name, kind, value, full, changes))
    return variants, notes


def list_template_ids(templates_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in templates_dir.glob("*/schema.json"))


def _load_template(templates_dir: Path, template_id: str) -> tuple[dict[str, Any], Any, str]:
    """(full schema, policy or None, note) through the project's loader when present."""
    try:
        from structsum.processors.templates import load_template
    except ImportError as exc:
        path = templates_dir / template_id / "schema.json"
        schema = json.loads(path.read_text(encoding="utf-8"))
        return schema, None, f"{template_id}: template loader unavailable ({exc}); raw schema.json"
    template = load_template(templates_dir, template_id)
    return template.schema, template.policy, ""


def _simplified(
    full: dict[str, Any], policy: Any, *, uncapped: bool
) -> tuple[str, dict[str, Any] | str | None, list[str]] | str:
    """(guide kind, guide value, changes), or why there is no such variant."""
    if policy is None:
        return "no template policy (loader unavailable)"
    try:
        from structsum.processors.simplify import simplify_schema
    except ImportError as exc:
        return f"simplifier unavailable ({exc})"
    rules = policy.simplify
    if uncapped:
        rules = rules.model_copy(
            update={"strip_caps": True, "max_items": None, "max_string_length": None}
        )
    simplified = simplify_schema(full, rules)
    guide = simplified.guide  # the one place a decoding mode picks its guide
    if guide is None:
        return f"policy mode {simplified.mode!r} decodes unguided"
    return guide.kind, guide.value, list(simplified.changes)


def system_prompt(schema: dict[str, Any] | None) -> str:
    keys = sorted((schema or {}).get("properties", {})) or ["title", "summary"]
    return SYSTEM_PROMPT.format(keys=", ".join(keys))


def fit_prompt(
    *,
    chat_ids: Callable[[list[dict[str, str]]], list[int]],
    decode: Callable[[list[int]], str],
    source_ids: Sequence[int],
    system: str,
    input_len: int,
    offset: int,
) -> list[int]:
    """Chat-formatted prompt ids of about ``input_len`` tokens, text taken at ``offset``.

    Decoding a token window and re-encoding it inside the chat template does not
    round-trip exactly, so the window is corrected a few times; the result is within
    a few tokens of the target and its real length is what the report counts.
    """
    overhead = len(chat_ids(_messages(system, "")))
    room = input_len - overhead
    if room < 8:
        raise ValueError(f"input length {input_len} leaves no room for text ({overhead} overhead)")
    if not source_ids:
        raise ValueError("no source text tokens")
    wanted = room
    ids: list[int] = []
    for _ in range(4):
        window = [source_ids[(offset + i) % len(source_ids)] for i in range(max(wanted, 1))]
        ids = chat_ids(_messages(system, decode(window)))
        error = len(ids) - input_len
        if abs(error) <= 2:
            break
        wanted = max(1, wanted - error)
    return ids


def _messages(system: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def schema_valid(text: str, validator: Any) -> bool:
    """Whether ``text`` is one JSON value that the full schema accepts (not json.loads alone)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False
    return bool(validator.is_valid(data))
