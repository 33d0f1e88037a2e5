"""The gate a template author runs before shipping: does the decoder produce what the prompt shows?

Loading already checks what a template author can get wrong in its files. This
adds the decoding side, offline: the simplified schema keeps the example, vLLM
does not refuse it for xgrammar (when xgrammar is the configured backend), and
xgrammar compiles it the way vLLM does and accepts the example. No engine, no
model: the grammar matcher is fed characters.
"""

from __future__ import annotations

import json
from typing import Any

from structsum.config.settings import TemplateSettings
from structsum.config.template_dirs import TemplateDirs
from structsum.errors import SchemaInvalid, StructsumError
from structsum.processors.policy import DEFAULT_DECODING
from structsum.processors.schema_walk import walk
from structsum.processors.templates import Template, load_template, validate_instance


def grammar_accepts(
    schema: dict[str, Any], instance: object, *, any_whitespace: bool = True
) -> bool:
    """Whether xgrammar, compiled the way vLLM compiles it, accepts ``instance``'s JSON.

    No model and no tokenizer are needed: the matcher is fed characters. Keys are
    serialized in the instance's own order, which must be the schema's declared order
    (vLLM's xgrammar backend does not allow any order). Raises ``SchemaInvalid`` when
    the schema does not compile.
    """
    import xgrammar as xgr

    try:
        compiler = xgr.GrammarCompiler(xgr.TokenizerInfo([]), cache_enabled=False)
        compiled = compiler.compile_json_schema(
            schema,
            any_whitespace=any_whitespace,
            separators=None if any_whitespace else (",", ":"),
        )
    except RuntimeError as exc:
        raise SchemaInvalid(f"xgrammar cannot compile the decoding schema: {exc}", {}) from exc
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    separators = (", ", ": ") if any_whitespace else (",", ":")
    text = json.dumps(instance, ensure_ascii=False, separators=separators)
    return bool(matcher.accept_string(text)) and bool(matcher.is_terminated())


def _vllm_refuses(schema: dict[str, Any]) -> bool | None:
    """vLLM's own test for schemas its xgrammar backend refuses; None without vLLM."""
    try:
        from vllm.v1.structured_output.backend_xgrammar import (
            has_xgrammar_unsupported_json_features,
        )
    except ImportError:
        return None
    return bool(has_xgrammar_unsupported_json_features(schema))


# Keywords that constrain instances (annotations such as title/description are left out).
ASSERTION_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "patternProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
# Kept in the decoding schema but not exact in a grammar: say so rather than claim them.
GRAMMAR_APPROXIMATES = {"oneOf": "oneOf (decoded as anyOf)", "allOf": "allOf (partly)"}


def keyword_coverage(template: Template) -> tuple[list[str], list[str]]:
    """(keywords the decoding grammar enforces, keywords only validation checks).

    A keyword the simplifier dropped, or one in a mode without a schema, is checked
    by validation alone; the full schema validates every keyword either way.
    """
    used = {k for _, node in walk(template.normalised) for k in node} & ASSERTION_KEYWORDS
    decoding = template.decoding.schema
    kept = (
        {k for _, node in walk(decoding) for k in node} & ASSERTION_KEYWORDS
        if decoding is not None and template.decoding.mode == "json_schema"
        else set()
    )
    grammar = sorted(GRAMMAR_APPROXIMATES.get(k, k) for k in used & kept)
    return grammar, sorted(used - kept)


def decoding_problems(template: Template, *, backend: str) -> list[str]:
    """What keeps the decoder from producing output like the template's own example.

    Every decoding schema a guided attempt uses is checked; a problem of one other
    than ``default`` names it.
    """
    problems: list[str] = []
    for name in template.policy.retry.guided_decodings():
        prefix = "" if name == DEFAULT_DECODING else f"decoding schema {name!r}: "
        problems += [prefix + problem for problem in _schema_problems(template, name, backend)]
    return problems


def _schema_problems(template: Template, name: str, backend: str) -> list[str]:
    decoding = template.decodings[name]
    if decoding.schema is None or decoding.mode != "json_schema":
        return []
    problems = [
        f"example is outside the decoding schema: {error}"
        for error in validate_instance(decoding.schema, template.example)
    ]
    if backend == "xgrammar" and _vllm_refuses(decoding.schema):
        problems.append(
            "vLLM refuses the decoding schema for xgrammar (e.g. uniqueItems, contains, "
            "multipleOf): add them to [simplify] drop_keywords"
        )
    if not grammar_accepts(decoding.schema, template.example):
        problems.append(
            "xgrammar rejects the example under the decoding schema "
            "(keys must follow the schema's property order; values within the caps)"
        )
    return problems


def template_problems(
    templates_dir: TemplateDirs,
    template_id: str,
    *,
    backend: str,
    options: TemplateSettings | None = None,
) -> list[str]:
    """Everything wrong with one template, one line each (``[]``: it is fit to ship).

    A typed error from loading or compiling is a problem to report, not a crash:
    the check goes on with the next template.
    """
    try:
        template = load_template(templates_dir, template_id, options)
        return decoding_problems(template, backend=backend)
    except StructsumError as exc:
        return [f"{exc.code}: {exc.message}"]
