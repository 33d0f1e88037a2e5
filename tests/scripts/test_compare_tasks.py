"""compare_tasks.py: task reports side by side, jobs/s over the first report's."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from structsum.bench.stats import JobSample


def write_report(
    tasks_script: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    latency_s: float,
) -> Path:
    """A real benchmark_tasks.py report whose jobs take ``latency_s`` (fake jobs)."""
    import time

    def summary(text: str) -> JobSample:
        time.sleep(latency_s)
        return JobSample("summary", latency_s, None, 10, 5, 1, True)

    jobs: dict[str, Any] = {"summary": summary}
    monkeypatch.setattr(
        tasks_script, "in_process_jobs", lambda args: (jobs, lambda: "m", lambda: None)
    )
    code = tasks_script.main(
        ["--task", "summary", "--iterations", "4", "--concurrency", "2", "--warmup", "0",
         "--result-dir", str(tmp_path), "--result-filename", f"{name}.json",
         "--metadata", f"label={name}"]
    )  # fmt: skip
    assert code == 0
    return tmp_path / f"{name}.json"


def test_rows_relative_to_the_first_report(
    tasks_script: ModuleType,
    compare_script: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = write_report(tasks_script, monkeypatch, tmp_path, "one", 0.2)
    fast = write_report(tasks_script, monkeypatch, tmp_path, "two", 0.05)
    capsys.readouterr()
    assert compare_script.main([str(slow), str(fast), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | engine | workers |")
    one, two = (line.split(" | ") for line in lines[2:])
    assert one[0] == "| one" and two[0] == "| two"
    columns = list(compare_script.COLUMNS)
    assert one[columns.index("x base")] == "1.00"
    assert float(two[columns.index("x base")]) > 1.5  # 4x in theory; a busy box adds overhead
    assert two[columns.index("valid")] == "100%"
