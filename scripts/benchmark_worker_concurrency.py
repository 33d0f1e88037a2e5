#!/usr/bin/env python3
"""One worker, N summary jobs: all queued at once vs one after another.

The point of the threads pool over one engine is that a worker keeps many jobs
in flight and vLLM batches them (continuous batching). This measures it as an
app sees it, through Redis: the same N texts are summarized twice,

* ``concurrent``: all N enqueued at once, then every result awaited;
* ``sequential``: enqueue one, wait for its result, then the next;

and reports both wall times and their ratio (sequential / concurrent; the goal
on the 2-core box is >= 3x for N = 16), with latency, queue wait, tok/s,
schema-valid share and attempts per arm, plus the worker's peak jobs in flight.

Fairness: one warm-up job first (grammar compile, first-request costs). The
concurrent arm runs first by default: vLLM's prefix cache then favours the
sequential arm, so the ratio is if anything understated (``--order`` flips it).

Commands:

    # start a worker here (loads an engine: take the engine lock), run, stop it
    flock /tmp/structsum-engine.lock python scripts/benchmark_worker_concurrency.py \\
        --start-worker --jobs 16

    # against a worker that is already running (`structsum worker`), same settings/env
    python scripts/benchmark_worker_concurrency.py --jobs 16 --metadata label=2core

The report (JSON: machine, versions, model, settings, arguments, results, samples)
is written under --result-dir (default results/, git-ignored). Exit status 1 if a
job failed or no worker answered.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from structsum.bench.flags import (
    add_input_flags,
    add_output_flags,
    add_template_id_flag,
    checkout_defaults,
    finish_report,
    new_parser,
    parse_args,
    script_inputs,
    setup_logging,
    start_report,
)
from structsum.bench.inputs import Order, pick_inputs
from structsum.bench.jobs import run_concurrently, timed_job
from structsum.bench.report import fmt, parse_metadata, print_table, report_filename
from structsum.bench.stats import JobSample, TaskMetrics, summarize_jobs
from structsum.bench.tables import TASK_COLUMNS, task_rows
from structsum.bench.worker import WorkerProcess, worker_answers
from structsum.client import JobHandle, enqueue_summary
from structsum.config import Settings, get_settings
from structsum.errors import StructsumError
from structsum.models import SummaryResult
from structsum.service.stats import collect

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])
ARMS = ("concurrent", "sequential")

log = logging.getLogger("benchmark_worker_concurrency")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=16, help="summary jobs per arm")
    add_template_id_flag(parser)
    parser.add_argument(
        "--order",
        choices=["concurrent-first", "sequential-first"],
        default="concurrent-first",
        help="which arm runs first (the second profits from the prefix cache)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured jobs before the arms")
    parser.add_argument(
        "--start-worker",
        action="store_true",
        help="start `structsum worker` here for the run (env settings), stop it after",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="with --start-worker: job threads [default: queue.worker_concurrency]",
    )
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per job result")
    add_input_flags(parser, DEFAULTS, max_input_chars=2400)
    add_output_flags(parser, DEFAULTS)
    return parser


# --- sample ----------------------------------------------------------------------------


def pick_texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """N texts, shortest first (deterministic), repeated if the corpus is smaller."""
    inputs, source = script_inputs(args, DEFAULTS)
    picked = pick_inputs(
        inputs, max_chars=args.max_input_chars, order=Order.SHORTEST_FIRST, count=args.jobs
    )
    return [i.text for i in picked], source


def sample(started: float, handle: JobHandle[SummaryResult], timeout: float) -> JobSample:
    """Wait for one job; latency counts from the caller's submit to the result."""
    return timed_job("summary", lambda: handle.result(timeout), queued=True, started=started)


def submit(text: str, args: argparse.Namespace, settings: Settings) -> JobHandle[SummaryResult]:
    return enqueue_summary(text, args.template_id, language=args.language, settings=settings)


# --- run -------------------------------------------------------------------------------


def run_concurrent(
    texts: list[str], args: argparse.Namespace, settings: Settings
) -> tuple[list[JobSample], float]:
    started = time.perf_counter()
    handles = [(time.perf_counter(), submit(t, args, settings)) for t in texts]
    samples, _ = run_concurrently(
        lambda h: sample(h[0], h[1], args.timeout_s), handles, len(handles)
    )
    return samples, time.perf_counter() - started


def run_sequential(
    texts: list[str], args: argparse.Namespace, settings: Settings
) -> tuple[list[JobSample], float]:
    started = time.perf_counter()
    samples = []
    for text in texts:
        submitted = time.perf_counter()
        samples.append(sample(submitted, submit(text, args, settings), args.timeout_s))
    return samples, time.perf_counter() - started


def worker_peak(settings: Settings) -> int | None:
    """The most jobs any answering worker has had in flight since it started."""
    workers = collect(timeout=2.0, settings=settings)["workers"]
    peaks = [w["structsum"]["max_in_flight"] for w in workers.values() if "structsum" in w]
    return max(peaks) if peaks else None


def measure(
    texts: list[str], args: argparse.Namespace, settings: Settings
) -> tuple[dict[str, TaskMetrics], dict[str, list[dict[str, Any]]], dict[str, Any], str | None]:
    """Warm-up, then both arms in --order: (metrics, samples, peaks in flight, model)."""
    metrics: dict[str, TaskMetrics] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    peaks: dict[str, int | None] = {}
    model = None
    for text in texts[: args.warmup]:
        model = submit(text, args, settings).result(args.timeout_s).model
    order = ARMS if args.order == "concurrent-first" else tuple(reversed(ARMS))
    for arm in order:
        log.info("%s: %d jobs", arm, len(texts))
        runner = run_concurrent if arm == "concurrent" else run_sequential
        run, duration = runner(texts, args, settings)
        concurrency = len(texts) if arm == "concurrent" else 1
        metrics[arm] = summarize_jobs("summary", concurrency, run, duration)
        samples[arm] = [asdict(s) for s in run]
        peaks[arm] = worker_peak(settings)
        log.info("%s: %.1f s", arm, duration)
    return metrics, samples, peaks, model


# --- report ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    settings = get_settings()
    texts, source = pick_texts(args)
    stamp = report_filename("worker_concurrency", parse_metadata(args.metadata).get("label"))
    worker = None
    try:
        if args.start_worker:
            log.info("starting a worker (engine load takes a minute)")
            log_path = args.result_dir / (stamp.removesuffix(".json") + ".worker.log")
            worker = WorkerProcess.start(settings, log_path=log_path, concurrency=args.concurrency)
        elif not worker_answers(settings, timeout_s=2.0):
            print("no worker answered; start one (`structsum worker`) or pass --start-worker")
            return 1
        metrics, samples, peaks, model = measure(texts, args, settings)
    except StructsumError as exc:
        print(f"{exc.code}: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            worker.stop()

    speedup = metrics["sequential"].duration_s / metrics["concurrent"].duration_s
    report = start_report("worker_concurrency", args, model=model, defaults=DEFAULTS)
    report["settings"] = {
        "inputs": source,
        "worker": "started by the script" if worker else "already running",
        # the worker's settings when it was started here; otherwise this env's view
        # (the broker URL's password is masked when the report is written)
        "structsum": settings.model_dump(mode="json"),
    }
    report["results"] = [{"arm": arm, **asdict(m)} for arm, m in metrics.items()]
    report["speedup"] = {
        "sequential_s": metrics["sequential"].duration_s,
        "concurrent_s": metrics["concurrent"].duration_s,
        "ratio": speedup,
        "worker_peak_in_flight": peaks.get("concurrent"),
        "order": args.order,
    }
    report["samples"] = samples
    path = finish_report(report, args, default_filename=stamp)

    title = f"{len(texts)} summary jobs through one worker: {Path(model or '?').name}"
    print_table(title, TASK_COLUMNS, task_rows([asdict(m) for m in metrics.values()]))
    print_table(
        "concurrent vs sequential",
        ["sequential s", "concurrent s", "ratio", "peak in flight"],
        [[fmt(metrics["sequential"].duration_s), fmt(metrics["concurrent"].duration_s),
          f"{speedup:.2f}x", str(peaks.get("concurrent"))]],
    )  # fmt: skip
    print(f"report: {path}")
    failures = sum(m.failed for m in metrics.values())
    if failures:
        print(f"FAILED: {failures} job(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
