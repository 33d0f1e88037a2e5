"""A job's sample: what its result says, its latency, and a typed error as a failure."""

from __future__ import annotations

import time

import pytest

from structsum.bench.jobs import run_concurrently, timed_job
from structsum.errors import ResultTimeout
from structsum.models import Attempt, EnhancementResult, SummaryResult, Usage


def attempt(index: int, valid: bool) -> Attempt:
    return Attempt(
        index=index, temperature=0.7, guided=True, finish_reason="stop",
        usage=Usage(), elapsed_s=1.0, valid=valid,
    )  # fmt: skip


def summary_result(elapsed_s: float) -> SummaryResult:
    return SummaryResult(
        template_id="t", schema_sha256="0" * 64, data={"a": 1}, valid=True,
        attempts=[attempt(0, False), attempt(1, True)],
        usage=Usage(prompt_tokens=100, completion_tokens=40),
        elapsed_s=elapsed_s, model="m", settings_fingerprint="f",
    )  # fmt: skip


def test_a_queued_summary_reports_attempts_validity_and_queue_wait() -> None:
    started = time.perf_counter() - 5.0  # submitted five seconds ago
    sample = timed_job("summary", lambda: summary_result(2.0), queued=True, started=started)
    assert (sample.attempts, sample.valid, sample.prompt_tokens) == (2, True, 100)
    assert sample.latency_s >= 5.0
    assert sample.queue_wait_s == pytest.approx(sample.latency_s - 2.0)
    assert sample.error is None
    assert sample.valid_first is False  # valid only after the retry
    assert sample.invalid_errors == ()
    assert timed_job("summary", lambda: summary_result(2.0), queued=False).queue_wait_s is None


def test_an_invalid_summary_keeps_why_it_failed() -> None:
    result = summary_result(1.0).model_copy(
        update={"valid": False, "errors": ["e1", "e2", "e3", "e4"]}
    )
    sample = timed_job("summary", lambda: result, queued=False)
    assert sample.valid is False
    assert sample.invalid_errors == ("e1", "e2", "e3")


def test_an_enhancement_counts_chunks_and_has_nothing_to_validate() -> None:
    result = EnhancementResult(
        text="t", truncated=False, chunks=3, usage=Usage(prompt_tokens=5, completion_tokens=6),
        model="m", elapsed_s=0.1,
    )  # fmt: skip
    sample = timed_job("enhancement", lambda: result, queued=False)
    assert (sample.attempts, sample.valid, sample.completion_tokens) == (3, None, 6)


def test_a_typed_error_is_a_failed_sample() -> None:
    def fail() -> SummaryResult:
        raise ResultTimeout("no result in 1 s")

    sample = timed_job("summary", fail, queued=True)
    assert sample.error == "ResultTimeout: no result in 1 s"
    assert sample.valid is None and sample.attempts == 0


def test_results_keep_the_order_of_the_items() -> None:
    results, wall = run_concurrently(lambda n: n * 2, [3, 1, 2], concurrency=3)
    assert results == [6, 2, 4] and wall >= 0
