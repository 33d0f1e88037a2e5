"""Statistics of benchmark runs, with the unit in every field name.

Kept free of vLLM, Celery and the clock so that tests can feed known numbers.
A benchmark script collects one ``RequestSample`` per request (or one
``JobSample`` per task run), then ``summarize_*`` turns a run into metrics and
``compare_arms`` decides whether a guided arm may be compared with its
unguided baseline at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

# Two arms whose mean output lengths differ by more than this share are not compared
# on throughput: a shorter arm spends more of its time in prefill and in a draining
# batch, so its tok/s measures a different workload.
DEFAULT_LENGTH_TOLERANCE = 0.10


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default method).

    NaN for no values, so an empty arm shows as "n/a" instead of a made-up zero.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    weight = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * weight)


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else math.nan


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


@dataclass(frozen=True)
class RequestSample:
    """One engine request as the benchmark saw it (times from the client side)."""

    input_tokens: int
    output_tokens: int
    ttft_ms: float | None
    e2e_ms: float
    # Gaps between streamed chunks, spread evenly over the tokens each chunk brought.
    itl_ms: list[float] = field(default_factory=list, repr=False)
    finish_reason: str | None = None
    valid: bool | None = None  # None: not checked (unguided arms)
    error: str | None = None

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first (vLLM's TPOT)."""
        if self.ttft_ms is None or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)


@dataclass(frozen=True)
class ArmMetrics:
    """One arm (unguided, or one backend x schema) at one batch size, one or more runs."""

    batch_size: int
    runs: int
    completed: int
    failed: int
    duration_s: float  # median over runs of the wall time of one batch
    output_tokens_per_s: float  # median over runs
    requests_per_s: float  # median over runs
    mean_input_tokens: float
    mean_output_tokens: float
    mean_ttft_ms: float
    p50_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    mean_itl_ms: float
    p50_itl_ms: float
    p99_itl_ms: float
    valid_fraction: float | None  # None when validity was not checked
    finished_by_length_fraction: float


def summarize_arm(
    batch_size: int, runs: Sequence[Sequence[RequestSample]], durations_s: Sequence[float]
) -> ArmMetrics:
    """Metrics of an arm from its runs: throughput per run, latencies over all requests."""
    if len(runs) != len(durations_s):
        raise ValueError("one duration per run is needed")
    samples = [s for run in runs for s in run]
    done = [s for s in samples if s.error is None]
    token_rates = [
        sum(s.output_tokens for s in run if s.error is None) / duration
        for run, duration in zip(runs, durations_s, strict=True)
        if duration > 0
    ]
    request_rates = [
        sum(1 for s in run if s.error is None) / duration
        for run, duration in zip(runs, durations_s, strict=True)
        if duration > 0
    ]
    ttfts = [s.ttft_ms for s in done if s.ttft_ms is not None]
    tpots = [t for s in done if (t := s.tpot_ms) is not None]
    itls = [gap for s in done for gap in s.itl_ms]
    checked = [s.valid for s in done if s.valid is not None]
    return ArmMetrics(
        batch_size=batch_size,
        runs=len(runs),
        completed=len(done),
        failed=len(samples) - len(done),
        duration_s=median(durations_s),
        output_tokens_per_s=median(token_rates),
        requests_per_s=median(request_rates),
        mean_input_tokens=mean([s.input_tokens for s in done]),
        mean_output_tokens=mean([s.output_tokens for s in done]),
        mean_ttft_ms=mean(ttfts),
        p50_ttft_ms=percentile(ttfts, 50),
        p99_ttft_ms=percentile(ttfts, 99),
        mean_tpot_ms=mean(tpots),
        mean_itl_ms=mean(itls),
        p50_itl_ms=percentile(itls, 50),
        p99_itl_ms=percentile(itls, 99),
        valid_fraction=(sum(checked) / len(checked)) if checked else None,
        finished_by_length_fraction=(
            sum(1 for s in done if s.finish_reason == "length") / len(done) if done else math.nan
        ),
    )


@dataclass(frozen=True)
class Comparison:
    """Guided against unguided at one batch size.

    ``throughput_ratio`` is always computed and stored, but ``fair`` says whether it
    means anything: only when both arms produced about the same number of tokens.
    """

    throughput_ratio: float  # guided output tok/s over unguided output tok/s
    length_ratio: float  # guided mean output tokens over unguided mean output tokens
    fair: bool
    note: str


def compare_arms(
    guided: ArmMetrics,
    unguided: ArmMetrics,
    *,
    length_tolerance: float = DEFAULT_LENGTH_TOLERANCE,
) -> Comparison:
    """Ratio of guided to unguided throughput, flagged unfair when lengths differ.

    Unguided arms are forced to the full output length; a guided arm stops when its
    grammar ends, so a grammar that ends early would look faster or slower for
    reasons that have nothing to do with decoding speed.
    """
    if guided.batch_size != unguided.batch_size:
        raise ValueError(
            f"arms of different batch sizes ({guided.batch_size} vs {unguided.batch_size})"
        )
    ratio = _ratio(guided.output_tokens_per_s, unguided.output_tokens_per_s)
    length_ratio = _ratio(guided.mean_output_tokens, unguided.mean_output_tokens)
    if math.isnan(ratio) or math.isnan(length_ratio):
        return Comparison(ratio, length_ratio, False, "an arm produced no tokens")
    if abs(length_ratio - 1.0) > length_tolerance:
        return Comparison(
            ratio,
            length_ratio,
            False,
            f"mean output lengths differ by {abs(length_ratio - 1.0):.0%} "
            f"(> {length_tolerance:.0%}): {guided.mean_output_tokens:.0f} guided vs "
            f"{unguided.mean_output_tokens:.0f} unguided tokens",
        )
    return Comparison(ratio, length_ratio, True, "")


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


# --- task benchmarks ------------------------------------------------------------------


@dataclass(frozen=True)
class JobSample:
    """One summary or enhancement job, in-process or through the queue."""

    task: str
    latency_s: float  # submit to result, as the caller sees it
    queue_wait_s: float | None  # enqueue to start of work; None in-process
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    valid: bool | None  # None for enhancement (nothing to validate)
    error: str | None = None
    valid_first: bool | None = None  # the first attempt alone was valid
    # why an invalid summary's best answer failed (first errors): what to fix next
    invalid_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskMetrics:
    task: str
    concurrency: int
    jobs: int
    completed: int
    failed: int
    duration_s: float
    jobs_per_s: float
    output_tokens_per_s: float
    mean_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    p50_queue_wait_ms: float | None
    p99_queue_wait_ms: float | None
    valid_fraction: float | None
    valid_first_fraction: float | None
    mean_attempts: float
    mean_completion_tokens: float


def summarize_jobs(
    task: str, concurrency: int, samples: Sequence[JobSample], duration_s: float
) -> TaskMetrics:
    done = [s for s in samples if s.error is None]
    latencies = [s.latency_s * 1000.0 for s in done]
    waits = [s.queue_wait_s * 1000.0 for s in done if s.queue_wait_s is not None]
    checked = [s.valid for s in done if s.valid is not None]
    first = [s.valid_first for s in done if s.valid_first is not None]
    tokens = sum(s.completion_tokens for s in done)
    return TaskMetrics(
        task=task,
        concurrency=concurrency,
        jobs=len(samples),
        completed=len(done),
        failed=len(samples) - len(done),
        duration_s=duration_s,
        jobs_per_s=len(done) / duration_s if duration_s > 0 else math.nan,
        output_tokens_per_s=tokens / duration_s if duration_s > 0 else math.nan,
        mean_latency_ms=mean(latencies),
        p50_latency_ms=percentile(latencies, 50),
        p95_latency_ms=percentile(latencies, 95),
        p99_latency_ms=percentile(latencies, 99),
        p50_queue_wait_ms=percentile(waits, 50) if waits else None,
        p99_queue_wait_ms=percentile(waits, 99) if waits else None,
        valid_fraction=(sum(checked) / len(checked)) if checked else None,
        valid_first_fraction=(sum(first) / len(first)) if first else None,
        mean_attempts=mean([float(s.attempts) for s in done]),
        mean_completion_tokens=mean([float(s.completion_tokens) for s in done]),
    )
