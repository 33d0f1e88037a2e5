"""The one schema walker: which values are subschemas, in what order, at what location."""

import copy
from typing import Any

from structsum.processors.schema_walk import json_path, map_subschemas, transform, walk

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "pair": {"prefixItems": [{"type": "integer"}, True]},
        "choice": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/name"}]},
        "fixed": {"const": {"type": "string", "properties": {"x": {}}}},
    },
    "additionalProperties": {"type": "number"},
    "$defs": {"name": {"type": "string"}},
}


def test_walk_visits_every_subschema_parents_first_and_skips_data() -> None:
    locations = [location for location, _ in walk(SCHEMA)]
    assert locations == [
        "$",
        "$.properties.tags",
        "$.properties.tags.items",
        "$.properties.pair",
        "$.properties.pair.prefixItems[0]",
        "$.properties.choice",
        "$.properties.choice.anyOf[0]",
        "$.properties.choice.anyOf[1]",
        "$.properties.fixed",
        "$.additionalProperties",
        "$.$defs.name",
    ]
    # A const that looks like a schema is data: nothing inside it is visited.
    assert "$.properties.fixed.const" not in locations


def test_walk_of_a_boolean_schema_visits_nothing() -> None:
    assert list(walk(True)) == []


def test_map_subschemas_replaces_direct_children_and_shares_nothing() -> None:
    seen: list[str] = []

    def visit(sub: Any, location: str) -> Any:
        seen.append(location)
        return "child"

    out = map_subschemas(SCHEMA, "$", visit)
    assert seen == [
        "$.properties.tags",
        "$.properties.pair",
        "$.properties.choice",
        "$.properties.fixed",
        "$.additionalProperties",
        "$.$defs.name",
    ]
    assert out["properties"] == dict.fromkeys(SCHEMA["properties"], "child")
    assert SCHEMA["properties"]["tags"]["type"] == "array"
    out2 = map_subschemas(SCHEMA, "$", lambda sub, _: sub)
    assert out2 == SCHEMA and out2["properties"] is not SCHEMA["properties"]


def test_transform_edits_copies_and_collects_changes_in_walk_order() -> None:
    before = copy.deepcopy(SCHEMA)

    def fn(node: dict[str, Any], path: str) -> tuple[dict[str, Any], list[str]]:
        if node.get("type") == "string":
            node["maxLength"] = 5
            return node, [path]
        return node, []

    out, changes = transform(SCHEMA, fn)
    assert changes == ["$.properties.tags.items", "$.$defs.name"]
    assert out["properties"]["tags"]["items"] == {"type": "string", "maxLength": 5}
    assert out["properties"]["fixed"]["const"]["type"] == "string"  # data is not a schema
    assert "maxLength" not in out["properties"]["fixed"]["const"]
    assert before == SCHEMA


def test_json_path_notation() -> None:
    assert json_path(["a", 0, "b"]) == "$.a[0].b"
    assert json_path([]) == "$"
