"""Prompts are Jinja templates rendered in Jinja's sandbox, strictly.

A prompt is template-author code that runs in the worker: the sandbox keeps it
from reaching Python objects, and ``StrictUndefined`` turns a variable the
request forgot into an error instead of an empty string in the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment

from structsum.errors import PromptRenderError

if TYPE_CHECKING:
    from structsum.processors.templates import Template

# Reserved prompt variables; a request variable may not shadow them.
RESERVED_VARIABLES = frozenset({"text", "schema", "example", "language"})
# Rendering a prompt at load time proves it renders; these stand in for the text and
# for the request variables the prompt reads (a request that lacks one fails at render).
_SAMPLE_TEXT = "Alice: we ship on Friday. Bob: I will write the release notes."
_SAMPLE_VARIABLE = "sample"

_jinja = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
# What a sandboxed render can raise from template code (filters, arithmetic, lookups).
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


def compile_prompt(source: str, where: str, template_id: str) -> jinja2.Template:
    try:
        return _jinja.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptRenderError(
            f"{where}: syntax error at line {exc.lineno}: {exc.message}",
            {"template_id": template_id, "line": exc.lineno},
        ) from exc


def request_variables(source: str) -> frozenset[str]:
    """Names the prompt reads besides the reserved ones: the request supplies them."""
    names = jinja2.meta.find_undeclared_variables(_jinja.parse(source))
    return frozenset(names) - RESERVED_VARIABLES


def render_prompt(
    template: Template,
    *,
    text: str,
    language: str | None,
    variables: Mapping[str, str | int | float | bool],
) -> str:
    """Render the template's prompt in the sandbox; undefined variables are errors.

    Available: ``text``, ``schema`` (the full schema, pretty JSON), ``example``
    (one-line JSON, or empty when the policy sets ``example = false``), ``language``
    and the request's ``variables``.
    """
    shadowed = sorted(RESERVED_VARIABLES & set(variables))
    if shadowed:
        raise PromptRenderError(
            f"template {template.id!r}: request variables {shadowed} shadow reserved names",
            {"template_id": template.id, "variables": shadowed},
        )
    context: dict[str, Any] = {
        **variables,
        "text": text,
        "schema": template.schema_json,
        # Empty when the policy says so: prompts wrap it in {% if example %}.
        "example": template.example_json if template.policy.example else "",
        "language": language,
    }
    try:
        return template.compiled_prompt.render(context).strip()
    except _RENDER_ERRORS as exc:
        raise PromptRenderError(
            f"template {template.id!r}: {template.prompt_path}: {type(exc).__name__}: {exc}",
            {"template_id": template.id},
        ) from exc


def render_sample(template: Template) -> str:
    """Render with a sample text and sample variables: proves at load that the prompt renders."""
    samples = dict.fromkeys(template.request_variables, _SAMPLE_VARIABLE)
    try:
        return render_prompt(template, text=_SAMPLE_TEXT, language=None, variables=samples)
    except PromptRenderError as exc:
        raise PromptRenderError(
            f"{exc.message} (rendering a sample text at load)",
            {"template_id": template.id},
        ) from exc
