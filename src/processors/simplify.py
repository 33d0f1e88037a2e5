"""Turn a template's full JSON Schema into the schema (or regex) the decoder is guided by.

The full schema always validates the result; the decoding schema is a performance
and robustness choice (DESIGN.md §5). So each step below is either *loosening*
(dropping a keyword the backend rejects or that makes decoding slow, which can
never reject output the full schema accepts) or a *listed restriction* (caps,
``additionalProperties: false``, ``required``), recorded in
``SimplifiedSchema.restrictions`` so a caller - and the property tests - can tell
why an output the full schema accepts would not be produced.

Every step is a small pure function ``schema -> (schema, changes)``; none mutates
its input, and running the pipeline twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from structsum.errors import SchemaInvalid
from structsum.processors.guide import Guide
from structsum.processors.policy import SimplifyPolicy
from structsum.processors.schema_refs import LocalRefs, has_refs
from structsum.processors.schema_walk import Schema, map_subschemas, transform, walk
from structsum.processors.verbatim import Path, marked_paths, strip_annotations

Step = Callable[[Schema], tuple[Schema, list["Change"]]]

_LENGTH_BOUNDS = ("minLength", "maxLength")
# The (ref, target) pairs being inlined, outermost first: meeting a target again is recursion.
_RefStack = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Change:
    """One edit of the decoding schema, at a location written like ``$.properties.tags``."""

    action: str
    keyword: str
    location: str
    detail: str = ""
    restrictive: bool = False

    def __str__(self) -> str:
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.action} {self.keyword}{detail} at {self.location}"


@dataclass(frozen=True)
class SimplifiedSchema:
    """What the decoder is guided by, and how it differs from the full schema.

    ``schema`` is the simplified schema in the ``json_schema`` and ``regex`` modes
    (in ``regex`` mode the decoder is guided by ``regex``, built from it); both are
    None in the ``json_object`` and ``none`` modes. ``guide`` turns the mode into
    what the engine is given.
    """

    mode: str
    schema: Schema | None
    regex: str | None
    changes: list[str]
    # (keyword, location) pairs where decoding is stricter than the full schema.
    restrictions: frozenset[tuple[str, str]] = field(default=frozenset())
    # Where verbatim string fields sit in ``schema`` (their annotation stripped): each
    # request replaces them by an enum of its source's sentences (processors/verbatim.py).
    verbatim_paths: tuple[Path, ...] = ()

    @property
    def guide(self) -> Guide | None:
        """The engine constraint of this mode, decided here and nowhere else; None: unguided.

        ``none`` decodes unguided on purpose; a mode without its schema or regex
        (never built by ``simplify_schema``) is unguided too rather than guessed.
        """
        if self.mode == "json_schema" and self.schema is not None:
            return Guide("json", self.schema)
        if self.mode == "regex" and self.regex is not None:
            return Guide("regex", self.regex)
        if self.mode == "json_object":
            return Guide("json_object")
        return None

    @property
    def caps(self) -> str:
        """The length caps the grammar enforces, e.g. ``maxItems 5, maxLength 160-200``.

        Read from the decoding schema itself, so it shows the schema's own caps as well
        as the policy's; ``none`` when the grammar bounds no array or string length.
        """
        if self.guide is None or self.schema is None:
            return "none (no schema in the grammar)"
        found: dict[str, set[int]] = {"maxItems": set(), "maxLength": set()}
        for _, node in walk(self.schema):
            for keyword, values in found.items():
                if isinstance(node.get(keyword), int):
                    values.add(node[keyword])
        shown = [f"{keyword} {_span(values)}" for keyword, values in found.items() if values]
        return ", ".join(shown) or "none"


def _span(values: set[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


# --- what a node is ---------------------------------------------------------------------


def _types(node: Schema) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


def _is_array(node: Schema) -> bool:
    types = _types(node)
    return "array" in types or (not types and ("items" in node or "prefixItems" in node))


def _is_string(node: Schema) -> bool:
    return "string" in _types(node)


def _is_object_with_properties(node: Schema) -> bool:
    types = _types(node)
    return isinstance(node.get("properties"), dict) and (not types or "object" in types)


# --- transformations --------------------------------------------------------------------


def inline_refs(schema: Schema) -> tuple[Schema, list[Change]]:
    """Replace every local ``$ref`` by its target and remove the then unused ``$defs``.

    Some backends handle ``$ref`` poorly and every later step must see the real
    subschema to cap it. Only JSON-pointer references into the same document are
    inlined (resolved by ``referencing``, relative to ``$id``); a remote reference or
    a recursive one raises ``SchemaInvalid`` (recursion cannot be inlined: set
    ``inline_refs = false`` for such schemas).
    """
    body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    if not has_refs(body):
        return copy.deepcopy(schema), []
    changes: list[Change] = []

    def expand(node: Any, location: str, refs: LocalRefs, stack: _RefStack) -> Any:
        if not isinstance(node, dict):
            return node
        if "$dynamicRef" in node:
            raise SchemaInvalid(f"$dynamicRef at {location} is not supported", {})
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return map_subschemas(node, location, lambda sub, at: expand(sub, at, refs, stack))
        found, inner_refs = refs.lookup(ref, location)
        if any(target is found for _, target in stack):
            raise SchemaInvalid(
                f"recursive $ref {ref!r} at {location} cannot be inlined; "
                "set [simplify] inline_refs = false in policy.toml",
                {"ref": ref, "chain": [seen for seen, _ in stack]},
            )
        target = expand(found, location, inner_refs, (*stack, (ref, found)))
        rest = {k: v for k, v in node.items() if k != "$ref"}
        siblings = expand(rest, location, refs, stack)
        changes.append(Change("inlined", "$ref", location, repr(ref)))
        if not isinstance(target, dict) or set(siblings) & set(target):
            # A boolean target or clashing keywords: keep draft 2020-12's "siblings AND target".
            return {**siblings, "allOf": [*siblings.get("allOf", []), target]}
        return {**target, **siblings}

    out = expand(body, "$", LocalRefs.of(schema), ())
    for defs in ("$defs", "definitions"):
        if defs in schema:
            changes.append(Change("removed", defs, "$", "(inlined)"))
    return out, changes


def drop_keywords(schema: Schema, keywords: Iterable[str]) -> tuple[Schema, list[Change]]:
    """Remove the listed keywords from every subschema (loosening only; see policy)."""
    wanted = tuple(keywords)

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        found = [k for k in wanted if k in node]
        for k in found:
            del node[k]
        return node, [Change("dropped", k, path) for k in found]

    return transform(schema, fn)


def unbound_pattern_strings(schema: Schema) -> tuple[Schema, list[Change]]:
    """Drop length bounds from strings that keep a ``pattern`` or ``format``.

    xgrammar cannot combine the two (vLLM refuses such a schema); the pattern or
    format already shapes the string, and the full schema still checks the length.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if not ("pattern" in node or "format" in node):
            return node, []
        found = [k for k in _LENGTH_BOUNDS if k in node]
        for k in found:
            del node[k]
        return node, [Change("dropped", k, path, "(kept pattern/format)") for k in found]

    return transform(schema, fn)


def additional_properties_false(schema: Schema) -> tuple[Schema, list[Change]]:
    """Forbid unlisted keys on objects that list properties and say nothing about others.

    Skipped where ``allOf`` composes objects: a branch with ``additionalProperties:
    false`` would reject the keys its sibling branches define.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if (
            not _is_object_with_properties(node)
            or any(k in node for k in ("additionalProperties", "patternProperties"))
            or any(k in node for k in ("unevaluatedProperties", "allOf"))
            or path.rsplit(".", 1)[-1].startswith("allOf[")
        ):
            return node, []
        node["additionalProperties"] = False
        return node, [Change("set", "additionalProperties", path, "false", restrictive=True)]

    return transform(schema, fn)


def require_all(schema: Schema) -> tuple[Schema, list[Change]]:
    """Make every listed property required, so a small model cannot skip fields."""

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if not _is_object_with_properties(node):
            return node, []
        required = list(node.get("required", []))
        missing = [name for name in node["properties"] if name not in required]
        if not missing:
            return node, []
        node["required"] = required + missing
        return node, [Change("required", "required", path, f"{missing}", restrictive=True)]

    return transform(schema, fn)


def _cap(
    node: Schema, path: str, keyword: str, floor_keyword: str, limit: int, *, replace: bool
) -> list[Change]:
    # Never below the schema's own lower bound: that would make the schema unsatisfiable.
    cap = max(limit, int(node.get(floor_keyword, 0)))
    current = node.get(keyword)
    if current is None:
        node[keyword] = cap
        return [Change("added", keyword, path, str(cap), restrictive=True)]
    if current > cap:
        node[keyword] = cap
        return [Change("tightened", keyword, path, f"{current} -> {cap}", restrictive=True)]
    if replace and current < cap:
        node[keyword] = cap
        return [Change("loosened", keyword, path, f"{current} -> {cap}")]
    return []


def cap_items(
    schema: Schema, max_items: int, *, replace: bool = False
) -> tuple[Schema, list[Change]]:
    """Add or tighten ``maxItems`` on every array so a looping model must stop.

    ``replace=True`` also raises lower caps to ``max_items`` (the policy drops
    ``maxItems`` and caps at once: every array gets exactly this cap).
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if not _is_array(node):
            return node, []
        return node, _cap(node, path, "maxItems", "minItems", max_items, replace=replace)

    return transform(schema, fn)


def cap_strings(
    schema: Schema, max_length: int, *, replace: bool = False
) -> tuple[Schema, list[Change]]:
    """Add or tighten ``maxLength`` on every free string so a looping model must stop.

    Strings with ``enum``/``const`` are already bounded; strings that keep a
    ``pattern``/``format`` are left alone (xgrammar cannot combine them with lengths).
    ``replace`` as in :func:`cap_items`.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if not _is_string(node) or any(k in node for k in ("enum", "const", "pattern", "format")):
            return node, []
        return node, _cap(node, path, "maxLength", "minLength", max_length, replace=replace)

    return transform(schema, fn)


def strip_caps(schema: Schema) -> tuple[Schema, list[Change]]:
    """Remove ``maxItems``/``maxLength`` from the grammar (the GPU fast path, DESIGN.md §5)."""

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        found = [k for k in ("maxItems", "maxLength") if k in node]
        removed = [Change("removed", k, path, str(node.pop(k))) for k in found]
        return node, removed

    return transform(schema, fn)


# --- the pipeline -----------------------------------------------------------------------


def _steps(policy: SimplifyPolicy) -> Sequence[Step]:
    steps: list[Step] = []
    # A cap the policy both drops and sets is *replaced* by the cap step rather than
    # dropped and added again, so that a second run changes nothing (idempotence).
    replaced = {
        keyword
        for keyword, cap in (
            ("maxItems", policy.max_items),
            ("maxLength", policy.max_string_length),
        )
        if cap is not None and keyword in policy.drop_keywords
    }
    drops = [k for k in policy.drop_keywords if k not in replaced]
    if policy.inline_refs:
        steps.append(inline_refs)
    if drops:
        steps.append(lambda s: drop_keywords(s, drops))
    steps.append(unbound_pattern_strings)
    if policy.additional_properties_false:
        steps.append(additional_properties_false)
    if policy.require_all:
        steps.append(require_all)
    if policy.max_items is not None:
        max_items, replace_items = policy.max_items, "maxItems" in replaced
        steps.append(lambda s: cap_items(s, max_items, replace=replace_items))
    if policy.max_string_length is not None:
        max_length, replace_length = policy.max_string_length, "maxLength" in replaced
        steps.append(lambda s: cap_strings(s, max_length, replace=replace_length))
    if policy.strip_caps:
        steps.append(strip_caps)
    return steps


def build_regex(schema: Schema) -> str:
    """The outlines regex equivalent to ``schema`` (for ``mode = "regex"``)."""
    from outlines_core.json_schema import build_regex_from_schema

    try:
        return str(build_regex_from_schema(json.dumps(schema)))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise SchemaInvalid(f"outlines cannot build a regex from the schema: {exc}", {}) from exc


def simplify_schema(schema: Schema, policy: SimplifyPolicy) -> SimplifiedSchema:
    """Run the policy's steps over a copy of ``schema``; the input is never modified."""
    if policy.mode == "none":
        return SimplifiedSchema("none", None, None, ["unguided: decoding is not constrained"])
    if policy.mode == "json_object":
        return SimplifiedSchema("json_object", None, None, ["decoding only requires a JSON object"])
    current: Schema = copy.deepcopy(schema)
    changes: list[Change] = []
    for step in _steps(policy):
        current, made = step(current)
        changes.extend(made)
    # Last: the verbatim marks are noted, then stripped, so no backend ever reads them.
    verbatim_paths = marked_paths(current)
    current, stripped = strip_annotations(current)
    changes.extend(Change("removed", "x-structsum", location) for location in stripped)
    restrictions = frozenset((c.keyword, c.location) for c in changes if c.restrictive)
    regex = build_regex(current) if policy.mode == "regex" else None
    return SimplifiedSchema(
        policy.mode,
        current,
        regex,
        [str(c) for c in changes],
        restrictions,
        verbatim_paths,
    )
