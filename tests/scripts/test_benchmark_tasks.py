"""benchmark_tasks.py with fake jobs: concurrency, the report, and the exit status."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from structsum.bench.report import REQUIRED_KEYS
from structsum.bench.stats import JobSample


def test_jobs_run_with_the_requested_concurrency(tasks_script: ModuleType) -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def job(text: str) -> JobSample:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return JobSample("summary", 0.02, None, 1, len(text), 1, True)

    samples, duration = tasks_script.run_level(job, ["a", "bb"], iterations=8, concurrency=4)
    assert len(samples) == 8
    assert [s.completion_tokens for s in samples[:2]] == [1, 2]
    assert state["peak"] == 4
    assert duration > 0


def fake_jobs(fail: bool) -> Any:
    def summary(text: str) -> JobSample:
        if fail:
            return JobSample("summary", 0.1, None, 0, 0, 0, None, error="EngineError: boom")
        return JobSample("summary", 0.1, None, 10, 5, 2, True)

    def enhancement(text: str) -> JobSample:
        return JobSample("enhancement", 0.1, None, 10, 10, 1, None)

    jobs = {"summary": summary, "enhancement": enhancement}
    return lambda args: (jobs, lambda: "fake", lambda: None)


@pytest.mark.parametrize(("fail", "status"), [(False, 0), (True, 1)])
def test_report_and_exit_status(
    tasks_script: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fail: bool,
    status: int,
) -> None:
    monkeypatch.setattr(tasks_script, "in_process_jobs", fake_jobs(fail))
    code = tasks_script.main(
        [
            "--task",
            "both",
            "--iterations",
            "3",
            "--concurrency",
            "1",
            "2",
            "--result-dir",
            str(tmp_path),
            "--result-filename",
            "t.json",
        ]
    )
    assert code == status
    report = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert set(REQUIRED_KEYS) <= set(report)
    assert report["benchmark"] == "tasks"
    levels = [(r["task"], r["concurrency"]) for r in report["results"]]
    assert levels == [("enhancement", 1), ("enhancement", 2), ("summary", 1), ("summary", 2)]
    assert len(report["samples"]["summary"]["2"]) == 3
    assert report["settings"]["mode"] == "in-process"
    assert report["model"] == "fake"


def test_queue_jobs_skip_the_result_cache(
    tasks_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texts repeat over levels and runs: a cached answer would be no engine work."""
    import structsum.client as client_module
    from structsum.models import EnhancementResult, Usage

    seen: list[bool] = []

    class Handle:
        def result(self, timeout: float) -> EnhancementResult:
            return EnhancementResult(
                text="x", truncated=False, usage=Usage(), elapsed_s=0.1, model="m"
            )

    def enqueue(text: str, **kwargs: Any) -> Handle:
        seen.append(kwargs["use_cache"])
        return Handle()

    monkeypatch.setattr(client_module, "enqueue_enhancement", enqueue)
    for flags, expected in (([], False), (["--use-cache"], True)):
        args = tasks_script.build_parser().parse_args(["--via-queue", *flags])
        jobs, model, _ = tasks_script.queue_jobs(args)
        assert jobs["enhancement"]("hello").error is None
        assert seen[-1] is expected
        assert model() == "m"


def test_jobs_per_worker_are_read_from_the_worker_log(
    tasks_script: ModuleType, tmp_path: Path
) -> None:
    log = tmp_path / "worker0.log"
    log.write_text(
        "[INFO] Task structsum.summarize[0f0e] received\n"
        "[INFO] Task structsum.summarize[0f0e] succeeded in 3.2s: {'valid': True}\n"
        "[INFO] Task structsum.enhance[1a1b] succeeded in 1.0s: {}\n"
    )
    assert tasks_script.succeeded_jobs(log) == 2
    assert tasks_script.succeeded_jobs(tmp_path / "missing.log") == 0
