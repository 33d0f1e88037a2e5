"""Remote ``$ref`` from an allow-listed local registry (issue 16): resolved through
``referencing`` for validation and for the decoding schema, nothing fetched; every
other remote ``$ref`` refused with a typed error that says how to allow it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from structsum.config import Settings
from structsum.config.settings import EngineSettings, TemplateSettings
from structsum.errors import SchemaInvalid
from structsum.models import SummaryRequest
from structsum.processors.scaffold import write_template as scaffold_template
from structsum.processors.schema_registry import REGISTRY_SETTING, load_registry
from structsum.processors.schema_walk import walk
from structsum.processors.summary import summarize
from structsum.processors.templates import load_template
from tests.fakes import FakeEngine
from tests.processors.template_files import write_template

CORPUS = Path(__file__).resolve().parents[1] / "data" / "schema_corpus"

ADDRESS: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://example.com/schemas/address.json",
    "type": "object",
    "properties": {"street": {"$ref": "#/definitions/street"}, "city": {"type": "string"}},
    "required": ["street"],
    "definitions": {"street": {"type": "string", "maxLength": 40}},
}
PERSON: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$id": "https://example.com/schemas/person.json",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "home": {"$ref": "address.json"},  # relative to $id
        "street": {"$ref": "https://example.com/schemas/address.json#/definitions/street"},
    },
    "required": ["name", "home"],
}
VALID = {"name": "Ana", "home": {"street": "Main St 1"}, "street": "Elm"}


def registry(root: Path, *schemas: dict[str, Any]) -> Path:
    folder = root / "registry"
    folder.mkdir(exist_ok=True)
    for i, schema in enumerate(schemas):
        (folder / f"s{i}.json").write_text(json.dumps(schema), encoding="utf-8")
    return folder


def options(folder: Path | None) -> TemplateSettings:
    return TemplateSettings(schema_registry_dir=folder)


def test_a_remote_ref_in_the_registry_resolves_for_validation_and_decoding(
    tmp_path: Path,
) -> None:
    folder = registry(tmp_path, ADDRESS)
    write_template(tmp_path / "t", schema=PERSON, example=VALID, policy=None)
    template = load_template(tmp_path / "t", "t1", options(folder))
    assert template.validate(VALID) == []
    errors = template.validate({"name": "Ana", "home": {"street": "x" * 41}})
    assert errors and "too long" in errors[0]
    decoding = template.decoding.schema
    assert decoding is not None
    assert not [node for _, node in walk(decoding) if "$ref" in node]  # all inlined
    home = decoding["properties"]["home"]
    assert home["properties"]["street"]["maxLength"] == 40
    assert home["required"] == ["street"]
    assert decoding["properties"]["street"]["maxLength"] == 40


def test_without_the_registry_a_remote_ref_is_refused_with_how_to_allow_it(
    tmp_path: Path,
) -> None:
    write_template(tmp_path / "t", schema=PERSON, example=VALID, policy=None)
    with pytest.raises(SchemaInvalid) as caught:
        load_template(tmp_path / "t", "t1", options(None))
    message = caught.value.message
    assert "https://example.com/schemas/address.json" in message
    assert REGISTRY_SETTING in message and "nothing is fetched" in message
    assert caught.value.details["uri"] == "https://example.com/schemas/address.json"


def test_a_remote_ref_outside_the_registry_is_still_refused(tmp_path: Path) -> None:
    other = {**ADDRESS, "$id": "https://example.com/schemas/other.json"}
    folder = registry(tmp_path, other)
    write_template(tmp_path / "t", schema=PERSON, example=VALID, policy=None)
    with pytest.raises(SchemaInvalid, match="not in the local schema registry") as caught:
        load_template(tmp_path / "t", "t1", options(folder))
    assert str(folder) in caught.value.message


def test_a_registry_file_that_refers_outside_the_registry_is_refused(tmp_path: Path) -> None:
    leaky = {**ADDRESS, "properties": {"street": {"$ref": "https://elsewhere.org/s.json"}}}
    folder = registry(tmp_path, leaky)
    write_template(tmp_path / "t", schema=PERSON, example=VALID, policy=None)
    with pytest.raises(SchemaInvalid, match=r"elsewhere\.org") as caught:
        load_template(tmp_path / "t", "t1", options(folder))
    assert "registry schema" in caught.value.message


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"type": "object"}, "has no \\$id"),
        ({"$id": "https://x/a.json", "type": "objekt"}, "not a valid JSON Schema"),
        ("{not json", "cannot read it as JSON"),
    ],
)
def test_a_bad_registry_file_is_refused_typed(tmp_path: Path, content: Any, problem: str) -> None:
    folder = tmp_path / "registry"
    folder.mkdir()
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(SchemaInvalid, match=problem) as caught:
        load_registry(folder)
    assert caught.value.details["file"] == "bad.json"


def test_two_registry_files_with_one_id_are_refused(tmp_path: Path) -> None:
    folder = registry(tmp_path, ADDRESS, ADDRESS)
    with pytest.raises(SchemaInvalid, match="both have \\$id"):
        load_registry(folder)


def test_the_json_schema_suites_remote_ref_loads_from_a_registry(tmp_path: Path) -> None:
    """The corpus schema that points at http://localhost:1234/integer.json (refused
    without a registry) resolves once the registry holds that document."""
    schema = json.loads((CORPUS / "draft-06_suite_refRemote_remote-ref.json").read_text())
    integer = {
        "$schema": "http://json-schema.org/draft-06/schema#",
        "$id": "http://localhost:1234/integer.json",
        "type": "integer",
    }
    folder = registry(tmp_path, integer)
    root = {"type": "object", "properties": {"n": schema}, "required": ["n"]}
    root["$schema"] = schema["$schema"]
    write_template(tmp_path / "t", schema=root, example={"n": 3}, policy=None)
    template = load_template(tmp_path / "t", "t1", options(folder))
    assert template.validate({"n": "three"}) != []
    decoding = template.decoding.schema
    assert decoding is not None and decoding["properties"]["n"]["type"] == "integer"


def test_summaries_validate_through_the_registry(tmp_path: Path) -> None:
    folder = registry(tmp_path, ADDRESS)
    write_template(tmp_path / "t", schema=PERSON, example=VALID, policy=None)
    settings = Settings(
        templates_dir=tmp_path / "t",
        engine=EngineSettings(max_model_len=4096),
        templates=options(folder),
    )
    too_long = json.dumps({"name": "Ana", "home": {"street": "x" * 41}})
    engine = FakeEngine([(too_long, "stop"), (json.dumps(VALID), "stop")])
    result = summarize(SummaryRequest(text="Ana lives on Main St 1.", template_id="t1"),
                       engine=engine, settings=settings)  # fmt: skip
    assert result.valid and len(result.attempts) == 2
    assert "too long" in result.attempts[0].errors[0]
    guide = engine.requests[0].guide
    assert guide is not None and "$ref" not in json.dumps(guide.value)


def test_templates_add_resolves_remote_refs_from_the_registry(tmp_path: Path) -> None:
    folder = registry(tmp_path, ADDRESS)
    scaffold_template(tmp_path / "t" / "p", PERSON, prompt=None, kind="cpu",
                      registry=load_registry(folder))  # fmt: skip
    example = json.loads((tmp_path / "t" / "p" / "example.json").read_text())
    template = load_template(tmp_path / "t", "p", options(folder))
    assert template.validate(example) == []


def test_the_registry_is_a_setting_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REGISTRY_SETTING, str(tmp_path))
    assert Settings().templates.schema_registry_dir == tmp_path
