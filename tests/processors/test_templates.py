import json
import os
from pathlib import Path
from typing import Any

import pytest

from structsum.config.settings import TemplateSettings
from structsum.errors import (
    ExampleInvalid,
    PromptRenderError,
    SchemaInvalid,
    StructsumError,
    TemplateInvalid,
    TemplateNotFound,
)
from structsum.processors.bounded_regex import FORMAT_PATTERNS
from structsum.processors.policy import (
    CPU_DEFAULT_MAX_ITEMS,
    CPU_DEFAULT_MAX_STRING_LENGTH,
    default_policy,
)
from structsum.processors.templates import (
    MAX_ERROR_CHARS,
    MAX_PATTERN_CHARS,
    list_templates,
    load_template,
    schema_sha256,
    validate_instance,
)
from tests.processors.template_files import EXAMPLE, SCHEMA, write_template

# --- good templates ---------------------------------------------------------------------


def test_loads_a_good_template(tmp_path: Path) -> None:
    write_template(tmp_path, policy="[simplify]\nmax_items = 2\n")
    template = load_template(tmp_path, "t1")
    assert template.id == "t1"
    assert template.schema == SCHEMA and template.example == EXAMPLE
    assert template.policy.simplify.max_items == 2
    assert template.schema_sha256 == schema_sha256(SCHEMA)
    assert template.decoding.schema is not None
    assert template.decoding.schema["properties"]["points"]["maxItems"] == 2


def test_a_template_without_policy_gets_the_profile_default(tmp_path: Path) -> None:
    """On CPU every array and free string is capped in the grammar, so a small model stops."""
    write_template(tmp_path, policy=None)
    template = load_template(tmp_path, "t1")
    assert template.default_policy
    assert template.policy == default_policy("cpu")
    assert template.policy.retry.attempts == 3
    decoding = template.decoding.schema
    assert decoding is not None
    assert decoding["properties"]["points"]["maxItems"] == CPU_DEFAULT_MAX_ITEMS
    assert decoding["properties"]["title"]["maxLength"] == 40  # the schema's own, smaller
    assert decoding["properties"]["points"]["items"]["maxLength"] == CPU_DEFAULT_MAX_STRING_LENGTH


def test_the_gpu_default_policy_caps_the_grammar_too(tmp_path: Path) -> None:
    """Uncapped, 28 % of the BYOS corpus ended invalid on an H100 (docs/benchmarks.md)."""
    write_template(tmp_path, policy=None)
    template = load_template(tmp_path, "t1", TemplateSettings(default_policy="gpu"))
    decoding = template.decoding.schema
    assert template.policy == default_policy("cpu") and decoding is not None
    assert decoding["properties"]["points"]["maxItems"] == CPU_DEFAULT_MAX_ITEMS


def test_a_policy_file_wins_over_the_default(tmp_path: Path) -> None:
    write_template(tmp_path, policy="[simplify]\nmax_items = 2\n")
    template = load_template(tmp_path, "t1")
    assert not template.default_policy and template.policy.simplify.max_items == 2


def test_the_default_policy_drops_formats_the_grammar_cannot_build(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "v": {"type": "string", "format": "semver"},
            "d": {"type": "string", "format": "date"},
        },
    }
    write_template(tmp_path, schema=schema, example={"v": "1.0.0", "d": "2024-01-31"}, policy=None)
    decoding = load_template(tmp_path, "t1").decoding.schema
    assert decoding is not None
    assert "format" not in decoding["properties"]["v"]
    # The cpu default decodes a grammar format by a bounded regex of it (issue 16).
    assert decoding["properties"]["d"]["pattern"] == FORMAT_PATTERNS["date"]


@pytest.mark.parametrize(
    "schema_uri, example, valid",
    [
        # draft-04: exclusiveMinimum is a flag on minimum
        ("http://json-schema.org/draft-04/schema#", {"n": 0}, False),
        ("http://json-schema.org/draft-04/schema#", {"n": 1}, True),
    ],
)
def test_results_are_validated_by_the_declared_draft(
    tmp_path: Path, schema_uri: str, example: dict[str, Any], valid: bool
) -> None:
    schema = {
        "$schema": schema_uri,
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "exclusiveMinimum": True}},
    }
    write_template(tmp_path, schema=schema, example={"n": 5}, policy=None)
    template = load_template(tmp_path, "t1")
    assert template.draft.name == "draft-04"
    assert (template.validate(example) == []) is valid
    assert template.decoding.schema is not None
    assert template.decoding.schema["properties"]["n"]["exclusiveMinimum"] == 0
    assert any("exclusiveMinimum" in line for line in template.normalisation)


def test_format_checking_is_a_setting(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
    write_template(tmp_path, schema=schema, example={"d": "2024-01-31"}, policy=None)
    checked = load_template(tmp_path, "t1")
    unchecked = load_template(tmp_path, "t1", TemplateSettings(format_checking=False))
    assert checked.validate({"d": "tomorrow"}) != []
    assert unchecked.validate({"d": "tomorrow"}) == []


def test_a_schema_above_the_size_limit_is_refused(tmp_path: Path) -> None:
    write_template(tmp_path)
    with pytest.raises(SchemaInvalid, match=r"above templates\.max_schema_bytes") as info:
        load_template(tmp_path, "t1", TemplateSettings(max_schema_bytes=50))
    assert "MAX_SCHEMA_BYTES" in info.value.hint


def test_a_recursive_schema_is_depth_limited_in_decoding_and_validated_in_full(
    tmp_path: Path,
) -> None:
    node = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
        },
        "required": ["name"],
    }
    schema = {"$defs": {"node": node}, "$ref": "#/$defs/node"}
    write_template(tmp_path, schema=schema, example={"name": "a"}, policy=None)
    template = load_template(tmp_path, "t1")
    assert any(c.startswith("depth-limited $ref") for c in template.decoding.changes)
    deep: dict[str, Any] = {"name": "x"}
    for _ in range(6):
        deep = {"name": "x", "children": [deep]}
    assert template.validate(deep) == []  # the full schema has no depth limit
    assert template.validate({"name": "x", "children": [{"children": []}]}) != []


def test_mutual_recursion_that_explodes_is_bounded(tmp_path: Path) -> None:
    branches = [{"$ref": f"#/$defs/e{i}"} for i in range(6)]
    defs = {
        f"e{i}": {"type": "object", "properties": {f"k{j}": {"anyOf": branches} for j in range(3)}}
        for i in range(6)
    }
    schema = {"$defs": defs, "$ref": "#/$defs/e0"}
    write_template(tmp_path, schema=schema, example={}, policy=None)
    with pytest.raises(SchemaInvalid, match="past 2000 references") as info:
        load_template(tmp_path, "t1")  # refused in a second, not after minutes of inlining
    assert "inline_refs = false" in info.value.message


def test_list_templates_skips_hidden_directories(tmp_path: Path) -> None:
    write_template(tmp_path, "b")
    write_template(tmp_path, "a")
    (tmp_path / ".git").mkdir()
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "README.md").write_text("x")
    assert list_templates(tmp_path) == ["a", "b"]
    assert list_templates(tmp_path / "missing") == []


def test_loading_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    directory = write_template(tmp_path)
    first = load_template(tmp_path, "t1")
    assert load_template(tmp_path, "t1") is first
    prompt = directory / "prompt.jinja"
    prompt.write_text("Changed: {{ text }}", encoding="utf-8")
    stat = prompt.stat()
    os.utime(prompt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_template(tmp_path, "t1")
    assert second is not first
    assert second.prompt_source == "Changed: {{ text }}"


# --- bad templates: one typed error per case, naming the template and the file ---------


@pytest.mark.parametrize("template_id", ["../etc", "a/b", "..", ".", "", "a\\b", "/abs"])
def test_ids_with_path_parts_are_refused(tmp_path: Path, template_id: str) -> None:
    with pytest.raises(TemplateNotFound, match="not a valid id"):
        load_template(tmp_path, template_id)


def test_unknown_id(tmp_path: Path) -> None:
    with pytest.raises(TemplateNotFound, match="unknown template 'nope'"):
        load_template(tmp_path, "nope")


@pytest.mark.parametrize("missing", ["schema.json", "example.json", "prompt.jinja"])
def test_missing_file(tmp_path: Path, missing: str) -> None:
    write_template(tmp_path, skip=(missing,))
    with pytest.raises(TemplateInvalid, match=f"template 't1': .*{missing}: missing file"):
        load_template(tmp_path, "t1")


@pytest.mark.parametrize(
    "schema, error, message",
    [
        ("{not json", SchemaInvalid, "schema.json: not valid JSON"),
        ("[1, 2]", SchemaInvalid, "must be a JSON object"),
        ({"type": "objekt"}, SchemaInvalid, "not a valid JSON Schema"),
        ({"properties": {"a": {"minLength": -1}}}, SchemaInvalid, "not a valid JSON Schema"),
        ({"properties": {"a": {"pattern": "(unclosed"}}}, SchemaInvalid, "not a valid JSON Schema"),
        (
            {"$schema": "http://json-schema.org/draft-03/schema#"},
            SchemaInvalid,
            "not a supported JSON Schema draft",
        ),
        (
            {"$schema": "http://json-schema.org/draft-04/schema#", "minimum": 1, "type": "strng"},
            SchemaInvalid,
            r"not a valid JSON Schema \(draft-04\): .* at \$.type",
        ),
        (
            {"properties": {"a": {"$ref": "https://example.com/x.json"}}},
            SchemaInvalid,
            "remote \\$ref 'https://example.com/x.json' at \\$.properties.a",
        ),
        (
            {"properties": {"a": {"type": "string", "pattern": "a" * (MAX_PATTERN_CHARS + 1)}}},
            SchemaInvalid,
            "over the bound",
        ),
    ],
)
def test_bad_schema(tmp_path: Path, schema: Any, error: type[Exception], message: str) -> None:
    write_template(tmp_path, schema=schema, example={})
    with pytest.raises(error, match=message) as info:
        load_template(tmp_path, "t1")
    assert "'t1'" in str(info.value)


def test_recursive_schema_is_refused_without_a_depth(tmp_path: Path) -> None:
    schema = {"$defs": {"n": {"properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}
    policy = "[simplify]\nmax_ref_depth = 0\n"
    write_template(tmp_path, schema=schema, example={}, policy=policy)
    with pytest.raises(SchemaInvalid, match="recursive \\$ref"):
        load_template(tmp_path, "t1")


def test_recursive_schema_loads_when_refs_are_not_inlined(tmp_path: Path) -> None:
    schema = {
        "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
        "$ref": "#/$defs/n",
    }
    write_template(tmp_path, schema=schema, example={}, policy="[simplify]\ninline_refs = false\n")
    assert load_template(tmp_path, "t1").decoding.schema is not None


@pytest.mark.parametrize(
    "example, message",
    [
        ("{oops", "example.json: not valid JSON"),
        ("[]", "must be a JSON object"),
        ({"title": "", "points": [], "date": None}, "\\$.title: '' should be non-empty"),
        ({**EXAMPLE, "date": "31.01.2025"}, "\\$.date: '31.01.2025' is not a 'date'"),
        ({**EXAMPLE, "extra": 1}, "Additional properties are not allowed"),
    ],
)
def test_example_that_does_not_validate(tmp_path: Path, example: Any, message: str) -> None:
    write_template(tmp_path, example=example)
    with pytest.raises(ExampleInvalid, match=message) as info:
        load_template(tmp_path, "t1")
    assert "template 't1'" in str(info.value)


@pytest.mark.parametrize(
    "policy, message",
    [
        ("[simplify\nmax_items = 2", "not valid TOML"),
        ("[simplify]\nmax_item = 2\n", "unknown key 'simplify.max_item'"),
        ("on_invalid = 'retry'\n", "unknown key 'on_invalid'"),
        ("[retry]\nattempts = 0\n", "retry.attempts"),
        ("[simplify]\ndrop_keywords = ['properties']\n", "cannot drop"),
        ("[simplify]\nmode = 'regexp'\n", "simplify.mode"),
    ],
)
def test_bad_policy(tmp_path: Path, policy: str, message: str) -> None:
    write_template(tmp_path, policy=policy)
    with pytest.raises(TemplateInvalid, match=message) as info:
        load_template(tmp_path, "t1")
    assert "policy.toml" in str(info.value)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("{% if text %}unclosed", "syntax error at line 1"),
        ("{{ language.upper() }} {{ text }}", "UndefinedError|has no attribute"),
        ("{{ text.__class__.__mro__ }}", "SecurityError|unsafe"),
        ("{{ text | no_such_filter }}", "no_such_filter"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_prompt_that_fails_to_render(tmp_path: Path, prompt: str, message: str) -> None:
    write_template(tmp_path, prompt=prompt)
    with pytest.raises(PromptRenderError, match=message) as info:
        load_template(tmp_path, "t1")
    assert "prompt.jinja" in str(info.value)


def test_every_template_error_is_a_non_retryable_structsum_error(tmp_path: Path) -> None:
    write_template(tmp_path, example={"title": 1})
    with pytest.raises(StructsumError) as info:
        load_template(tmp_path, "t1")
    assert not info.value.retryable
    assert info.value.details["template_id"] == "t1"
    assert info.value.hint


# --- validation and hashing ---------------------------------------------------------------


def test_validate_instance_lists_readable_errors_by_path() -> None:
    bad = {"title": "x" * 41, "points": ["a", 2, "c", "d"], "date": "tomorrow", "more": 1}
    errors = validate_instance(SCHEMA, bad)
    assert errors == sorted(errors)
    assert "$.date: 'tomorrow' is not a 'date'" in errors
    assert "$.points[1]: 2 is not of type 'string'" in errors
    assert any(e.startswith("$.points: ") and "too long" in e for e in errors)
    assert any(e.startswith("$.title: ") and "too long" in e for e in errors)
    assert any(e.startswith("$: Additional properties") for e in errors)
    assert validate_instance(SCHEMA, EXAMPLE) == []


def test_validate_instance_shortens_messages_that_quote_runaway_output() -> None:
    errors = validate_instance(SCHEMA, {**EXAMPLE, "title": "y" * 10_000})
    assert len(errors) == 1
    assert len(errors[0]) <= MAX_ERROR_CHARS + len("$.title: ") + len(" ... ")


def test_schema_hash_is_canonical_and_stable() -> None:
    reordered = json.loads(json.dumps(SCHEMA, sort_keys=True))
    assert schema_sha256(reordered) == schema_sha256(SCHEMA)
    assert schema_sha256({"a": 1}) == (
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )
    assert schema_sha256({"a": 2}) != schema_sha256({"a": 1})


def test_a_cached_template_edited_in_memory_is_reloaded() -> None:
    from structsum.config import Settings

    templates_dir = Settings().templates_dir
    first = load_template(templates_dir, "generic_summary_v1")
    first.schema["properties"]["title"]["maxLength"] = 1  # a careless caller
    second = load_template(templates_dir, "generic_summary_v1")
    assert second.schema["properties"]["title"]["maxLength"] != 1
    assert schema_sha256(second.schema) == second.schema_sha256
