import copy
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from structsum.config import Settings
from structsum.errors import SchemaInvalid
from structsum.processors.guide import Guide
from structsum.processors.policy import SAFE_TO_DROP, SimplifyPolicy
from structsum.processors.scaffold import hypothesis_jsonschema_compat
from structsum.processors.simplify import (
    SimplifiedSchema,
    additional_properties_false,
    cap_items,
    cap_strings,
    drop_keywords,
    inline_refs,
    require_all,
    simplify_schema,
    strip_caps,
    unbound_pattern_strings,
)
from structsum.processors.templates import json_path, list_templates, load_template

TEMPLATES_DIR = Settings().templates_dir

hypothesis_jsonschema_compat()
SHIPPED = list_templates(TEMPLATES_DIR)


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


# --- inline_refs ------------------------------------------------------------------------


def test_inline_refs_replaces_refs_and_removes_defs() -> None:
    schema = {
        "$defs": {"name": {"type": "string", "maxLength": 5}},
        **obj(a={"$ref": "#/$defs/name"}, b={"type": "array", "items": {"$ref": "#/$defs/name"}}),
    }
    out, changes = inline_refs(schema)
    assert out == obj(
        a={"type": "string", "maxLength": 5},
        b={"type": "array", "items": {"type": "string", "maxLength": 5}},
    )
    assert "inlined $ref '#/$defs/name' at $.properties.a" in [str(c) for c in changes]
    assert "removed $defs (inlined) at $" in [str(c) for c in changes]
    assert not any(c.restrictive for c in changes)


def test_inline_refs_follows_chains_and_draft7_definitions() -> None:
    schema = {
        "definitions": {"x": {"$ref": "#/definitions/y"}, "y": {"type": "integer"}},
        **obj(a={"$ref": "#/definitions/x"}),
    }
    out, _ = inline_refs(schema)
    assert out == obj(a={"type": "integer"})


def test_inline_refs_merges_siblings_and_keeps_conflicts_in_allof() -> None:
    schema = {
        "$defs": {"s": {"type": "string", "maxLength": 5}},
        **obj(
            merged={"$ref": "#/$defs/s", "description": "d"},
            conflict={"$ref": "#/$defs/s", "maxLength": 3},
        ),
    }
    out, _ = inline_refs(schema)
    assert out["properties"]["merged"] == {"type": "string", "maxLength": 5, "description": "d"}
    assert out["properties"]["conflict"] == {
        "maxLength": 3,
        "allOf": [{"type": "string", "maxLength": 5}],
    }


def test_inline_refs_decodes_escaped_pointers() -> None:
    schema = {"$defs": {"a/b": {"type": "null"}}, **obj(x={"$ref": "#/$defs/a~1b"})}
    assert inline_refs(schema)[0] == obj(x={"type": "null"})


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"$defs": {"n": obj(next={"$ref": "#/$defs/n"})}, "$ref": "#/$defs/n"}, "recursive"),
        (obj(a={"$ref": "#"}), "recursive"),
        (obj(a={"$ref": "https://example.com/s.json"}), "remote"),
        (obj(a={"$ref": "#anchor"}), "anchor"),
        (obj(a={"$ref": "#/$defs/missing"}), "points at nothing"),
    ],
)
def test_inline_refs_refuses_what_cannot_be_inlined(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaInvalid, match=message):
        inline_refs(schema)


def test_inline_refs_without_refs_changes_nothing() -> None:
    schema = obj(a={"type": "string"})
    assert inline_refs(schema) == (schema, [])


def test_inline_refs_leaves_data_that_looks_like_a_ref_alone() -> None:
    # A const (or enum member, or default) is data: a "$ref" key inside it is not a ref.
    schema = {
        "$defs": {"n": {"type": "null"}},
        **obj(a={"$ref": "#/$defs/n"}, b={"const": {"$ref": "#/$defs/n"}}),
    }
    out, _ = inline_refs(schema)
    assert out == obj(a={"type": "null"}, b={"const": {"$ref": "#/$defs/n"}})


def test_inline_refs_resolves_against_the_schema_id() -> None:
    schema = {
        "$id": "https://example.com/brief.json",
        "$defs": {"s": {"type": "string"}},
        **obj(a={"$ref": "#/$defs/s"}),
    }
    out, _ = inline_refs(schema)
    assert out["properties"]["a"] == {"type": "string"}


# --- drop_keywords ----------------------------------------------------------------------


def test_drop_keywords_drops_everywhere_and_says_where() -> None:
    schema = obj(
        date={"type": "string", "format": "date"},
        tags={"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": "^a"}},
    )
    out, changes = drop_keywords(schema, ["format", "pattern", "uniqueItems"])
    assert out == obj(date={"type": "string"}, tags={"type": "array", "items": {"type": "string"}})
    assert [str(c) for c in changes] == [
        "dropped format at $.properties.date",
        "dropped uniqueItems at $.properties.tags",
        "dropped pattern at $.properties.tags.items",
    ]


def test_drop_keywords_leaves_properties_named_like_keywords() -> None:
    schema = {**obj(format={"type": "string"}, pattern={"type": "string"}), "required": ["format"]}
    out, changes = drop_keywords(schema, ["format", "pattern"])
    assert out == schema
    assert changes == []


def test_drop_keywords_does_not_walk_into_dropped_subschemas() -> None:
    schema = {"type": "string", "not": {"type": "string", "format": "date"}}
    _, changes = drop_keywords(schema, ["not", "format"])
    assert [str(c) for c in changes] == ["dropped not at $"]


# --- unbound_pattern_strings ----------------------------------------------------------


def test_unbound_pattern_strings_drops_lengths_next_to_patterns_and_formats() -> None:
    schema = obj(
        a={"type": "string", "pattern": "^x+$", "maxLength": 5},
        b={"type": "string", "format": "date", "minLength": 10},
        c={"type": "string", "maxLength": 5},
    )
    out, changes = unbound_pattern_strings(schema)
    assert out == obj(
        a={"type": "string", "pattern": "^x+$"},
        b={"type": "string", "format": "date"},
        c={"type": "string", "maxLength": 5},
    )
    assert len(changes) == 2 and not any(c.restrictive for c in changes)


# --- additional_properties_false --------------------------------------------------------


def test_additional_properties_false_closes_listed_objects() -> None:
    schema = obj(inner=obj(x={"type": "string"}), free={"type": "object"})
    out, changes = additional_properties_false(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["inner"]["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]["free"]
    assert {(c.keyword, c.location) for c in changes} == {
        ("additionalProperties", "$"),
        ("additionalProperties", "$.properties.inner"),
    }
    assert all(c.restrictive for c in changes)


def test_additional_properties_false_respects_what_the_schema_says() -> None:
    schema = {
        "allOf": [obj(a={"type": "string"}), obj(b={"type": "string"})],
        "properties": {"x": {"type": "object", "properties": {}, "additionalProperties": True}},
        "patternProperties": {"^y": {}},
    }
    out, changes = additional_properties_false(schema)
    assert out == schema
    assert changes == []


# --- require_all ------------------------------------------------------------------------


def test_require_all_adds_missing_names_in_order() -> None:
    schema = {**obj(a={}, b={}, c={}), "required": ["b"]}
    out, changes = require_all(schema)
    assert out["required"] == ["b", "a", "c"]
    assert [str(c) for c in changes] == ["required required ['a', 'c'] at $"]
    assert require_all(out) == (out, [])


# --- caps -------------------------------------------------------------------------------


def test_cap_items_adds_tightens_and_keeps_lower_caps() -> None:
    schema = obj(
        a={"type": "array"},
        b={"type": "array", "maxItems": 20},
        c={"type": "array", "maxItems": 2},
        d={"type": ["array", "null"], "items": {"type": "string"}},
        e={"type": "string"},
    )
    out, changes = cap_items(schema, 5)
    props = out["properties"]
    assert [props[k].get("maxItems") for k in "abcde"] == [5, 5, 2, 5, None]
    assert [str(c) for c in changes] == [
        "added maxItems 5 at $.properties.a",
        "tightened maxItems 20 -> 5 at $.properties.b",
        "added maxItems 5 at $.properties.d",
    ]


def test_caps_never_go_below_the_lower_bound() -> None:
    out, _ = cap_items({"type": "array", "minItems": 7}, 5)
    assert out["maxItems"] == 7
    out, _ = cap_strings({"type": "string", "minLength": 50}, 20)
    assert out["maxLength"] == 50


def test_cap_strings_skips_bounded_strings() -> None:
    schema = obj(
        free={"type": "string"},
        nullable={"type": ["string", "null"], "maxLength": 500},
        choice={"type": "string", "enum": ["a", "b"]},
        fixed={"type": "string", "const": "x"},
        date={"type": "string", "format": "date"},
        code={"type": "string", "pattern": "^[A-Z]{3}$"},
        number={"type": "integer"},
    )
    out, changes = cap_strings(schema, 100)
    props = out["properties"]
    assert props["free"]["maxLength"] == 100
    assert props["nullable"]["maxLength"] == 100
    assert [c.location for c in changes] == ["$.properties.free", "$.properties.nullable"]
    assert all("maxLength" not in props[k] for k in ("choice", "fixed", "date", "code", "number"))


def test_replacing_caps_raises_lower_ones_too() -> None:
    schema = obj(a={"type": "array", "maxItems": 2}, b={"type": "array", "maxItems": 9})
    out, changes = cap_items(schema, 5, replace=True)
    assert [out["properties"][k]["maxItems"] for k in "ab"] == [5, 5]
    assert [(c.action, c.restrictive) for c in changes] == [
        ("loosened", False),
        ("tightened", True),
    ]
    policy = SimplifyPolicy(drop_keywords=["maxItems"], max_items=5)
    once = simplify_schema(schema, policy)
    assert once.schema is not None
    assert simplify_schema(once.schema, policy).changes == []


def test_strip_caps_removes_caps_only() -> None:
    schema = obj(
        a={
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "maxLength": 9},
        }
    )
    out, changes = strip_caps(schema)
    assert out == obj(a={"type": "array", "minItems": 1, "items": {"type": "string"}})
    assert [str(c) for c in changes] == [
        "removed maxItems 3 at $.properties.a",
        "removed maxLength 9 at $.properties.a.items",
    ]
    assert not any(c.restrictive for c in changes)


# --- the pipeline -----------------------------------------------------------------------

SCHEMA = {
    "$defs": {"point": {"type": "string", "minLength": 2, "format": "email"}},
    **obj(
        title={"type": "string", "maxLength": 500},
        points={"type": "array", "items": {"$ref": "#/$defs/point"}},
    ),
    "required": ["title"],
}


def test_pipeline_applies_the_policy_steps_in_order() -> None:
    policy = SimplifyPolicy(max_items=3, max_string_length=50, require_all=True)
    result = simplify_schema(SCHEMA, policy)
    assert result.mode == "json_schema" and result.regex is None
    assert result.schema == {
        **obj(
            title={"type": "string", "maxLength": 50},
            points={"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 3},
        ),
        "required": ["title", "points"],
        "additionalProperties": False,
    }
    # The item string lost its format and minLength, then was capped like any free string.
    assert "dropped format at $.properties.points.items" in result.changes
    assert result.restrictions == {
        ("additionalProperties", "$"),
        ("required", "$"),
        ("maxItems", "$.properties.points"),
        ("maxLength", "$.properties.title"),
        ("maxLength", "$.properties.points.items"),
    }
    Draft202012Validator.check_schema(result.schema)


def test_pipeline_never_mutates_its_input() -> None:
    before = copy.deepcopy(SCHEMA)
    simplify_schema(SCHEMA, SimplifyPolicy(max_items=1, max_string_length=1, require_all=True))
    assert before == SCHEMA


def test_pipeline_is_idempotent() -> None:
    policy = SimplifyPolicy(max_items=3, max_string_length=50, require_all=True)
    once = simplify_schema(SCHEMA, policy)
    assert once.schema is not None
    twice = simplify_schema(once.schema, policy)
    assert twice.schema == once.schema
    assert twice.changes == []


def test_strip_caps_policy_removes_the_full_schemas_caps() -> None:
    result = simplify_schema(SCHEMA, SimplifyPolicy(strip_caps=True))
    assert result.schema is not None
    assert "maxLength" not in result.schema["properties"]["title"]
    assert "removed maxLength 500 at $.properties.title" in result.changes


@pytest.mark.parametrize("mode", ["none", "json_object"])
def test_unguided_modes_have_no_schema(mode: str) -> None:
    result = simplify_schema(SCHEMA, SimplifyPolicy(mode=mode))  # type: ignore[arg-type]
    assert (result.mode, result.schema, result.regex) == (mode, None, None)
    assert result.changes


def test_regex_mode_builds_a_regex_from_the_simplified_schema() -> None:
    result = simplify_schema(SCHEMA, SimplifyPolicy(mode="regex", max_items=2))
    assert result.regex is not None
    assert re.fullmatch(result.regex, json.dumps({"title": "t", "points": ["a", "b"]}))
    # The cap reached the regex: three points do not match.
    assert not re.fullmatch(result.regex, json.dumps({"title": "t", "points": ["a", "b", "c"]}))


def test_inline_refs_off_keeps_refs() -> None:
    result = simplify_schema(SCHEMA, SimplifyPolicy(inline_refs=False))
    assert result.schema is not None
    assert result.schema["properties"]["points"]["items"] == {"$ref": "#/$defs/point"}
    assert result.schema["$defs"]["point"] == {"type": "string"}


# --- properties over every shipped template --------------------------------------------

policies = st.builds(
    SimplifyPolicy,
    drop_keywords=st.lists(st.sampled_from(sorted(SAFE_TO_DROP)), max_size=6),
    max_items=st.none() | st.integers(1, 6),
    max_string_length=st.none() | st.integers(1, 200),
    additional_properties_false=st.booleans(),
    require_all=st.booleans(),
)
# hypothesis-jsonschema resolves $ref inside the schema it is given: always hand it a
# copy, never a cached Template's schema.
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def unexplained_errors(simplified: Any, instance: object) -> list[str]:
    """Errors of the decoding schema that no restriction listed by the simplifier explains.

    An error is explained when its keyword and the schema location it comes from (the
    error's schema path minus the keyword) are a (keyword, location) pair the simplifier
    recorded as a restriction: a cap it added or tightened, an ``additionalProperties:
    false`` or a ``required`` it added.
    """
    out = []
    for error in Draft202012Validator(simplified.schema).iter_errors(instance):
        location = json_path(list(error.absolute_schema_path)[:-1])
        if (error.validator, location) not in simplified.restrictions:
            out.append(f"{error.validator} at {location}: {error.message}")
    return out


@pytest.mark.parametrize("template_id", SHIPPED)
def test_full_schema_instances_stay_valid_unless_a_listed_restriction_rejects(
    template_id: str,
) -> None:
    template = load_template(TEMPLATES_DIR, template_id)

    @PROPERTY_SETTINGS
    @given(instance=from_schema(copy.deepcopy(template.schema)), policy=policies)
    def check(instance: object, policy: SimplifyPolicy) -> None:
        simplified = simplify_schema(template.schema, policy)
        assert unexplained_errors(simplified, instance) == []

    check()


@pytest.mark.parametrize("template_id", SHIPPED)
def test_template_policy_keeps_full_schema_instances_within_its_caps(template_id: str) -> None:
    template = load_template(TEMPLATES_DIR, template_id)
    simplified = template.decoding
    assert simplified.schema is not None

    @PROPERTY_SETTINGS
    @given(instance=from_schema(copy.deepcopy(template.schema)))
    def check(instance: object) -> None:
        assert unexplained_errors(simplified, instance) == []

    check()


@pytest.mark.parametrize("template_id", SHIPPED)
def test_simplified_schema_is_valid_and_simplification_idempotent(template_id: str) -> None:
    template = load_template(TEMPLATES_DIR, template_id)

    @settings(max_examples=40, deadline=None)
    @given(policy=policies)
    def check(policy: SimplifyPolicy) -> None:
        once = simplify_schema(template.schema, policy)
        assert once.schema is not None
        Draft202012Validator.check_schema(once.schema)
        twice = simplify_schema(once.schema, policy)
        assert twice.schema == once.schema
        assert twice.changes == []

    check()


def test_the_restriction_detector_catches_a_capped_instance() -> None:
    # Guards the property tests above: a cap violation must be explained, and an
    # unlisted difference must not be.
    schema = obj(a={"type": "array", "items": {"type": "string"}})
    simplified = simplify_schema(schema, SimplifyPolicy(max_items=1))
    assert unexplained_errors(simplified, {"a": ["x", "y"]}) == []
    assert Draft202012Validator(simplified.schema).is_valid({"a": ["x", "y"]}) is False
    forged = type(simplified)(simplified.mode, simplified.schema, None, [], frozenset())
    assert unexplained_errors(forged, {"a": ["x", "y"]}) != []


@pytest.mark.parametrize(
    ("mode", "kind"), [("json_schema", "json"), ("json_object", "json_object"), ("none", None)]
)
def test_the_decoding_schema_decides_its_guide(mode: str, kind: str | None) -> None:
    result = simplify_schema(SCHEMA, SimplifyPolicy(mode=mode))  # type: ignore[arg-type]
    guide = result.guide
    assert (guide.kind if guide else None) == kind
    if kind == "json":
        assert guide is not None and guide.value == result.schema
    elif guide is not None:
        assert guide.value is None


def test_regex_mode_guides_by_its_regex() -> None:
    regex = SimplifiedSchema("regex", {"type": "string"}, '"[a-z]*"', [])
    assert regex.guide == Guide("regex", '"[a-z]*"')
    # A mode without what it needs decodes unguided rather than guessing.
    assert SimplifiedSchema("json_schema", None, None, []).guide is None


def test_grammar_compatible_removes_what_vllm_refuses_for_xgrammar() -> None:
    from vllm.v1.structured_output.backend_xgrammar import (
        has_xgrammar_unsupported_json_features,
    )

    from structsum.processors.simplify import grammar_compatible

    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "patternProperties": {"^x-": {"type": "string"}},
        "allOf": [{}, {"description": "annotation only"}, {"required": ["a"]}],
    }
    assert has_xgrammar_unsupported_json_features(schema)
    out, changes = grammar_compatible(schema)
    assert not has_xgrammar_unsupported_json_features(out)
    assert out["required"] == ["a"] and "allOf" not in out and "patternProperties" not in out
    assert [c.restrictive for c in changes] == [False, False, True]
    assert grammar_compatible(out)[1] == []  # idempotent


def test_base_properties_reach_variants_nested_in_variants() -> None:
    """testenvironments (corpus, issue 16): ``required: [name]`` beside a oneOf whose first
    variant is itself a oneOf; xgrammar follows the innermost variant, which must carry it."""
    from structsum.processors.simplify import grammar_compatible

    schema = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
        "oneOf": [
            {
                "properties": {"type": {"const": "docker"}},
                "oneOf": [
                    {"required": ["image"], "properties": {"image": {"type": "string"}}},
                    {"required": ["file"], "properties": {"file": {"type": "string"}}},
                ],
            },
            {"required": ["uri"], "properties": {"uri": {"type": "string"}}},
        ],
    }
    out, _ = grammar_compatible(schema)
    # oneOf is decoded as anyOf (llguidance refuses oneOf; validation checks exclusivity)
    docker_image = out["anyOf"][0]["anyOf"][0]
    assert docker_image["required"] == ["image", "name"]
    assert set(docker_image["properties"]) == {"image", "type", "name"}
    assert out["anyOf"][1]["required"] == ["uri", "name"]
    assert "properties" not in out and "properties" not in out["anyOf"][0]
    assert grammar_compatible(out)[1] == []  # idempotent
    for instance in ({"name": "a", "image": "x"}, {"name": "a", "uri": "u"}):
        assert Draft202012Validator(out).is_valid(instance) == Draft202012Validator(
            schema
        ).is_valid(instance)


@pytest.mark.parametrize(
    "message",
    [
        "Failed to transform json schema into a grammar: minItems is greater than ...",  # xgrammar
        'Grammar error: Unimplemented keys: ["unevaluatedProperties"]',  # llguidance
    ],
)
def test_a_grammar_the_backend_refuses_is_a_typed_template_error(message: str) -> None:
    """vLLM raises a ValueError when a backend cannot compile a schema; it must not escape
    untyped (it did for the draft-04 metaschema on the CPU, and for llguidance's
    capitalised "Grammar error" on the H100, in the corpus benchmark)."""
    from structsum.processors.vllm_args import engine_errors

    with pytest.raises(SchemaInvalid, match="grammar backend refused") as info, engine_errors():
        raise ValueError(message)
    assert not info.value.retryable and "templates check" in info.value.hint


def test_depth_limit_prunes_what_it_made_unsatisfiable() -> None:
    from structsum.processors.template_check import grammar_accepts

    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "kids": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
                    "alt": {"anyOf": [{"$ref": "#/$defs/node"}]},
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    out, changes = inline_refs(schema, 2)
    assert any(c.action == "depth-limited" for c in changes)
    assert grammar_accepts(out, {"kids": [{"kids": []}]})  # compiles: no `false` left


def test_bound_free_json_caps_maps_and_free_values() -> None:
    from structsum.processors.simplify import bound_free_json
    from structsum.processors.template_check import grammar_accepts

    schema = {
        "minimum": 1,  # an untyped root: any JSON
        "properties": {"deps": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    out, changes = bound_free_json(copy.deepcopy(schema), 2, 5)
    deps = out["properties"]["deps"]
    assert out["type"] == "object"
    assert deps["maxProperties"] == 2 and deps["patternProperties"] == {
        "^.{1,5}$": {"type": "string"}
    }
    assert deps["additionalProperties"] is False
    assert all(c.restrictive for c in changes)
    assert llguidance_error(out) is None  # no propertyNames: llguidance builds it too
    assert grammar_accepts(out, {"deps": {"a": "x", "b": "y"}})
    assert not grammar_accepts(out, {"deps": {"a": "x", "b": "y", "c": "z"}})
    assert not grammar_accepts(out, {"deps": {"toolong": "x"}})
    free, _ = bound_free_json({"type": "object", "properties": {"v": {"description": "any"}}}, 2, 5)
    assert free["properties"]["v"]["type"] == ["string", "number", "boolean", "null"]


def test_what_llguidance_refuses_is_widened_for_decoding_only() -> None:
    """The H100 corpus run: oneOf, unevaluatedProperties and min/maxProperties beside
    optional properties failed llguidance's grammar. Decoding accepts a superset of the
    schema after the reshape, so everything the schema accepts can still be written."""
    from structsum.processors.simplify import grammar_compatible

    schema = {
        "type": "object",
        "properties": {
            "kind": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]},
            "opts": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "required": ["a"],
                "minProperties": 1,
                "maxProperties": 2,
            },
            "all": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
                "maxProperties": 1,
            },
        },
        "unevaluatedProperties": False,
    }
    out, changes = grammar_compatible(schema)
    assert "oneOf" not in out["properties"]["kind"] and len(out["properties"]["kind"]["anyOf"]) == 2
    assert "unevaluatedProperties" not in out
    assert "minProperties" not in out["properties"]["opts"]
    assert "maxProperties" not in out["properties"]["opts"]
    assert out["properties"]["all"]["maxProperties"] == 1  # every listed key required: kept
    assert not any(c.restrictive for c in changes)
    assert grammar_compatible(out)[1] == []  # idempotent
    assert llguidance_error(schema) is not None and llguidance_error(out) is None
    for instance in (
        {"kind": "ab", "opts": {"a": "x"}, "all": {"a": "y"}},
        {"kind": 3, "opts": {"a": "x", "b": "z"}},
    ):
        assert Draft202012Validator(schema).is_valid(instance)
        assert Draft202012Validator(out).is_valid(instance)


def llguidance_error(schema: dict[str, object]) -> str | None:
    """What llguidance (vLLM's `guidance` backend) says about a schema; None if it builds."""
    from llguidance import LLMatcher

    failed, messages = LLMatcher.validate_grammar_with_warnings(
        LLMatcher.grammar_from_json_schema(schema)
    )
    return "; ".join(messages) or "refused" if failed else None
