"""Report structure: what makes two numbers comparable is always there."""

from __future__ import annotations

import json
import math
import os
import subprocess
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
    structsum_revision,
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


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_commit_is_read_with_packed_refs(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
         "--allow-empty", "-m", "first")  # fmt: skip
    _git(tmp_path, "pack-refs", "--all")
    assert not (tmp_path / ".git" / "refs" / "heads" / "main").exists()
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert structsum_revision(tmp_path) == head[:12]
    report = base_report("tasks", arguments={}, model=None, metadata={}, source_dir=tmp_path)
    assert report["versions"]["structsum_commit"] == head[:12]


def test_no_commit_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert structsum_revision(tmp_path) is None


def test_secrets_never_reach_the_written_report(tmp_path: Path) -> None:
    report = base_report(
        "tasks",
        arguments={"broker": "redis://:s3cret@host:6379/7"},
        model=None,
        metadata={},
    )
    report["settings"] = {"queue": {"broker_url": "redis://:s3cret@host:6379/7"}}
    text = write_report(report, tmp_path, "r.json").read_text(encoding="utf-8")
    assert "s3cret" not in text
    assert json.loads(text)["settings"]["queue"]["broker_url"] == "redis://:***@host:6379/7"
