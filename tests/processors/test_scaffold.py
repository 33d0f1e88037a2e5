"""templates add's parts: a readable example that validates, a prompt from the schema."""

from pathlib import Path

import pytest

from structsum.errors import ExampleInvalid
from structsum.processors.policy import default_policy
from structsum.processors.rendering import compile_prompt
from structsum.processors.scaffold import default_prompt, example_instance, policy_toml
from structsum.processors.templates import validate_instance


def test_example_is_readable_and_in_schema_order() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "userName": {"type": "string"},
            "when": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 2, "exclusiveMinimum": True},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["code"],
    }
    example = example_instance(schema)
    assert list(example) == ["userName", "when", "count", "code", "tags"]
    assert example["userName"] == "example user name"
    assert example["count"] == 3 and example["code"] == "AAA"
    assert validate_instance(schema, example) == []


def test_an_unsatisfiable_schema_is_a_typed_error() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}},
        "required": ["a"],
    }
    with pytest.raises(ExampleInvalid, match="example"):
        example_instance(schema)


def test_prompt_describes_fields_and_keeps_their_braces_literal() -> None:
    schema = {
        "title": "Release",
        "type": "object",
        "properties": {
            "version": {"type": "string", "description": "Like {{ major }}.{{ minor }}"},
            "notes": {"type": "string"},
        },
        "required": ["version"],
    }
    prompt = default_prompt(schema)
    rendered = compile_prompt(prompt, "prompt.jinja", "t").render(
        text="TEXT", example="{}", language=None
    )
    assert '"version" (required): Like {{ major }}.{{ minor }}' in rendered
    assert '"notes": see the example' in rendered and "TEXT" in rendered


def test_policy_toml_is_the_profile_default(tmp_path: Path) -> None:
    import tomllib

    from structsum.processors.policy import Policy

    for kind in ("cpu", "gpu"):
        assert Policy.model_validate(tomllib.loads(policy_toml(kind))) == default_policy(kind)
