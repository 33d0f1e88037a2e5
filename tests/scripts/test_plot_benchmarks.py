"""plot_benchmarks.py: Markdown tables and a PNG from saved reports."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from structsum.bench.report import base_report, write_report


def saved(tmp_path: Path) -> Path:
    report = base_report("tasks", arguments={}, model="m", metadata={})
    report["results"] = [
        {
            "task": "summary",
            "concurrency": 2,
            "jobs": 4,
            "failed": 0,
            "jobs_per_s": 0.5,
            "output_tokens_per_s": 50.0,
            "p50_latency_ms": 1000.0,
            "p95_latency_ms": 1500.0,
            "p99_latency_ms": 1600.0,
            "p50_queue_wait_ms": None,
            "p99_queue_wait_ms": None,
            "valid_fraction": 0.75,
            "mean_attempts": 1.5,
            "mean_completion_tokens": 100.0,
        }
    ]
    return write_report(report, tmp_path, "tasks.json")


def test_markdown_of_a_task_report(
    plot_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plot_script.main([str(saved(tmp_path)), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| summary | 2 | 4 | 0 | 0.500 | 50.0 |" in text
    assert "75%" in text


def test_plot_needs_an_engine_report(plot_script: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no engine results"):
        plot_script.main([str(saved(tmp_path)), "--output", str(tmp_path / "x.png")])


def test_markdown_of_a_templates_report(
    plot_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = base_report("templates", arguments={}, model="m", metadata={})
    arm = {
        "template_id": "generic_summary_v1",
        "variant": "policy",
        "requests": 4,
        "failed_requests": 1,
        "valid_first_share": 0.5,
        "valid_final_share": 0.75,
        "mean_attempts": 1.5,
        "truncated_attempts": 0,
        "mean_completion_tokens": 120.0,
        "mean_latency_s": 3.0,
        "p90_latency_s": 4.0,
        "wall_s": 10.0,
        "output_tok_per_s": 48.0,
    }
    # An older report: no decoding_runs, grounding, verbatim or compile figures.
    report["results"] = [arm, {**arm, "variant": "capped", "decoding_runs": {"default": 6}}]
    path = write_report(report, tmp_path, "templates.json")
    assert plot_script.main([str(path), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| generic_summary_v1 | policy | 4 (1 failed) | 50% | 75% | 1.50 | 0 |  | 120 |" in text
    assert "| capped | 4 (1 failed) |" in text and "| default 6 |" in text
    assert "| n/a | n/a | n/a / n/a |" in text


def test_markdown_of_a_warm_summary_report(
    plot_script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = base_report("warm-summary", arguments={}, model="m", metadata={})
    run = {
        "elapsed_s": 2.5,
        "valid": True,
        "attempts": 1,
        "decodings": ["default"],
        "prompt_tokens": 300,
        "completion_tokens": 100,
        "first_ttft_s": 0.5,
        "failure": None,
        "data": {},
    }
    report["runs"] = [run, {**run, "valid": False, "failure": "EngineError('x')"}]
    report["median_s"] = 2.5
    path = write_report(report, tmp_path, "warm.json")
    assert plot_script.main([str(path), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "| 1 | 2.5 | True | 1 | 300 | 100 | 0.5 | 50.0 |" in text
    assert "| 2 | 2.5 | failed |" in text
    assert "median 2.5 s" in text
