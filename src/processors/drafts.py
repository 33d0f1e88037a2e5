"""JSON Schema drafts 4, 6, 7, 2019-09 and 2020-12: which one a schema declares, and a
2020-12 copy of it for the decoder.

Teams bring schemas they already have, and most real-world schemas declare an
older draft. The full schema keeps its own draft: results are validated by that
draft's validator (``validator_class``), so ``exclusiveMinimum: true`` or a tuple
``items`` mean what their author meant. The grammar backends read 2020-12, so the
decoding schema is built from :func:`normalise`, a copy translated keyword by
keyword. Every translation is exact (the copy accepts the same instances), and
each one is reported as a :class:`~structsum.processors.simplify.Change` so that
``structsum templates show`` can list them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
)
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from structsum.errors import SchemaInvalid
from structsum.processors.schema_walk import SCHEMA_LISTS, SCHEMA_MAPS, Schema, json_path, walk
from structsum.processors.simplify import Change

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Draft:
    """One JSON Schema draft: its name, its metaschema URI and its validator."""

    name: str
    uri: str
    validator_class: type[Validator]

    @property
    def legacy(self) -> bool:
        """Drafts 4 to 7: ``$ref`` overrides its siblings and ``definitions`` is the convention."""
        return self.name in ("draft-04", "draft-06", "draft-07")


DRAFTS: tuple[Draft, ...] = (
    Draft("draft-04", "http://json-schema.org/draft-04/schema", Draft4Validator),
    Draft("draft-06", "http://json-schema.org/draft-06/schema", Draft6Validator),
    Draft("draft-07", "http://json-schema.org/draft-07/schema", Draft7Validator),
    Draft("2019-09", "https://json-schema.org/draft/2019-09/schema", Draft201909Validator),
    Draft("2020-12", DRAFT_2020_12, Draft202012Validator),
)
DEFAULT_DRAFT = DRAFTS[-1]

# Keywords that stay beside a draft 4-7 ``$ref``: definitions other refs point into,
# identifiers and annotations. Every other sibling is ignored by those drafts.
_REF_SIBLINGS_KEPT = frozenset(
    {"$ref", "definitions", "$defs", "$schema", "$id", "id", "title", "description", "$comment"}
)


def _key(uri: str) -> str:
    """``http://json-schema.org/draft-07/schema#`` and its https/no-# spellings match."""
    return uri.strip().rstrip("#").removeprefix("https://").removeprefix("http://")


_BY_URI = {_key(d.uri): d for d in DRAFTS}


def declared_draft(schema: Schema) -> Draft:
    """The draft ``$schema`` names, or 2020-12 when none is named; unknown ones are refused."""
    declared = schema.get("$schema")
    if declared is None:
        return DEFAULT_DRAFT
    draft = _BY_URI.get(_key(declared)) if isinstance(declared, str) else None
    if draft is None:
        known = ", ".join(d.uri for d in DRAFTS)
        raise SchemaInvalid(
            f"$schema {declared!r} is not a supported JSON Schema draft (supported: {known})",
            {"schema": str(declared)},
        )
    return draft


# --- normalisation ----------------------------------------------------------------------


def normalise(schema: Schema, draft: Draft) -> tuple[Schema, list[Change]]:
    """A draft 2020-12 copy of ``schema`` that accepts exactly what ``schema`` accepts.

    ``schema`` is not modified. For a 2020-12 schema the copy is equal to it.
    """
    out = copy.deepcopy(schema)
    changes: list[Change] = []
    if draft is DEFAULT_DRAFT:
        return out, changes
    # `walk` descends into a node after yielding it, so it sees the translated keywords
    # (subschemas under `prefixItems`, `dependentSchemas`).
    for location, node in walk(out):
        changes.extend(_normalise_node(node, location, draft))
    out["$schema"] = DRAFT_2020_12
    changes.append(Change("set", "$schema", "$", f"{draft.name} -> 2020-12"))
    return out, changes


def _normalise_node(node: Schema, location: str, draft: Draft) -> list[Change]:
    """Translate one schema object in place (its subschemas are visited on their own)."""
    changes: list[Change] = []
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        rewritten = rewrite_pointer(ref)
        if rewritten != ref:
            node["$ref"] = rewritten
            changes.append(Change("rewrote", "$ref", location, f"{ref!r} -> {rewritten!r}"))
    if draft.legacy and "$ref" in node:
        ignored = sorted(k for k in node if k not in _REF_SIBLINGS_KEPT)
        for k in ignored:
            del node[k]
        if ignored:
            changes.append(
                Change("dropped", "$ref siblings", location, f"{ignored} ({draft.name} ignores)")
            )
    if "definitions" in node and isinstance(node["definitions"], dict):
        node.setdefault("$defs", {}).update(node.pop("definitions"))
        changes.append(Change("renamed", "definitions", location, "-> $defs"))
    if draft.name == "draft-04" and isinstance(node.get("id"), str):
        identifier = node.pop("id")
        if identifier.startswith("#"):  # a draft-04 plain-name fragment is a 2020-12 anchor
            node.setdefault("$anchor", identifier[1:])
            changes.append(Change("renamed", "id", location, "-> $anchor"))
        else:
            node.setdefault("$id", identifier)
            changes.append(Change("renamed", "id", location, "-> $id"))
    if draft.name == "draft-04":
        changes.extend(_exclusive_bounds(node, location))
    if isinstance(node.get("dependencies"), dict):
        changes.extend(_split_dependencies(node, location))
    changes.extend(_tuple_items(node, location))
    return changes


def _exclusive_bounds(node: Schema, location: str) -> list[Change]:
    """Draft-04 ``exclusiveMinimum: true`` beside ``minimum`` -> ``exclusiveMinimum: <n>``."""
    changes: list[Change] = []
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = node.get(exclusive)
        if not isinstance(flag, bool):
            continue
        del node[exclusive]
        if flag and bound in node:
            node[exclusive] = node.pop(bound)
            changes.append(Change("rewrote", exclusive, location, f"true + {bound} -> number"))
        else:
            changes.append(Change("dropped", exclusive, location, f"{flag} (no effect)"))
    return changes


def _split_dependencies(node: Schema, location: str) -> list[Change]:
    """``dependencies`` -> ``dependentRequired`` (name lists) and ``dependentSchemas``."""
    deps = node.pop("dependencies")
    required = {k: v for k, v in deps.items() if isinstance(v, list)}
    schemas = {k: v for k, v in deps.items() if not isinstance(v, list)}
    if required:
        node.setdefault("dependentRequired", {}).update(required)
    if schemas:
        node.setdefault("dependentSchemas", {}).update(schemas)
    return [Change("split", "dependencies", location, "-> dependentRequired/dependentSchemas")]


def _tuple_items(node: Schema, location: str) -> list[Change]:
    """Tuple ``items: [...]`` -> ``prefixItems``, and ``additionalItems`` -> ``items``."""
    if isinstance(node.get("items"), list):
        node["prefixItems"] = node.pop("items")
        if "additionalItems" in node:
            node["items"] = node.pop("additionalItems")
        return [Change("renamed", "items", location, "tuple -> prefixItems")]
    if "additionalItems" in node:
        # Without a tuple `items` the keyword has no effect in drafts 4 to 2019-09.
        del node["additionalItems"]
        return [Change("dropped", "additionalItems", location, "(no tuple items)")]
    return []


_MAP_KEYWORDS = frozenset({*SCHEMA_MAPS, "dependencies"})
_LIST_KEYWORDS = frozenset(SCHEMA_LISTS)


def rewrite_pointer(ref: str) -> str:
    """``#/definitions/a/properties/definitions`` -> ``#/$defs/a/properties/definitions``.

    Only ``definitions`` in a keyword position is renamed: a property *named*
    ``definitions`` keeps its name.
    """
    parts = ref[2:].split("/")
    out: list[str] = []
    expect = "keyword"
    for part in parts:
        if expect == "keyword":
            out.append("$defs" if part == "definitions" else part)
            expect = (
                "name"
                if part in _MAP_KEYWORDS
                else "index"
                if part in _LIST_KEYWORDS
                else ("keyword")
            )
        else:
            out.append(part)
            expect = "keyword"
    return "#/" + "/".join(out)


def check_schema(schema: Schema, draft: Draft) -> None:
    """Raise ``SchemaInvalid`` with the metaschema's message and path unless ``schema`` is valid."""
    try:
        draft.validator_class.check_schema(schema)
    except SchemaError as exc:
        raise SchemaInvalid(
            f"not a valid JSON Schema ({draft.name}): {exc.message} at "
            f"{json_path(exc.absolute_path)}",
            {"draft": draft.name, "path": json_path(exc.absolute_path)},
        ) from exc
