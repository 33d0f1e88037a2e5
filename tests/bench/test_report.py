"""Report structure: what makes two numbers comparable is always there."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from structsum.bench.report import (
    REQUIRED_KEYS,
    base_report,
    check_report,
    load_report,
    markdown_table,
    parse_metadata,
    to_jsonable,
    write_report,
)


def test_base_report_has_every_required_key(tmp_path: Path) -> None:
    report = base_report(
        "engine", arguments={"batch_sizes": [1, 8]}, model="m", metadata={"label": "x"}
    )
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["machine"]["cpu"]
    assert report["machine"]["cpu_count"] >= 1
    assert {"vllm", "torch", "xgrammar", "llguidance", "outlines_core"} <= set(report["versions"])
    path = write_report(report, tmp_path / "results", "r.json")
    assert load_report(path)["arguments"] == {"batch_sizes": [1, 8]}


def test_nan_is_written_as_null(tmp_path: Path) -> None:
    report = base_report("engine", arguments={}, model=None, metadata={})
    report["results"].append({"p99_ttft_ms": math.nan, "ok": 1.5})
    path = write_report(report, tmp_path, "nan.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    assert json.loads(text)["results"] == [{"p99_ttft_ms": None, "ok": 1.5}]


def test_a_report_without_its_context_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        check_report({"results": []})
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="machine"):
        load_report(bad)


def test_metadata_pairs() -> None:
    assert parse_metadata(["label=H100", "note=a=b"]) == {"label": "H100", "note": "a=b"}
    assert parse_metadata(None) == {}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_metadata(["label"])


def test_dataclasses_and_paths_become_json() -> None:
    @dataclass
    class Point:
        x: float
        where: Path

    assert to_jsonable([Point(math.inf, Path("/a"))]) == [{"x": None, "where": "/a"}]


def test_markdown_table() -> None:
    text = markdown_table(["a", "b"], [["1", "2"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
