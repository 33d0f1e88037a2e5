"""The decoding-side template check, offline: xgrammar fed characters, no engine, no model."""

import json
from pathlib import Path

from structsum.processors.template_check import (
    decoding_problems,
    grammar_accepts,
    template_problems,
)
from structsum.processors.templates import load_template
from tests.processors.template_files import EXAMPLE, SCHEMA, write_template


def test_grammar_accepts_valid_json_and_rejects_what_the_schema_forbids() -> None:
    assert grammar_accepts(SCHEMA, EXAMPLE)
    assert grammar_accepts(SCHEMA, EXAMPLE, any_whitespace=False)
    assert not grammar_accepts(SCHEMA, {**EXAMPLE, "points": ["a", "b", "c", "d"]})
    assert not grammar_accepts(SCHEMA, {**EXAMPLE, "date": "tomorrow"})
    assert not grammar_accepts(SCHEMA, {"points": ["a"], "title": "t", "date": None})


def test_a_good_template_has_no_problems(tmp_path: Path) -> None:
    write_template(tmp_path)
    assert template_problems(tmp_path, "t1", backend="guidance") == []


def test_an_example_beyond_the_caps_is_outside_the_decoding_schema(tmp_path: Path) -> None:
    write_template(tmp_path, policy="[simplify]\nmax_items = 1\n")
    problems = decoding_problems(load_template(tmp_path, "t1"), backend="guidance")
    assert "example is outside the decoding schema: $.points: ['a', 'b'] is too long" in problems
    assert any(p.startswith("xgrammar rejects the example") for p in problems)


def test_an_example_out_of_property_order_is_one_xgrammar_cannot_produce(tmp_path: Path) -> None:
    write_template(tmp_path, example=json.dumps(dict(reversed(list(EXAMPLE.items())))))
    problems = template_problems(tmp_path, "t1", backend="guidance")
    assert len(problems) == 1 and problems[0].startswith("xgrammar rejects the example")


def test_a_template_that_does_not_load_is_reported_not_raised(tmp_path: Path) -> None:
    write_template(tmp_path, schema="{")
    problems = template_problems(tmp_path, "t1", backend="xgrammar")
    assert len(problems) == 1
    assert problems[0].startswith("SchemaInvalid: template 't1'")
    assert template_problems(tmp_path, "missing", backend="xgrammar")[0].startswith(
        "TemplateNotFound:"
    )
