"""The PNG is drawn from engine reports (matplotlib: the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from structsum.bench.plot import plot_reports, throughput_series
from structsum.bench.report import base_report


def engine_report() -> dict[str, Any]:
    report = base_report("engine", arguments={}, model="m", metadata={"label": "test"})
    for batch, unguided, guided in [(1, 100.0, 90.0), (8, 700.0, 400.0)]:
        report["results"] += [
            {
                "backend": "xgrammar",
                "arm": "unguided",
                "batch_size": batch,
                "status": "ok",
                "output_tokens_per_s": unguided,
            },
            {
                "backend": "xgrammar",
                "arm": "guided",
                "template_id": "t",
                "schema": "full",
                "batch_size": batch,
                "status": "ok",
                "output_tokens_per_s": guided,
            },
            {
                "backend": "xgrammar",
                "arm": "guided",
                "template_id": "t",
                "schema": "simplified",
                "batch_size": batch,
                "status": "skipped",
            },
        ]
    return report


def test_series_group_by_backend_and_skip_skipped_arms() -> None:
    series = throughput_series(engine_report())
    assert series == {
        "xgrammar": {"unguided": [(1, 100.0), (8, 700.0)], "t full": [(1, 90.0), (8, 400.0)]}
    }


def test_png_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_reports([engine_report(), engine_report()], tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reports_without_engine_results_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    empty = base_report("tasks", arguments={}, model=None, metadata={})
    with pytest.raises(ValueError, match="no engine results"):
        plot_reports([empty], tmp_path / "none.png")
