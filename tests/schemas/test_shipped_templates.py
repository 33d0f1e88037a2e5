"""Offline checks of every template under schemas/: no engine, no model, CPU only.

Each shipped template must load (schema valid, example valid, policy known,
prompt renders), and its *decoding* schema must be one vLLM accepts and xgrammar
compiles, and must accept the template's own example - otherwise the model is
guided away from the very output the prompt shows it.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from structsum.config import Settings
from structsum.models import SummaryRequest
from structsum.processors.rendering import render_prompt
from structsum.processors.simplify import simplify_schema
from structsum.processors.template_check import grammar_accepts
from structsum.processors.templates import (
    Template,
    list_templates,
    load_template,
    validate_instance,
)

TEMPLATES_DIR = Settings().templates_dir
SHIPPED = list_templates(TEMPLATES_DIR)
# What the issue asks for, at least; more may ship.
REQUIRED = {
    "generic_summary_v1",
    "meeting_minutes_v1",
    "document_brief_v1",
    "interview_summary_v1",
}


@pytest.fixture(params=SHIPPED)
def template(request: pytest.FixtureRequest) -> Template:
    return load_template(TEMPLATES_DIR, request.param)


def test_the_required_templates_ship() -> None:
    assert set(SHIPPED) >= REQUIRED


def test_each_template_has_all_four_files(template: Template) -> None:
    names = {p.name for p in template.path.iterdir()}
    assert {"schema.json", "prompt.jinja", "example.json", "policy.toml"} <= names


def test_schema_is_valid_draft_2020_12(template: Template) -> None:
    Draft202012Validator.check_schema(template.schema)
    assert template.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert template.schema.get("type") == "object"


def test_example_validates_against_the_full_schema(template: Template) -> None:
    assert validate_instance(template.schema, template.example) == []


def test_a_broken_example_is_caught(template: Template) -> None:
    # Guards the test above: the schema is strict enough to reject an extra key.
    broken = {**template.example, "unexpected_key": 1}
    assert validate_instance(template.schema, broken) != []


def test_prompt_renders_with_example_first_and_text_last(template: Template) -> None:
    text = "Ann: the launch moves to May.\nBob: agreed."
    prompt = render_prompt(template, text=text, language="en", variables={})
    assert template.example_json in prompt
    assert prompt.index(template.example_json) < prompt.index(text)
    assert prompt.rstrip('"\n').endswith(text)
    assert "en" in prompt.removesuffix(text)
    assert render_prompt(template, text=text, language=None, variables={}) != prompt


def test_decoding_schema_is_valid_and_keeps_the_example(template: Template) -> None:
    decoding = template.decoding
    assert decoding.mode == "json_schema" and decoding.schema is not None
    Draft202012Validator.check_schema(decoding.schema)
    assert validate_instance(decoding.schema, template.example) == []


def test_shipped_policies_keep_caps_for_the_bundled_cpu_model(template: Template) -> None:
    # DESIGN.md section 5: on the 2-core box the 135M model only ends inside caps.
    schema = template.decoding.schema
    assert schema is not None
    assert not template.policy.simplify.strip_caps
    for node in _walk(schema):
        if "array" in _types(node):
            assert "maxItems" in node, node
        if "string" in _types(node) and not ({"enum", "const", "pattern", "format"} & set(node)):
            assert "maxLength" in node, node


@pytest.fixture(scope="module")
def vllm_xgrammar_check() -> Any:
    backend = pytest.importorskip("vllm.v1.structured_output.backend_xgrammar")
    return backend.has_xgrammar_unsupported_json_features


@pytest.mark.engine  # imports vLLM
def test_vllm_accepts_the_decoding_schema_for_xgrammar(
    template: Template, vllm_xgrammar_check: Any
) -> None:
    assert not vllm_xgrammar_check(template.decoding.schema)


@pytest.mark.parametrize("any_whitespace", [True, False])
def test_xgrammar_compiles_and_accepts_the_example(
    template: Template, any_whitespace: bool
) -> None:
    assert template.decoding.schema is not None
    assert grammar_accepts(
        template.decoding.schema, template.example, any_whitespace=any_whitespace
    )


def test_xgrammar_rejects_output_outside_the_decoding_schema(template: Template) -> None:
    schema = template.decoding.schema
    assert schema is not None
    assert not grammar_accepts(schema, {**template.example, "unexpected_key": 1})
    reordered = dict(reversed(list(template.example.items())))
    assert not grammar_accepts(schema, reordered)


@pytest.fixture(scope="module")
def tokenizer_info(bundled_tokenizer: Any) -> Any:
    """xgrammar's view of the bundled model's vocabulary, if the model is prepared."""
    xgr = pytest.importorskip("xgrammar")
    return xgr.TokenizerInfo.from_huggingface(bundled_tokenizer)


def test_grammar_compiles_with_the_bundled_tokenizer_and_accepts_the_example(
    template: Template, tokenizer_info: Any
) -> None:
    import xgrammar as xgr

    compiled = xgr.GrammarCompiler(tokenizer_info).compile_json_schema(
        template.decoding.schema, any_whitespace=True
    )
    matcher = xgr.GrammarMatcher(compiled)
    assert matcher.accept_string(json.dumps(template.example))
    assert matcher.accept_token(tokenizer_info.stop_token_ids[0])
    assert matcher.is_terminated()


def test_regex_mode_works_for_the_template(template: Template) -> None:
    # A template author may switch to regex mode; outlines must handle the schema.
    policy = template.policy.simplify.model_copy(update={"mode": "regex"})
    simplified = simplify_schema(template.schema, policy)
    assert simplified.regex is not None
    assert re.fullmatch(simplified.regex, json.dumps(template.example))


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type")
    return {declared} if isinstance(declared, str) else set(declared or [])


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_text_comes_last_so_jobs_of_a_template_share_a_prefix(template: Template) -> None:
    """vLLM's prefix cache reuses the template's part of the prompt only if it comes first."""
    from structsum.processors.summary import _messages

    first = _messages(template, SummaryRequest(text="FIRST", template_id=template.id), "FIRST")
    second = _messages(template, SummaryRequest(text="SECOND", template_id=template.id), "SECOND")
    prompt, other = first[-1]["content"], second[-1]["content"]
    before, after = prompt.split("FIRST")
    assert first[:-1] == second[:-1]  # the system message is the same for every job
    assert other == before + "SECOND" + after
    assert len(after) <= len('\n"""')  # at most the closing quotes follow the text
