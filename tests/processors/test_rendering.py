"""Rendering a loaded template's prompt: what the model sees, and what a request must send."""

import json
from pathlib import Path

import pytest

from structsum.errors import PromptRenderError
from structsum.processors.rendering import render_prompt
from structsum.processors.templates import load_template
from tests.processors.template_files import EXAMPLE, write_template

# --- rendering --------------------------------------------------------------------------


def test_render_puts_the_stable_part_first_and_the_text_last(tmp_path: Path) -> None:
    write_template(tmp_path, prompt="{{ schema }}\n{{ example }}\n{{ who }}:\n{{ text }}")
    template = load_template(tmp_path, "t1")
    a = render_prompt(template, text="first text", language=None, variables={"who": "Ann"})
    b = render_prompt(template, text="other", language=None, variables={"who": "Ann"})
    assert a.endswith("first text") and b.endswith("other")
    assert a.removesuffix("first text") == b.removesuffix("other")
    assert a.startswith(template.schema_json)
    assert json.dumps(EXAMPLE) in a


def test_render_passes_language_and_scalar_variables(tmp_path: Path) -> None:
    write_template(tmp_path, prompt="{{ language }} {{ n }} {{ flag }} {{ text }}")
    template = load_template(tmp_path, "t1")
    out = render_prompt(template, text="T", language="de", variables={"n": 1, "flag": True})
    assert out == "de 1 True T"


def test_request_variables_cannot_shadow_reserved_names(tmp_path: Path) -> None:
    write_template(tmp_path)
    template = load_template(tmp_path, "t1")
    with pytest.raises(PromptRenderError, match="shadow reserved"):
        render_prompt(template, text="x", language=None, variables={"text": "evil"})


def test_request_variables_are_named_and_required_at_render(tmp_path: Path) -> None:
    write_template(tmp_path, prompt="{{ who }} {{ text }}")
    template = load_template(tmp_path, "t1")
    assert template.request_variables == {"who"}
    with pytest.raises(PromptRenderError, match="'who' is undefined"):
        render_prompt(template, text="x", language=None, variables={})
    assert render_prompt(template, text="x", language=None, variables={"who": "Ann"}) == "Ann x"


def test_optional_request_variables(tmp_path: Path) -> None:
    write_template(tmp_path, prompt="{% if who is defined %}{{ who }}: {% endif %}{{ text }}")
    template = load_template(tmp_path, "t1")
    assert render_prompt(template, text="x", language=None, variables={}) == "x"
    assert render_prompt(template, text="x", language=None, variables={"who": "B", "z": 1}) == (
        "B: x"
    )
