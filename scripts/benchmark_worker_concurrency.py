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
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from structsum.bench.report import (
    base_report,
    fmt,
    parse_metadata,
    print_table,
    report_filename,
    write_report,
)
from structsum.bench.stats import JobSample, TaskMetrics, summarize_jobs
from structsum.bench.tables import TASK_COLUMNS, task_rows
from structsum.bench.workload import DEFAULT_INPUT_DIRS, REPO_ROOT, load_corpus
from structsum.client import JobHandle, client_app, enqueue_summary
from structsum.config import Settings, get_settings
from structsum.errors import StructsumError
from structsum.models import SummaryResult
from structsum.service.stats import collect

log = logging.getLogger("benchmark_worker_concurrency")

# An engine start takes 30-90 s on the 2-core box; a cold compile cache takes longer.
WORKER_START_TIMEOUT_S = 300.0
WORKER_STOP_TIMEOUT_S = 60.0
ARMS = ("concurrent", "sequential")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=16, help="summary jobs per arm")
    parser.add_argument("--template-id", default="generic_summary_v1")
    parser.add_argument("--language", default=None, help="output language hint, e.g. en")
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
    parser.add_argument(
        "--inputs-dir",
        type=Path,
        action="append",
        default=None,
        help="folders of .txt inputs; default: tests/data/inputs, scripts/samples",
    )
    parser.add_argument(
        "--max-input-chars",
        type=int,
        default=2400,
        help="skip longer inputs: chunked map/reduce is another workload (0: no limit)",
    )
    parser.add_argument("--result-dir", type=Path, default=REPO_ROOT / "results")
    parser.add_argument("--result-filename", default=None)
    parser.add_argument("--metadata", nargs="*", default=[], metavar="KEY=VALUE")
    return parser


# --- sample ----------------------------------------------------------------------------


def pick_texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """N texts, shortest first (deterministic), repeated if the corpus is smaller."""
    texts, source = load_corpus(args.inputs_dir or DEFAULT_INPUT_DIRS)
    if args.max_input_chars:
        texts = [t for t in texts if len(t) <= args.max_input_chars] or texts[:1]
    texts.sort(key=len)
    return [texts[i % len(texts)] for i in range(args.jobs)], source


def sample(started: float, handle: JobHandle[SummaryResult], timeout: float) -> JobSample:
    """Wait for one job; latency counts from the caller's submit to the result."""
    try:
        result = handle.result(timeout)
    except StructsumError as exc:
        return JobSample(
            "summary", time.perf_counter() - started, None, 0, 0, 0, None,
            error=f"{exc.code}: {exc.message}",
        )  # fmt: skip
    latency = time.perf_counter() - started
    return JobSample(
        "summary",
        latency,
        max(0.0, latency - result.elapsed_s),
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        len(result.attempts),
        result.valid,
    )


def submit(text: str, args: argparse.Namespace, settings: Settings) -> JobHandle[SummaryResult]:
    return enqueue_summary(text, args.template_id, language=args.language, settings=settings)


# --- run -------------------------------------------------------------------------------


def run_concurrent(
    texts: list[str], args: argparse.Namespace, settings: Settings
) -> tuple[list[JobSample], float]:
    started = time.perf_counter()
    handles = [(time.perf_counter(), submit(t, args, settings)) for t in texts]
    with ThreadPoolExecutor(max_workers=len(handles)) as pool:
        samples = list(pool.map(lambda h: sample(h[0], h[1], args.timeout_s), handles))
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


class Worker:
    """`structsum worker` as a subprocess group, for --start-worker."""

    def __init__(self, settings: Settings, concurrency: int | None, log_path: Path) -> None:
        command = [sys.executable, "-m", "structsum.commands.service", "worker"]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        app = client_app(settings)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not app.control.ping(timeout=1.0):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the worker did not start; see {log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- report ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    settings = get_settings()
    texts, source = pick_texts(args)
    stamp = report_filename("worker_concurrency", parse_metadata(args.metadata).get("label"))
    worker = None
    if args.start_worker:
        log.info("starting a worker (engine load takes a minute)")
        log_path = args.result_dir / (stamp.removesuffix(".json") + ".worker.log")
        worker = Worker(settings, args.concurrency, log_path)
    elif not client_app(settings).control.ping(timeout=2.0):
        print("no worker answered; start one (`structsum worker`) or pass --start-worker")
        return 1

    metrics: dict[str, TaskMetrics] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    peaks: dict[str, int | None] = {}
    model = None
    try:
        for text in texts[: args.warmup]:
            warm = submit(text, args, settings).result(args.timeout_s)
            model = warm.model
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
    finally:
        if worker is not None:
            worker.stop()

    speedup = metrics["sequential"].duration_s / metrics["concurrent"].duration_s
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = base_report(
        "worker_concurrency",
        arguments=arguments,
        model=model,
        metadata=parse_metadata(args.metadata),
    )
    report["settings"] = {
        "inputs": source,
        "worker": "started by the script" if worker else "already running",
        # the worker's settings when it was started here; otherwise this env's view
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
    path = write_report(report, args.result_dir, args.result_filename or stamp)

    title = f"{len(texts)} summary jobs through one worker: {Path(model or '?').name}"
    print_table(title, TASK_COLUMNS, task_rows([asdict(m) for m in metrics.values()]))
    print_table(
        "concurrent vs sequential",
        ["sequential s", "concurrent s", "ratio", "peak in flight"],
        [
            [
                fmt(metrics["sequential"].duration_s),
                fmt(metrics["concurrent"].duration_s),
                f"{speedup:.2f}x",
                str(peaks.get("concurrent")),
            ]
        ],
    )
    print(f"report: {path}")
    failures = sum(m.failed for m in metrics.values())
    if failures:
        print(f"FAILED: {failures} job(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
