"""The one place that knows where a JSON Schema nests subschemas.

Simplification passes, ``$ref`` inlining and the load-time checks (remote refs,
pattern bounds) all visit subschemas; walking only the keywords below, never
every dict in the document, keeps data that looks like a schema (a ``const``, an
``enum`` member, an ``examples`` entry) out of their reach. Locations are written
as in error messages: ``$.properties.tags.items``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

Schema = dict[str, Any]
T = TypeVar("T")

# Where a JSON Schema nests subschemas: draft 2020-12, plus what drafts 4 to 2019-09
# spell differently (``definitions``, ``dependencies``, ``additionalItems``). A
# ``dependencies`` entry that is a list of names is not a schema and is skipped.
SCHEMA_MAPS = (
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
)
SCHEMA_SINGLE = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
)
SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf", "items")


def json_path(parts: Iterable[str | int]) -> str:
    """``['a', 0, 'b']`` -> ``$.a[0].b`` (the notation of errors and simplifier changes)."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _holds(key: str, value: Any) -> Literal["map", "single", "list"] | None:
    """How the value of keyword ``key`` holds subschemas, if it does."""
    if key in SCHEMA_MAPS and isinstance(value, dict):
        return "map"
    if key in SCHEMA_SINGLE and isinstance(value, dict):
        return "single"
    if key in SCHEMA_LISTS and isinstance(value, list):
        return "list"
    return None


def _slots(node: Schema, path: str) -> Iterator[tuple[dict[str, Any] | list[Any], Any, str]]:
    """Where ``node``'s direct subschemas sit: (container, key or index in it, location)."""
    for key, value in node.items():
        holds = _holds(key, value)
        if holds == "map":
            for name in value:
                yield value, name, f"{path}.{key}.{name}"
        elif holds == "single":
            yield node, key, f"{path}.{key}"
        elif holds == "list":
            for i in range(len(value)):
                yield value, i, f"{path}.{key}[{i}]"


def walk(schema: Any, path: str = "$") -> Iterator[tuple[str, Schema]]:
    """Every schema object under ``schema`` with its location, parents before children.

    Boolean schemas have nothing to visit and are skipped.
    """
    if not isinstance(schema, dict):
        return
    yield path, schema
    for container, key, location in _slots(schema, path):
        yield from walk(container[key], location)


def map_subschemas(node: Schema, path: str, visit: Callable[[Any, str], Any]) -> Schema:
    """A copy of ``node`` whose direct subschemas are replaced by ``visit(sub, location)``.

    Everything else is deep-copied, so the result shares nothing with ``node``.
    """
    out = {k: copy.copy(v) if _holds(k, v) else copy.deepcopy(v) for k, v in node.items()}
    for container, key, location in list(_slots(out, path)):
        container[key] = visit(container[key], location)
    return out


def transform(
    schema: Schema, fn: Callable[[Schema, str], tuple[Schema, list[T]]]
) -> tuple[Schema, list[T]]:
    """Apply ``fn`` to a copy of every schema object, parents before children.

    Parents first so that a subtree ``fn`` drops (``not``, ``if``) is not visited at
    all. ``fn`` gets a shallow copy it may edit and returns it with what it changed;
    the input is never modified.
    """
    changes: list[T] = []

    def visit(node: Any, path: str) -> Any:
        if not isinstance(node, dict):
            return node
        edited, own = fn(dict(node), path)
        changes.extend(own)
        return map_subschemas(edited, path, visit)

    return visit(schema, "$"), changes
