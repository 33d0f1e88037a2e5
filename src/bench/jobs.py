"""Timing jobs as an app sees them: one sample per job, many jobs in flight.

A job is any call that returns a summary or enhancement result (in-process, or
through the queue). What a result says about itself (tokens, attempts,
validity) and how long it took is read here once, for every task benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from structsum.bench.stats import JobSample
from structsum.errors import StructsumError
from structsum.models import EnhancementResult, SummaryResult

Job = Callable[[str], JobSample]
# How many of an invalid summary's errors a sample keeps: enough to see the pattern.
SHOWN_ERRORS = 3
Item = TypeVar("Item")
Sample = TypeVar("Sample")


def timed_job(
    task: str,
    call: Callable[[], SummaryResult | EnhancementResult],
    *,
    queued: bool,
    started: float | None = None,
) -> JobSample:
    """Run ``call`` and sample it; a typed error is a failed sample, not a crash.

    ``started`` (a ``perf_counter`` time) is when the caller submitted the job,
    if before the call. ``queued``: the result came through the queue, so the
    latency beyond the worker's own processing time is queue wait.
    """
    if started is None:
        started = time.perf_counter()
    try:
        result = call()
    except StructsumError as exc:
        latency = time.perf_counter() - started
        return JobSample(task, latency, None, 0, 0, 0, None, error=f"{exc.code}: {exc.message}")
    latency = time.perf_counter() - started
    summary = isinstance(result, SummaryResult)
    return JobSample(
        task,
        latency,
        max(0.0, latency - result.elapsed_s) if queued else None,
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        # an enhancement has no attempts; its chunk count is the work it did
        len(result.attempts) if summary else result.chunks,
        result.valid if summary else None,
        valid_first=result.attempts[0].valid if summary and result.attempts else None,
        invalid_errors=tuple(result.errors[:SHOWN_ERRORS]) if summary else (),
    )


def run_concurrently(
    work: Callable[[Item], Sample], items: Sequence[Item], concurrency: int
) -> tuple[list[Sample], float]:
    """``work`` over ``items`` with ``concurrency`` in flight, in order; (results, wall s)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-job") as pool:
        results = list(pool.map(work, items))
    return results, time.perf_counter() - started


def run_level(
    job: Job, texts: Sequence[str], iterations: int, concurrency: int
) -> tuple[list[JobSample], float]:
    """``iterations`` jobs over ``texts`` (cycled) with ``concurrency`` in flight."""
    inputs = [texts[i % len(texts)] for i in range(iterations)]
    return run_concurrently(job, inputs, concurrency)
