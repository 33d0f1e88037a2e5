"""Repairs that keep an answer's meaning: duplicates out of arrays that must be unique.

Grammars cannot say "no two items alike" (``uniqueItems`` is dropped from every
decoding schema), and a small model repeats names ("Lena, Jonas, Lena"). Dropping a
repeat keeps the first occurrence and everything the answer said; retrying instead
costs a whole generation and often repeats the mistake (seen on an H200 with the
bundled model: every invalid meeting_minutes_v1 answer was a repeated attendee).
What was dropped is reported with the attempt, so nothing changes silently.
"""

from __future__ import annotations

import json
from typing import Any


def drop_duplicate_items(data: Any, schema: Any, path: str = "$") -> tuple[Any, list[str]]:
    """``data`` with repeats removed where ``schema`` says ``uniqueItems``; what changed.

    Follows ``properties``, ``items`` and ``prefixItems`` (a ``$ref`` is not followed:
    such arrays are left to validation and retries).
    """
    if not isinstance(schema, dict):
        return data, []
    if isinstance(data, dict):
        return _object(data, schema, path)
    if isinstance(data, list):
        return _array(data, schema, path)
    return data, []


def _object(data: dict[str, Any], schema: dict[str, Any], path: str) -> tuple[Any, list[str]]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return data, []
    changes: list[str] = []
    out = dict(data)
    for key, sub in properties.items():
        if key in out:
            out[key], own = drop_duplicate_items(out[key], sub, f"{path}.{key}")
            changes.extend(own)
    return out, changes


def _array(data: list[Any], schema: dict[str, Any], path: str) -> tuple[Any, list[str]]:
    changes: list[str] = []
    items: list[Any] = []
    prefix_items = schema.get("prefixItems")
    prefix: list[Any] = prefix_items if isinstance(prefix_items, list) else []
    for index, item in enumerate(data):
        sub = prefix[index] if index < len(prefix) else schema.get("items")
        repaired, own = drop_duplicate_items(item, sub, f"{path}[{index}]")
        items.append(repaired)
        changes.extend(own)
    if schema.get("uniqueItems") is True:
        seen: set[str] = set()
        unique = []
        for item in items:
            key = json.dumps(item, sort_keys=True)
            if key not in seen:
                seen.add(key)
                unique.append(item)
        if len(unique) < len(items):
            changes.append(f"dropped {len(items) - len(unique)} repeated item(s) at {path}")
            items = unique
    return items, changes
