"""Statistics of the benchmarks on known data (no engine, no clock)."""

from __future__ import annotations

import math

import pytest

from structsum.bench.stats import (
    JobSample,
    RequestSample,
    compare_arms,
    percentile,
    summarize_arm,
    summarize_jobs,
)


def sample(output_tokens: int = 10, **kwargs: object) -> RequestSample:
    fields: dict[str, object] = {
        "input_tokens": 100,
        "output_tokens": output_tokens,
        "ttft_ms": 50.0,
        "e2e_ms": 50.0 + 10.0 * (output_tokens - 1),
        "itl_ms": [10.0] * (output_tokens - 1),
        "finish_reason": "length",
    }
    fields.update(kwargs)
    return RequestSample(**fields)  # type: ignore[arg-type]


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_of_nothing_is_nan_and_bad_q_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_tpot_excludes_the_first_token() -> None:
    assert sample(output_tokens=11).tpot_ms == pytest.approx(10.0)
    assert sample(output_tokens=1).tpot_ms is None
    assert sample(ttft_ms=None).tpot_ms is None


def test_arm_throughput_is_the_median_over_runs() -> None:
    runs = [[sample(), sample()], [sample(), sample()], [sample(), sample()]]
    metrics = summarize_arm(2, runs, [1.0, 2.0, 4.0])  # 20 tokens per run
    assert metrics.output_tokens_per_s == pytest.approx(10.0)
    assert metrics.requests_per_s == pytest.approx(1.0)
    assert metrics.duration_s == 2.0
    assert metrics.mean_output_tokens == 10.0
    assert metrics.p50_itl_ms == pytest.approx(10.0)
    assert metrics.valid_fraction is None  # nothing was checked
    assert metrics.finished_by_length_fraction == 1.0


def test_failed_requests_are_counted_not_averaged() -> None:
    runs = [[sample(valid=True), sample(valid=False), sample(error="EngineDeadError: boom")]]
    metrics = summarize_arm(3, runs, [1.0])
    assert (metrics.completed, metrics.failed) == (2, 1)
    assert metrics.valid_fraction == 0.5
    assert metrics.output_tokens_per_s == pytest.approx(20.0)


def test_summarize_arm_needs_one_duration_per_run() -> None:
    with pytest.raises(ValueError, match="one duration per run"):
        summarize_arm(1, [[sample()]], [1.0, 2.0])


def test_equal_lengths_are_compared() -> None:
    guided = summarize_arm(1, [[sample(output_tokens=96)]], [2.0])
    unguided = summarize_arm(1, [[sample(output_tokens=100)]], [1.0])
    comparison = compare_arms(guided, unguided)
    assert comparison.fair
    assert comparison.throughput_ratio == pytest.approx(0.48)
    assert comparison.length_ratio == pytest.approx(0.96)


def test_arms_of_different_lengths_are_flagged_unfair() -> None:
    """The fair-length rule: a guided arm that stopped early is not compared on tok/s."""
    guided = summarize_arm(1, [[sample(output_tokens=60)]], [1.0])
    unguided = summarize_arm(1, [[sample(output_tokens=100)]], [1.0])
    comparison = compare_arms(guided, unguided)
    assert not comparison.fair
    assert "differ by 40%" in comparison.note
    assert compare_arms(guided, unguided, length_tolerance=0.5).fair


def test_arms_of_different_batch_sizes_are_refused() -> None:
    one = summarize_arm(1, [[sample()]], [1.0])
    eight = summarize_arm(8, [[sample()] * 8], [1.0])
    with pytest.raises(ValueError, match="different batch sizes"):
        compare_arms(one, eight)


def test_an_arm_without_tokens_is_never_fair() -> None:
    empty = summarize_arm(1, [[sample(error="boom")]], [1.0])
    unguided = summarize_arm(1, [[sample()]], [1.0])
    comparison = compare_arms(empty, unguided)
    assert not comparison.fair
    assert math.isnan(comparison.length_ratio)


def test_job_metrics() -> None:
    jobs = [
        JobSample("summary", 1.0, 0.1, 500, 100, 1, True),
        JobSample("summary", 3.0, 0.3, 500, 300, 3, False),
        JobSample("summary", 9.0, None, 0, 0, 0, None, error="ResultTimeout: late"),
    ]
    metrics = summarize_jobs("summary", 2, jobs, duration_s=4.0)
    assert (metrics.completed, metrics.failed) == (2, 1)
    assert metrics.jobs_per_s == pytest.approx(0.5)
    assert metrics.output_tokens_per_s == pytest.approx(100.0)
    assert metrics.p50_latency_ms == pytest.approx(2000.0)
    assert metrics.p50_queue_wait_ms == pytest.approx(200.0)
    assert metrics.valid_fraction == 0.5
    assert metrics.mean_attempts == 2.0


def test_job_metrics_tell_first_attempt_validity_from_validity_after_retries() -> None:
    jobs = [
        JobSample("summary", 1.0, None, 500, 100, 1, True, valid_first=True),
        JobSample("summary", 1.0, None, 500, 100, 2, True, valid_first=False),
        JobSample("summary", 1.0, None, 500, 100, 3, False, valid_first=False),
        JobSample("summary", 1.0, None, 500, 100, 1, True, valid_first=True),
    ]
    metrics = summarize_jobs("summary", 4, jobs, duration_s=1.0)
    assert metrics.valid_first_fraction == 0.5
    assert metrics.valid_fraction == 0.75


def test_in_process_jobs_have_no_queue_wait() -> None:
    jobs = [JobSample("enhancement", 1.0, None, 10, 10, 1, None)]
    metrics = summarize_jobs("enhancement", 1, jobs, duration_s=1.0)
    assert metrics.p50_queue_wait_ms is None
    assert metrics.valid_fraction is None
