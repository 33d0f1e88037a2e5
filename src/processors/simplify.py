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

from referencing import Registry

from structsum.errors import SchemaInvalid
from structsum.processors.bounded_regex import FORMAT_PATTERNS, bound_repetition
from structsum.processors.guide import Guide
from structsum.processors.policy import SimplifyPolicy
from structsum.processors.schema_refs import LocalRefs, has_refs
from structsum.processors.schema_walk import Schema, map_subschemas, transform, walk
from structsum.processors.verbatim import Path, marked_paths, strip_annotations

Step = Callable[[Schema], tuple[Schema, list["Change"]]]

_LENGTH_BOUNDS = ("minLength", "maxLength")
# Keywords that describe an instance without constraining it.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly"}
)
# What identifies a schema document rather than constrains an instance.
_DOCUMENT_KEYWORDS = frozenset({"$schema", "$id"})
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


def inline_refs(
    schema: Schema,
    max_depth: int = 0,
    *,
    max_inlined: int | None = None,
    registry: Registry[Any] | None = None,
) -> tuple[Schema, list[Change]]:
    """Replace every local ``$ref`` by its target and remove the then unused ``$defs``.

    Some backends handle ``$ref`` poorly and every later step must see the real
    subschema to cap it. Only JSON-pointer references into the same document are
    inlined (resolved by ``referencing``, relative to ``$id``); a remote reference
    raises ``SchemaInvalid`` unless ``registry`` (a local schema registry's 2020-12
    copies, schema_registry.py) holds its document. A recursive reference (a tree, a
    comment thread) is expanded ``max_depth`` times and then replaced by ``false``:
    the decoder cannot nest deeper, the full schema still validates every level. With ``max_depth``
    0 recursion raises ``SchemaInvalid``. Inlining can multiply a schema (a
    definition used twice in a definition used twice...): past ``max_inlined``
    inlined references it stops with ``SchemaInvalid`` instead of running for minutes.
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
        depth = sum(target is found for _, target in stack)
        if depth and depth >= max_depth:
            if max_depth:
                changes.append(
                    Change("depth-limited", "$ref", location, f"{ref!r} at {depth}", True)
                )
                return False
            raise SchemaInvalid(
                f"recursive $ref {ref!r} at {location} cannot be inlined; "
                "set [simplify] max_ref_depth or inline_refs = false in policy.toml",
                {"ref": ref, "chain": [seen for seen, _ in stack]},
            )
        if max_inlined is not None and len(changes) > max_inlined:
            raise SchemaInvalid(
                f"inlining $ref expands the schema past {max_inlined} references "
                f"(at {location}); set [simplify] inline_refs = false or a lower max_ref_depth",
                {"ref": ref, "max_inlined_refs": max_inlined},
            )
        target = expand(found, location, inner_refs, (*stack, (ref, found)))
        if isinstance(target, dict) and ref.split("#", 1)[0]:
            # A registry document's root: its refs are resolved, its identity stays there.
            target = {k: v for k, v in target.items() if k not in _DOCUMENT_KEYWORDS}
        rest = {k: v for k, v in node.items() if k not in ("$ref", "$schema")}
        siblings = expand(rest, location, refs, stack)
        changes.append(Change("inlined", "$ref", location, repr(ref)))
        if max_inlined is not None and len(changes) > max_inlined:
            raise SchemaInvalid(
                f"inlining $ref expands the schema past {max_inlined} references "
                f"(at {location}); set [simplify] inline_refs = false or a lower max_ref_depth",
                {"ref": ref, "max_inlined_refs": max_inlined},
            )
        if not isinstance(target, dict) or set(siblings) & set(target):
            # A boolean target or clashing keywords: keep draft 2020-12's "siblings AND target".
            return {**siblings, "allOf": [*siblings.get("allOf", []), target]}
        return {**target, **siblings}

    out = expand(body, "$", LocalRefs.of(schema, registry), ())
    if any(c.action == "depth-limited" for c in changes):
        pruned = _prune_false(out, "$")
        out = pruned if isinstance(pruned, dict) else out
    for defs in ("$defs", "definitions"):
        if defs in schema:
            changes.append(Change("removed", defs, "$", "(inlined)"))
    return out, changes


def _prune_false(node: Any, path: str) -> Any:
    """Remove what a depth limit made unsatisfiable, children first.

    xgrammar refuses a ``false`` schema in a property or an ``anyOf``/``oneOf`` branch
    ("cannot accept any value"). A branch that is ``false`` goes; an ``anyOf`` left
    with none, or an object whose required property is ``false``, becomes ``false``
    for its parent to drop in turn; an optional ``false`` property goes; an array of
    ``false`` items loses its ``minItems``. The decoder produces the same outputs.
    """
    if not isinstance(node, dict):
        return node
    node = map_subschemas(node, path, _prune_false)
    for keyword in ("anyOf", "oneOf"):
        branches = node.get(keyword)
        if isinstance(branches, list) and any(b is False for b in branches):
            kept = [b for b in branches if b is not False]
            if not kept:
                return False
            node[keyword] = kept
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = set(node.get("required", []))
        if any(v is False for k, v in properties.items() if k in required):
            return False
        node["properties"] = {k: v for k, v in properties.items() if v is not False}
    if node.get("items") is False and not node.get("prefixItems") and "minItems" in node:
        del node["minItems"]  # an array of cut items can only be empty
    return node


def inline_refs_bounded(
    schema: Schema, max_depth: int, *, max_inlined: int, registry: Registry[Any] | None = None
) -> tuple[Schema, list[Change]]:
    """:func:`inline_refs`, recursing less deep where ``max_depth`` passes the budget.

    Mutually recursive definitions (an expression language) multiply at each level;
    one level less is still a decoding schema, where the full schema validates all.
    """
    for depth in range(max_depth, 0, -1):
        try:
            out, changes = inline_refs(schema, depth, max_inlined=max_inlined, registry=registry)
        except SchemaInvalid as exc:
            if "max_inlined_refs" in exc.details and depth > 1:
                continue
            raise
        if depth < max_depth:
            changes.append(Change("lowered", "max_ref_depth", "$", f"{max_depth} -> {depth}", True))
        return out, changes
    return inline_refs(schema, 0, max_inlined=max_inlined, registry=registry)


def drop_keywords(schema: Schema, keywords: Iterable[str]) -> tuple[Schema, list[Change]]:
    """Remove the listed keywords from every subschema (loosening only; see policy)."""
    wanted = tuple(keywords)

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        found = [k for k in wanted if k in node]
        for k in found:
            del node[k]
        return node, [Change("dropped", k, path) for k in found]

    return transform(schema, fn)


def drop_formats_except(schema: Schema, kept: frozenset[str]) -> tuple[Schema, list[Change]]:
    """Drop every ``format`` the grammar backend cannot build (loosening only).

    vLLM refuses a whole schema for xgrammar over one unknown format (``semver``,
    ``color``); validation still checks the formats jsonschema knows.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        fmt = node.get("format")
        if fmt is None or fmt in kept:
            return node, []
        del node["format"]
        return node, [Change("dropped", "format", path, f"{fmt!r} (not in grammar_formats)")]

    return transform(schema, fn)


_MERGED = ("properties", "required")


# Combinators a variant may have beside its base's: the base is passed on into theirs.
_NESTED = ("anyOf", "oneOf")


def _mergeable(node: Schema, branch: Schema, also: tuple[str, ...] = ()) -> bool:
    """Whether ``branch`` can be merged into ``node``: only properties/required (and
    the keywords in ``also``) overlap."""
    return not (set(node) & set(branch)) - {*_MERGED, *also}


def _merge_into(node: Schema, branch: Schema) -> None:
    """``node`` AND ``branch`` in one object: properties united (``node``'s win on a
    name both define, which can only restrict decoding), required united."""
    for key, value in branch.items():
        if key == "properties" and isinstance(node.get(key), dict):
            node[key] = {**value, **node[key]}
        elif key == "required" and isinstance(node.get(key), list):
            node[key] = list(dict.fromkeys([*node[key], *value]))
        else:
            node[key] = value


def grammar_compatible(schema: Schema) -> tuple[Schema, list[Change]]:
    """Reshape what vLLM refuses for xgrammar although the grammar could do without it.

    - ``allOf`` branches that constrain nothing (``{}``, ``true``, annotations; what dropping
      ``if``/``then`` leaves) are removed, and an ``allOf`` of one branch is merged
      into its node when no keyword clashes: vLLM refuses any ``allOf`` of 2+ branches.
    - ``patternProperties`` beside ``properties`` (refused together) is removed: the
      decoder then writes only the listed keys, a listed restriction.

    And what llguidance (the GPU profile's backend) refuses, measured on the H100 with
    the BYOS corpus (its grammar errors failed 3 of 53 schemas): each change below only
    widens what decoding accepts, and the full schema still validates the result.

    - ``oneOf`` becomes ``anyOf`` (llguidance: "oneOf constraints are not supported").
    - ``unevaluatedProperties`` is dropped ("Unimplemented keys").
    - ``minProperties``/``maxProperties`` are dropped from an object whose listed
      properties are not all required ("only supported when all keys listed in
      properties are required").
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        changes: list[Change] = []
        branches = node.get("allOf")
        if isinstance(branches, list):
            kept = [
                b
                for b in branches
                if b is not True and not (isinstance(b, dict) and set(b) <= _ANNOTATIONS)
            ]
            if len(kept) < len(branches):
                changes.append(
                    Change("dropped", "allOf", path, f"{len(branches) - len(kept)} empty branches")
                )
            if not kept:
                del node["allOf"]
            elif len(kept) == 1 and isinstance(kept[0], dict) and _mergeable(node, kept[0]):
                del node["allOf"]
                _merge_into(node, kept[0])
                changes.append(Change("merged", "allOf", path, "one branch"))
            else:
                node["allOf"] = kept
        for keyword in ("anyOf", "oneOf"):
            variants = node.get(keyword)
            if (
                isinstance(variants, list)
                and isinstance(node.get("properties"), dict)
                and all(isinstance(v, dict) and _mergeable(v, node, _NESTED) for v in variants)
            ):
                # xgrammar follows the variant and forgets the base's own properties and
                # required: give each variant the base's (base AND variant, as written).
                # A variant with variants of its own passes them on when it is visited.
                base = {k: node.pop(k) for k in ("properties", "required") if k in node}
                merged = []
                for variant in variants:
                    combined = dict(variant)
                    _merge_into(combined, base)
                    merged.append(combined)
                node[keyword] = merged
                changes.append(Change("distributed", "properties", path, f"into {keyword}"))
        if isinstance(node.get("patternProperties"), dict) and "properties" in node:
            del node["patternProperties"]
            changes.append(
                Change(
                    "dropped", "patternProperties", path, "(beside properties)", restrictive=True
                )
            )
        changes.extend(_guidance_compatible(node, path))
        return node, changes

    return transform(schema, fn)


def _guidance_compatible(node: Schema, path: str) -> list[Change]:
    """The llguidance reshapes of :func:`grammar_compatible`, on one node."""
    changes: list[Change] = []
    if isinstance(node.get("oneOf"), list) and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
        changes.append(Change("replaced", "oneOf", path, "by anyOf"))
    if "unevaluatedProperties" in node:
        del node["unevaluatedProperties"]
        changes.append(Change("dropped", "unevaluatedProperties", path))
    listed = node.get("properties")
    if isinstance(listed, dict) and not set(listed) <= set(node.get("required") or []):
        for keyword in ("minProperties", "maxProperties"):
            if keyword in node:
                del node[keyword]
                changes.append(Change("dropped", keyword, path, "(optional properties)"))
    return changes


# What a value with no constraint at all is decoded as: a capped scalar (any scalar is
# valid where the full schema allows anything).
_FREE_VALUE_TYPES = ["string", "number", "boolean", "null"]
# Keywords that make a node more than "any JSON value".
_CONSTRAINING = frozenset(
    {
        "type", "enum", "const", "$ref", "anyOf", "oneOf", "allOf", "properties",
        "patternProperties", "additionalProperties", "items", "prefixItems", "pattern",
        "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
        "maxLength", "minItems", "maxItems", "required", "minProperties", "maxProperties",
    }
)  # fmt: skip


def bound_free_json(schema: Schema, max_items: int, max_length: int) -> tuple[Schema, list[Change]]:
    """Bound what a schema leaves free, so a small model must stop (listed restrictions).

    Property names of maps (objects without ``properties``) are free strings and their
    count is unbounded; a value with no constraint is any JSON. Maps get
    ``maxProperties`` and keys of at most ``max_length`` characters (a
    ``patternProperties`` of the values' schema); free values become capped
    scalars; an untyped root becomes an object (a summary is one).
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        changes: list[Change] = []
        if path == "$" and "type" not in node and not set(node) & {"anyOf", "oneOf", "allOf"}:
            node["type"] = "object"
            changes.append(Change("set", "type", path, "object", restrictive=True))
        if path != "$" and not set(node) & _CONSTRAINING:
            node["type"] = list(_FREE_VALUE_TYPES)
            changes.append(Change("set", "type", path, "a scalar (any JSON)", restrictive=True))
            return node, changes
        is_map = (
            "object" in _types(node)
            and not set(node) & {"anyOf", "oneOf", "allOf", "$ref"}
            and not isinstance(node.get("properties"), dict)
        )
        # Keys matched by patternProperties are as free as any other map's.
        if not is_map or (
            node.get("additionalProperties") is False and not node.get("patternProperties")
        ):
            return node, changes
        if node.get("additionalProperties", True) is True:
            node["additionalProperties"] = {"type": list(_FREE_VALUE_TYPES)}
            changes.append(Change("set", "additionalProperties", path, "scalars", True))
        if node.get("maxProperties", max_items + 1) > max_items:
            node["maxProperties"] = max(max_items, int(node.get("minProperties", 0)))
            changes.append(Change("added", "maxProperties", path, str(max_items), True))
        if "patternProperties" not in node and "propertyNames" not in node:
            # The key bound as a pattern of the values' schema, not as propertyNames:
            # llguidance (the GPU profile's backend) refuses propertyNames, and that
            # failed 30 of the corpus's 53 good schemas on an H100; both backends
            # build patternProperties on a map.
            values = node.get("additionalProperties", {})
            node["patternProperties"] = {f"^.{{1,{max_length}}}$": values}
            node["additionalProperties"] = False
            changes.append(Change("bounded", "property names", path, f"to {max_length}", True))
        return node, changes

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


def format_patterns(schema: Schema) -> tuple[Schema, list[Change]]:
    """Decode a ``format`` string by a bounded regex of that format (a listed restriction).

    xgrammar's grammars for ``uri``, ``email``, ``hostname``, ``date-time`` ... accept
    strings of any length, and a small model may never close one (issue 16). Each
    regex of ``bounded_regex.FORMAT_PATTERNS`` accepts a subset of its format; a
    string that has a ``pattern`` as well keeps the pattern and the format goes
    (loosening: the full schema still checks the format).
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        fmt = node.get("format")
        if not isinstance(fmt, str) or fmt not in FORMAT_PATTERNS:
            return node, []
        del node["format"]
        if "pattern" in node:
            return node, [Change("dropped", "format", path, f"{fmt!r} (beside a pattern)")]
        node["pattern"] = FORMAT_PATTERNS[fmt]
        return node, [Change("replaced", "format", path, f"{fmt!r} by a bounded pattern", True)]

    return transform(schema, fn)


def bound_patterns(schema: Schema, max_length: int) -> tuple[Schema, list[Change]]:
    """Bound the repetition in every ``pattern`` so its string ends (a listed restriction).

    The unbounded quantifiers share ``max_length`` characters (or the string's own
    smaller ``maxLength``): ``^\\d+(\\.\\d+)?x$`` decodes as
    ``^\\d{1,30}(\\.\\d{1,30})?x$``. xgrammar cannot combine a pattern with a length
    bound, so the bound goes into the regex. A string whose ``minLength`` is above
    the budget keeps its pattern as it is.
    """

    def strings(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        pattern = node.get("pattern")
        if not isinstance(pattern, str):
            return node, []
        own = node.get("maxLength")
        budget = min(max_length, own) if isinstance(own, int) and own > 0 else max_length
        if int(node.get("minLength", 0)) > budget:
            return node, []
        bounded = bound_repetition(pattern, budget)
        if bounded == pattern:
            return node, []
        node["pattern"] = bounded
        return node, [Change("bounded", "pattern", path, f"-> {bounded!r}", restrictive=True)]

    def keys(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        # The keys of patternProperties are property-name patterns: bounded the same way.
        named = node.get("patternProperties")
        if not isinstance(named, dict):
            return strings(node, path)
        renamed = {bound_repetition(key, max_length): value for key, value in named.items()}
        node, changes = strings(node, path)
        if len(renamed) == len(named) and list(renamed) != list(named):
            node["patternProperties"] = renamed
            changes.append(Change("bounded", "patternProperties", path, str(list(renamed)), True))
        return node, changes

    return transform(schema, keys)


_NUMBER_BOUNDS = (("minimum", "exclusiveMinimum", -1), ("maximum", "exclusiveMaximum", 1))


def bound_numbers(schema: Schema, limit: int) -> tuple[Schema, list[Change]]:
    """Give every number a ``minimum`` and ``maximum`` it lacks (a listed restriction).

    xgrammar's grammar for an unbounded number accepts any count of digits (a small
    model can write ``1111...`` until ``max_tokens``); with both bounds it writes a
    range with a few decimals. A side the schema bounds keeps its own bound.
    """

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if not _types(node) & {"integer", "number"} or "enum" in node or "const" in node:
            return node, []
        changes: list[Change] = []
        for keyword, exclusive, sign in _NUMBER_BOUNDS:
            if keyword in node or exclusive in node:
                continue
            other = next(
                (node[k] for k in ("maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum")
                 if isinstance(node.get(k), (int, float)) and not isinstance(node[k], bool)),
                0,
            )  # fmt: skip
            # Far enough beyond the other side's bound that the range is never empty.
            node[keyword] = sign * limit + (other if sign * other > 0 else 0)
            changes.append(Change("added", keyword, path, str(node[keyword]), restrictive=True))
        return node, changes

    return transform(schema, fn)


def _variant_objects(schema: Schema) -> set[str]:
    """Locations of objects that list properties beside ``anyOf``/``oneOf`` variants, and
    of those variants: the keys of one are allowed by the other."""
    found: set[str] = set()
    for location, node in walk(schema):
        if not isinstance(node.get("properties"), dict):
            continue
        for keyword in ("anyOf", "oneOf"):
            branches = node.get(keyword)
            if isinstance(branches, list):
                found.add(location)
                found.update(f"{location}.{keyword}[{i}]" for i in range(len(branches)))
    return found


def additional_properties_false(schema: Schema) -> tuple[Schema, list[Change]]:
    """Forbid unlisted keys on objects that list properties and say nothing about others.

    Skipped where ``allOf``/``anyOf``/``oneOf`` compose objects: a branch with
    ``additionalProperties: false`` would reject the keys the base or its sibling
    branches define (real schemas put shared keys beside a ``oneOf`` of variants).
    """

    open_variants = _variant_objects(schema)

    def fn(node: Schema, path: str) -> tuple[Schema, list[Change]]:
        if (
            not _is_object_with_properties(node)
            or any(k in node for k in ("additionalProperties", "patternProperties"))
            or any(k in node for k in ("unevaluatedProperties", "allOf"))
            or path.rsplit(".", 1)[-1].startswith("allOf[")
            or path in open_variants
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
        if "items" not in node and "prefixItems" not in node:
            # xgrammar 0.2 with maxItems and no items accepts only [] (measured): say
            # "any item" explicitly, which means the same.
            node["items"] = {}
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


def _steps(policy: SimplifyPolicy, registry: Registry[Any] | None = None) -> Sequence[Step]:
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
        depth, budget = policy.max_ref_depth, policy.max_inlined_refs
        steps.append(lambda s: inline_refs_bounded(s, depth, max_inlined=budget, registry=registry))
    if drops:
        steps.append(lambda s: drop_keywords(s, drops))
    if policy.grammar_formats is not None:
        formats = frozenset(policy.grammar_formats)
        steps.append(lambda s: drop_formats_except(s, formats))
    if policy.grammar_compatible:
        steps.append(grammar_compatible)
    if policy.format_patterns:
        steps.append(format_patterns)
    if policy.bound_patterns and policy.max_string_length is not None:
        pattern_budget = policy.max_string_length
        steps.append(lambda s: bound_patterns(s, pattern_budget))
    steps.append(unbound_pattern_strings)
    if policy.additional_properties_false:
        steps.append(additional_properties_false)
    if policy.require_all:
        steps.append(require_all)
    if policy.bound_free_json and policy.max_items and policy.max_string_length:
        free_items, free_length = policy.max_items, policy.max_string_length
        steps.append(lambda s: bound_free_json(s, free_items, free_length))
    if policy.max_items is not None:
        max_items, replace_items = policy.max_items, "maxItems" in replaced
        steps.append(lambda s: cap_items(s, max_items, replace=replace_items))
    if policy.max_string_length is not None:
        max_length, replace_length = policy.max_string_length, "maxLength" in replaced
        steps.append(lambda s: cap_strings(s, max_length, replace=replace_length))
    if policy.max_number is not None:
        number_limit = policy.max_number
        steps.append(lambda s: bound_numbers(s, number_limit))
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


def simplify_schema(
    schema: Schema, policy: SimplifyPolicy, registry: Registry[Any] | None = None
) -> SimplifiedSchema:
    """Run the policy's steps over a copy of ``schema``; the input is never modified.

    ``registry``: a local schema registry's 2020-12 copies, which remote ``$ref`` to
    its files are inlined from (schema_registry.py); None refuses remote ``$ref``.
    """
    if policy.mode == "none":
        return SimplifiedSchema("none", None, None, ["unguided: decoding is not constrained"])
    if policy.mode == "json_object":
        return SimplifiedSchema("json_object", None, None, ["decoding only requires a JSON object"])
    current: Schema = copy.deepcopy(schema)
    changes: list[Change] = []
    for step in _steps(policy, registry):
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
