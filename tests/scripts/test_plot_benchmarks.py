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
