"""Drafts 4 to 2020-12: the declared draft is found, and the 2020-12 copy the decoder is
built from accepts what the original accepts (round trip with hypothesis-jsonschema)."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from structsum.errors import SchemaInvalid
from structsum.processors.drafts import DRAFTS, check_schema, declared_draft, normalise
from structsum.processors.scaffold import hypothesis_jsonschema_compat

hypothesis_jsonschema_compat()

CORPUS = Path(__file__).resolve().parents[1] / "data" / "schema_corpus"
D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D7 = "http://json-schema.org/draft-07/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"
D2020 = "https://json-schema.org/draft/2020-12/schema"

# One schema per draft, each using what that draft spells differently from 2020-12.
DRAFT_SCHEMAS: dict[str, dict[str, Any]] = {
    "draft-04": {
        "$schema": D4,
        "id": "https://example.com/person.json",
        "type": "object",
        "definitions": {"age": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}},
        "properties": {
            "age": {"$ref": "#/definitions/age"},
            "score": {"type": "number", "maximum": 10, "exclusiveMaximum": True},
            "pair": {"type": "array", "items": [{"type": "string"}, {"type": "boolean"}]},
            "card": {"type": "string", "maxLength": 4},
            "cvv": {"type": "string", "maxLength": 3},
        },
        "dependencies": {"cvv": ["card"]},
        "required": ["age"],
    },
    "draft-06": {
        "$schema": D6,
        "type": "object",
        "definitions": {"tag": {"type": "string", "maxLength": 5}},
        "properties": {
            "tags": {"type": "array", "items": {"$ref": "#/definitions/tag"}, "maxItems": 3},
            "point": {
                "type": "array",
                "items": [{"type": "integer"}, {"type": "integer"}],
                "additionalItems": False,
            },
            "kind": {"const": "a"},
        },
        "dependencies": {"kind": {"required": ["tags"]}},
    },
    "draft-07": {
        "$schema": D7,
        "type": "object",
        "definitions": {"name": {"type": "string", "maxLength": 8}},
        "properties": {
            # draft-07 ignores the sibling of $ref: maxLength 1 has no effect here.
            "name": {"$ref": "#/definitions/name", "maxLength": 1},
            "row": {
                "type": "array",
                "items": [{"type": "string"}],
                "additionalItems": {"type": "integer"},
            },
            "level": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        },
        "required": ["name"],
    },
    "2019-09": {
        "$schema": D2019,
        "type": "object",
        "$defs": {"id": {"type": "string", "pattern": "^[a-z]{1,4}$"}},
        "properties": {
            "id": {"$ref": "#/$defs/id"},
            "pair": {"type": "array", "items": [{"type": "integer"}], "additionalItems": False},
        },
        "dependentRequired": {"pair": ["id"]},
    },
    "2020-12": {
        "$schema": D2020,
        "type": "object",
        "$defs": {"n": {"type": "integer", "maximum": 3}},
        "properties": {"n": {"$ref": "#/$defs/n"}, "t": {"prefixItems": [{"type": "string"}]}},
    },
}


@pytest.mark.parametrize("draft", [d.name for d in DRAFTS])
def test_declared_draft_is_found_in_every_spelling(draft: str) -> None:
    found = next(d for d in DRAFTS if d.name == draft)
    for uri in (found.uri, found.uri + "#", found.uri.replace("http://", "https://")):
        assert declared_draft({"$schema": uri}) is found
    assert declared_draft({}).name == "2020-12"


def test_unknown_draft_is_refused_with_the_supported_list() -> None:
    with pytest.raises(SchemaInvalid, match=r"draft-03.*not a supported.*draft-04"):
        declared_draft({"$schema": "http://json-schema.org/draft-03/schema#"})


@pytest.mark.parametrize("name", sorted(DRAFT_SCHEMAS))
def test_normalised_copy_is_a_valid_2020_12_schema(name: str) -> None:
    schema = DRAFT_SCHEMAS[name]
    before = json.dumps(schema, sort_keys=True)
    out, changes = normalise(schema, declared_draft(schema))
    Draft202012Validator.check_schema(out)
    assert json.dumps(schema, sort_keys=True) == before  # the input is not modified
    assert out["$schema"] == D2020
    text = json.dumps(out)
    assert "definitions" not in text and '"dependencies"' not in text
    assert "additionalItems" not in text
    if name == "2020-12":
        assert changes == [] and out == schema


def test_draft_04_translations_are_reported() -> None:
    out, changes = normalise(DRAFT_SCHEMAS["draft-04"], DRAFTS[0])
    lines = [str(c) for c in changes]
    assert out["$id"] == "https://example.com/person.json" and "id" not in out
    assert out["$defs"]["age"] == {"type": "integer", "exclusiveMinimum": 0}
    assert out["properties"]["age"] == {"$ref": "#/$defs/age"}
    assert out["properties"]["score"] == {"type": "number", "exclusiveMaximum": 10}
    assert out["properties"]["pair"]["prefixItems"] == [{"type": "string"}, {"type": "boolean"}]
    assert out["dependentRequired"] == {"cvv": ["card"]}
    for expected in ("renamed definitions", "renamed id", "rewrote exclusiveMinimum", "split"):
        assert any(line.startswith(expected) for line in lines), (expected, lines)


def test_ref_siblings_are_dropped_only_where_the_draft_ignores_them() -> None:
    out, _ = normalise(DRAFT_SCHEMAS["draft-07"], DRAFTS[2])
    assert out["properties"]["name"] == {"$ref": "#/$defs/name"}
    kept, _ = normalise(
        {"$schema": D2019, "properties": {"a": {"$ref": "#", "maxLength": 1}}}, DRAFTS[3]
    )
    assert kept["properties"]["a"]["maxLength"] == 1


def test_a_property_named_definitions_keeps_its_name() -> None:
    schema = {
        "$schema": D7,
        "properties": {
            "definitions": {"type": "string"},
            "b": {"$ref": "#/properties/definitions"},
        },
    }
    out, _ = normalise(schema, DRAFTS[2])
    assert out["properties"]["b"] == {"$ref": "#/properties/definitions"}
    assert "definitions" in out["properties"]


def test_invalid_schema_names_draft_message_and_path() -> None:
    with pytest.raises(SchemaInvalid, match=r"\(draft-04\).*at \$\.properties\.a\.minimum"):
        check_schema({"$schema": D4, "properties": {"a": {"minimum": "zero"}}}, DRAFTS[0])


@pytest.mark.parametrize("name", sorted(DRAFT_SCHEMAS))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip_original_instances_are_valid_under_the_normalised_copy(
    name: str, data: st.DataObject
) -> None:
    """What the original accepts (by its own draft), the 2020-12 copy accepts."""
    schema = DRAFT_SCHEMAS[name]
    draft = declared_draft(schema)
    normalised, _ = normalise(schema, draft)
    instance = data.draw(from_schema(json.loads(json.dumps(schema))))
    # hypothesis-jsonschema reads drafts 4-7 keywords; keep what the original's own
    # validator accepts (2019-09's dependentRequired is not generated for).
    assume(draft.validator_class(schema).is_valid(instance))
    errors = [e.message for e in Draft202012Validator(normalised).iter_errors(instance)]
    assert errors == [], (instance, errors)


def _corpus_good() -> list[str]:
    manifest = json.loads((CORPUS / "sources.json").read_text(encoding="utf-8"))
    return [e["file"] for e in manifest["schemas"] if e["expect"] == "load"]


@pytest.mark.parametrize("file", _corpus_good())
def test_every_good_corpus_schema_normalises_to_a_valid_2020_12_schema(file: str) -> None:
    schema = json.loads((CORPUS / file).read_text(encoding="utf-8"))
    draft = declared_draft(schema)
    check_schema(schema, draft)
    out, _ = normalise(schema, draft)
    Draft202012Validator.check_schema(out)
