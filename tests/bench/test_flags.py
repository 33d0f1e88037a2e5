"""The flags every benchmark script shares, and how they reach the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from structsum.bench.flags import (
    add_input_flags,
    add_output_flags,
    checkout_defaults,
    finish_report,
    parse_args,
    script_arguments,
    script_inputs,
    start_report,
)

DEFAULTS = checkout_defaults(Path("/repo"))


def parser(defaults: object = DEFAULTS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_input_flags(parser, DEFAULTS, max_input_chars=2400)
    add_output_flags(parser, DEFAULTS)
    return parser


def test_defaults_come_from_the_scripts_checkout() -> None:
    args = parse_args(parser(), [])
    assert args.result_dir == Path("/repo/results")
    assert args.max_input_chars == 2400 and args.metadata == []
    assert DEFAULTS.input_dirs == (Path("/repo/tests/data/inputs"), Path("/repo/scripts/samples"))


def test_repeated_metadata_flags_add_up() -> None:
    """A wrapper's --metadata label=... and the caller's own pairs both reach the report."""
    args = parse_args(parser(), ["--metadata", "label=a", "--metadata", "box=cpu", "label=b"])
    assert args.metadata == ["label=a", "box=cpu", "label=b"]
    assert parse_args(parser(), []).metadata == []


def test_a_malformed_metadata_pair_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(parser(), ["--metadata", "label"])
    assert exited.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_named_folders_win_over_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("text", encoding="utf-8")
    args = parse_args(parser(), ["--inputs-dir", str(tmp_path)])
    inputs, source = script_inputs(args, DEFAULTS)
    assert [i.name for i in inputs] == ["one"] and source == str(tmp_path)


def test_the_report_stores_every_flag_and_lands_where_asked(tmp_path: Path) -> None:
    args = parse_args(
        parser(),
        ["--inputs-dir", "/a", "--result-dir", str(tmp_path), "--result-filename", "r.json",
         "--metadata", "label=x"],
    )  # fmt: skip
    assert script_arguments(args)["inputs_dir"] == ["/a"]
    report = start_report("tasks", args, model="m", defaults=checkout_defaults(tmp_path))
    assert report["metadata"] == {"label": "x"}
    path = finish_report(report, args)
    assert path == tmp_path / "r.json"
    assert json.loads(path.read_text(encoding="utf-8"))["arguments"]["result_dir"] == str(tmp_path)
