import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from structsum.commands.templates import app
from structsum.config import Settings, get_settings, template_dirs

SHIPPED_DIR = Settings().templates_dir
runner = CliRunner()


@pytest.fixture(autouse=True)
def client_install_without_vllm(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unit tests run `templates check` as on a machine without vLLM (its check is skipped).

    Importing vLLM costs seconds and is what the engine marker is for; the vLLM
    check itself is tested under that marker.
    """
    if request.node.get_closest_marker("engine"):
        return
    for name in ("vllm", "vllm.v1.structured_output.backend_xgrammar"):
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]


@pytest.fixture
def templates_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped templates that a test may break."""
    directory = tmp_path / "schemas"
    shutil.copytree(SHIPPED_DIR, directory, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("STRUCTSUM_TEMPLATES_DIR", str(directory))
    get_settings.cache_clear()
    yield directory
    get_settings.cache_clear()


def test_list_shows_every_template(templates_dir: Path) -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for template_id in ("generic_summary_v1", "meeting_minutes_v1", "document_brief_v1"):
        assert template_id in result.output


def test_list_marks_a_broken_template(templates_dir: Path) -> None:
    (templates_dir / "meeting_minutes_v1" / "example.json").write_text("{}")
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "invalid: ExampleInvalid" in result.output


def test_list_with_no_templates_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The user directory adds to the shipped templates: both must be empty.
    monkeypatch.setattr(template_dirs, "shipped_templates_dir", lambda: tmp_path / "empty")
    monkeypatch.setenv("STRUCTSUM_TEMPLATES_DIR", str(tmp_path / "empty"))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "no templates" in result.output


def test_an_empty_user_directory_still_lists_the_shipped_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("STRUCTSUM_TEMPLATES_DIR", str(tmp_path / "empty"))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "generic_summary_v1" in result.output


def test_check_passes_on_the_shipped_templates(templates_dir: Path) -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len([p for p in templates_dir.iterdir() if p.is_dir()])


def test_check_fails_with_one_line_per_problem_and_no_traceback(templates_dir: Path) -> None:
    (templates_dir / "generic_summary_v1" / "policy.toml").write_text("[simplify]\nmax_item = 5\n")
    (templates_dir / "interview_summary_v1" / "schema.json").write_text("{")
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert "FAIL generic_summary_v1: TemplateInvalid" in result.output
    assert "unknown key 'simplify.max_item'" in result.output
    assert "FAIL interview_summary_v1: SchemaInvalid" in result.output
    assert "ok   meeting_minutes_v1" in result.output
    assert "2 of 4 template(s) have problems" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_one_id(templates_dir: Path) -> None:
    assert runner.invoke(app, ["check", "document_brief_v1"]).exit_code == 0
    result = runner.invoke(app, ["check", "no_such_template"])
    assert result.exit_code == 1
    assert "TemplateNotFound" in result.output


def test_check_catches_an_example_the_grammar_cannot_produce(templates_dir: Path) -> None:
    # Valid under the full schema, but its keys are out of the schema's order, which
    # vLLM's xgrammar backend enforces: the prompt would show an unreachable layout.
    path = templates_dir / "generic_summary_v1" / "example.json"
    example = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(example.items())))))
    result = runner.invoke(app, ["check", "generic_summary_v1"])
    assert result.exit_code == 1
    assert "xgrammar rejects the example" in result.output


def test_check_catches_an_example_beyond_the_policy_caps(templates_dir: Path) -> None:
    (templates_dir / "generic_summary_v1" / "policy.toml").write_text(
        "[simplify]\nmax_items = 1\nmax_string_length = 200\n"
    )
    result = runner.invoke(app, ["check", "generic_summary_v1"])
    assert result.exit_code == 1
    assert "example is outside the decoding schema: $.key_points" in result.output


def test_check_covers_every_decoding_schema_the_attempts_use(templates_dir: Path) -> None:
    (templates_dir / "generic_summary_v1" / "policy.toml").write_text(
        "[simplify]\nmax_items = 5\nmax_string_length = 200\n"
        "[simplify.variants.tight]\nmax_items = 1\n"
        "[retry]\ndecoding = ['default', 'tight']\n"
    )
    result = runner.invoke(app, ["check", "generic_summary_v1"])
    assert result.exit_code == 1
    assert "decoding schema 'tight': example is outside the decoding schema" in result.output


@pytest.mark.engine  # imports vLLM
def test_check_catches_a_decoding_schema_vllm_refuses(templates_dir: Path) -> None:
    pytest.importorskip("vllm")
    # meeting_minutes_v1 has uniqueItems on attendees; its policy drops it. Keep it:
    (templates_dir / "meeting_minutes_v1" / "policy.toml").write_text(
        "[simplify]\ndrop_keywords = ['pattern']\nmax_items = 5\nmax_string_length = 160\n"
    )
    result = runner.invoke(app, ["check", "meeting_minutes_v1"])
    assert result.exit_code == 1
    assert "vLLM refuses the decoding schema" in result.output


def test_show_prints_policy_changes_and_decoding_schema(templates_dir: Path) -> None:
    result = runner.invoke(app, ["show", "generic_summary_v1"])
    assert result.exit_code == 0, result.output
    assert '"max_items": 5' in result.output
    assert "tightened maxItems 8 -> 5 at $.properties.key_points" in result.output
    assert "decoding schema" in result.output


def _rows(output: str) -> list[list[str]]:
    """The cells of a rich table's body rows (lines drawn with │)."""
    return [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in output.splitlines()
        if line.count("│") >= 3
    ]


def test_show_gives_each_attempt_its_decoding_schema_and_caps(templates_dir: Path) -> None:
    policy = templates_dir / "generic_summary_v1" / "policy.toml"
    policy.write_text(
        policy.read_text().replace("[retry]\n", '[retry]\ndecoding = ["uncapped", "default"]\n')
        + "\n[simplify.variants.uncapped]\nstrip_caps = true\n"
    )
    result = runner.invoke(app, ["show", "generic_summary_v1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    from structsum.processors.templates import load_template

    retry = (
        load_template(templates_dir, "generic_summary_v1")
        .for_profile(get_settings().profile)
        .policy.retry
    )
    t1, t2, t3 = (f"{retry.temperature_for(i):g}" for i in range(3))  # the profile's schedule
    assert _rows(result.output) == [
        ["1", "uncapped", "yes", "none", t1],
        ["2", "default", "yes", "maxItems 5, maxLength 120-200", t2],
        ["3", "default", "yes", "maxItems 5, maxLength 120-200", t3],
    ]
    assert "decoding schema 'default': mode json_schema, caps maxItems 5" in result.output
    assert "decoding schema 'uncapped': mode json_schema, caps none" in result.output
    assert "removed maxItems 8 at $.properties.key_points" in result.output
    listed = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert "stripped, 5/200" in listed.output


def test_show_marks_unguided_attempts(templates_dir: Path) -> None:
    policy = templates_dir / "generic_summary_v1" / "policy.toml"
    policy.write_text(policy.read_text().replace("guided = [true]", "guided = [true, false]"))
    result = runner.invoke(app, ["show", "generic_summary_v1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert [row[:4] for row in _rows(result.output)][1:] == [
        ["2", "default", "no", "none (unguided)"],
        ["3", "default", "no", "none (unguided)"],
    ]


def test_show_regex_mode(templates_dir: Path) -> None:
    (templates_dir / "generic_summary_v1" / "policy.toml").write_text(
        "[simplify]\nmode = 'regex'\nmax_items = 5\nmax_string_length = 200\n"
    )
    result = runner.invoke(app, ["show", "generic_summary_v1"])
    assert result.exit_code == 0, result.output
    assert "decoding regex" in result.output
    assert '\\{[ ]?"title"' in result.output


def test_show_unknown_template_fails_cleanly(templates_dir: Path) -> None:
    result = runner.invoke(app, ["show", "../etc"])
    assert result.exit_code == 1
    assert "TemplateNotFound" in result.output
    assert "Traceback" not in result.output


def test_every_templates_command_reports_errors_one_way(
    templates_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (templates_dir / "generic_summary_v1" / "schema.json").write_text("{")
    failures = {
        "check": runner.invoke(app, ["check"]),
        "show": runner.invoke(app, ["show", "no_such_template"]),
    }
    # The user directory adds to the shipped templates: both must be empty.
    monkeypatch.setattr(template_dirs, "shipped_templates_dir", lambda: tmp_path / "empty")
    monkeypatch.setenv("STRUCTSUM_TEMPLATES_DIR", str(tmp_path / "empty"))
    get_settings.cache_clear()
    failures["list"] = runner.invoke(app, ["list"])
    for command, result in failures.items():
        assert result.exit_code == 1, command
        assert re.search(r"^error (TemplateInvalid|TemplateNotFound): ", result.output, re.M)
        assert re.search(r"^hint ", result.output, re.M), command
        assert "Traceback" not in result.output


# --- templates add ----------------------------------------------------------------------

DRAFT_07_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Support ticket",
    "description": "What a customer reported and what happens next.",
    "type": "object",
    "definitions": {"priority": {"type": "string", "enum": ["low", "high"]}},
    "properties": {
        "subject": {"type": "string", "description": "One line naming the problem"},
        "priority": {"$ref": "#/definitions/priority"},
        "due": {"type": "string", "format": "date"},
        "ticket": {"type": "string", "pattern": "^T-[0-9]{4}$"},
        "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["subject", "priority", "ticket"],
}


def test_add_creates_a_template_that_loads_and_passes_check(
    templates_dir: Path, tmp_path: Path
) -> None:
    schema_file = tmp_path / "ticket.json"
    schema_file.write_text(json.dumps(DRAFT_07_SCHEMA))
    result = runner.invoke(app, ["add", "ticket_v1", "--schema", str(schema_file)])
    assert result.exit_code == 0, result.output
    folder = templates_dir / "ticket_v1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "example.json",
        "policy.toml",
        "prompt.jinja",
        "schema.json",
    ]
    assert "ok   ticket_v1" in result.output  # `templates check` ran on it
    example = json.loads((folder / "example.json").read_text())
    assert re.fullmatch(r"T-[0-9]{4}", example["ticket"])
    assert example["priority"] in ("low", "high") and len(example["steps"]) >= 1
    prompt = (folder / "prompt.jinja").read_text()
    assert (
        "Support ticket" in prompt and '"subject" (required): One line naming the problem' in prompt
    )
    assert "{{ text }}" in prompt and "{{ example }}" in prompt
    shown = runner.invoke(app, ["show", "ticket_v1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "draft: draft-07" in shown.output
    assert "renamed definitions -> $defs" in shown.output
    assert "checked only by validation" in shown.output


def test_add_refuses_a_bad_schema_with_a_typed_error_and_writes_nothing(
    templates_dir: Path, tmp_path: Path
) -> None:
    schema_file = tmp_path / "bad.json"
    schema_file.write_text(
        json.dumps({"type": "object", "properties": {"a": {"$ref": "https://x.org/a"}}})
    )
    result = runner.invoke(app, ["add", "bad_v1", "--schema", str(schema_file)])
    assert result.exit_code == 1
    assert "SchemaInvalid" in result.output and "remote $ref" in result.output
    assert "Traceback" not in result.output
    assert not (templates_dir / "bad_v1").exists()


def test_add_refuses_an_existing_id(templates_dir: Path, tmp_path: Path) -> None:
    schema_file = tmp_path / "s.json"
    schema_file.write_text(json.dumps(DRAFT_07_SCHEMA))
    result = runner.invoke(app, ["add", "generic_summary_v1", "--schema", str(schema_file)])
    assert result.exit_code == 1 and "already exists" in result.output


def test_add_uses_the_given_prompt(templates_dir: Path, tmp_path: Path) -> None:
    schema_file, prompt_file = tmp_path / "s.json", tmp_path / "p.jinja"
    schema_file.write_text(json.dumps(DRAFT_07_SCHEMA))
    prompt_file.write_text("Fill the ticket.\n{{ example }}\n{{ text }}\n")
    result = runner.invoke(
        app, ["add", "t2", "--schema", str(schema_file), "--prompt", str(prompt_file)]
    )
    assert result.exit_code == 0, result.output
    assert (templates_dir / "t2" / "prompt.jinja").read_text().startswith("Fill the ticket.")
