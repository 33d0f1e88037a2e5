#!/usr/bin/env python3
"""Task benchmark: summary and enhancement jobs end to end, as an app sees them.

In-process (default) it calls ``structsum.processors`` directly on one engine from
C threads, so C jobs are in flight and the engine batches them. With
``--via-queue`` it enqueues through ``structsum.client`` to a running worker
(Celery + Redis) and waits for each result, again C jobs in flight. Each job is
timed from submit to result; summary jobs also report whether the result is valid
against the template's full schema, and how many attempts it took.

Queue wait (``--via-queue`` only) is the latency minus the processing time the
worker reports (``elapsed_s`` of the result): queueing plus transport.

Commands:

    # in-process on this box (take the engine lock: one engine at a time)
    flock /tmp/structsum-engine.lock python scripts/benchmark_tasks.py \\
        --task both --template-id generic_summary_v1 --iterations 8 --concurrency 1 8

    # through a running worker (structsum worker), no engine in this process
    python scripts/benchmark_tasks.py --task summary --iterations 16 --concurrency 8 --via-queue

Exit status 1 if any job failed.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from structsum.bench.report import (
    base_report,
    parse_metadata,
    print_table,
    report_filename,
    write_report,
)
from structsum.bench.stats import JobSample, TaskMetrics, summarize_jobs
from structsum.bench.tables import TASK_COLUMNS, task_rows
from structsum.bench.workload import DEFAULT_INPUT_DIRS, REPO_ROOT, load_corpus
from structsum.errors import StructsumError

log = logging.getLogger("benchmark_tasks")

TASKS = ("enhancement", "summary")
Job = Callable[[str], JobSample]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--template-id", default="generic_summary_v1")
    parser.add_argument(
        "--iterations", type=int, default=8, help="jobs per task and concurrency level"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1], help="jobs in flight (one or more)"
    )
    parser.add_argument(
        "--via-queue", action="store_true", help="through Celery + Redis to a running worker"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=900.0, help="per job, when waiting on the queue"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured jobs per task before measuring"
    )
    parser.add_argument("--language", default=None, help="output language hint, e.g. en")
    parser.add_argument(
        "--inputs-dir",
        type=Path,
        action="append",
        default=None,
        help="folders of .txt inputs (first non-empty wins); default: tests/data/inputs, "
        "scripts/samples",
    )
    parser.add_argument(
        "--max-input-chars",
        type=int,
        default=None,
        help="skip inputs longer than this (long texts are chunked: slower, other workload)",
    )
    parser.add_argument("--seed", type=int, default=0, help="order in which inputs are used")
    parser.add_argument("--result-dir", type=Path, default=REPO_ROOT / "results")
    parser.add_argument("--result-filename", default=None, help="default: tasks-<date>.json")
    parser.add_argument("--metadata", nargs="*", default=[], metavar="KEY=VALUE")
    return parser


# --- sample ----------------------------------------------------------------------------


def pick_inputs(args: argparse.Namespace) -> tuple[list[str], str]:
    texts, source = load_corpus(args.inputs_dir or DEFAULT_INPUT_DIRS)
    if args.max_input_chars:
        texts = [t for t in texts if len(t) <= args.max_input_chars] or texts[:1]
    random.Random(args.seed).shuffle(texts)
    return texts, source


def failed(task: str, started: float, exc: StructsumError) -> JobSample:
    return JobSample(
        task, time.perf_counter() - started, None, 0, 0, 0, None, error=f"{exc.code}: {exc.message}"
    )


def in_process_jobs(
    args: argparse.Namespace,
) -> tuple[dict[str, Job], Callable[[], str], Callable[[], None]]:
    """Jobs that call the processors on this process's engine: (jobs, model name, close)."""
    from structsum.config import get_settings
    from structsum.models import EnhancementRequest, SummaryRequest
    from structsum.processors.engine import close_engine, load_engine
    from structsum.processors.enhancement import enhance
    from structsum.processors.summary import summarize

    settings = get_settings()
    engine = load_engine(settings.engine, settings.cache_dir)

    def summary(text: str) -> JobSample:
        started = time.perf_counter()
        try:
            request = SummaryRequest(
                text=text, template_id=args.template_id, language=args.language
            )
            result = summarize(request, engine=engine, settings=settings)
        except StructsumError as exc:
            return failed("summary", started, exc)
        return JobSample(
            "summary",
            time.perf_counter() - started,
            None,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            len(result.attempts),
            result.valid,
        )

    def enhancement(text: str) -> JobSample:
        started = time.perf_counter()
        try:
            result = enhance(
                EnhancementRequest(text=text, language=args.language),
                engine=engine,
                settings=settings,
            )
        except StructsumError as exc:
            return failed("enhancement", started, exc)
        return JobSample(
            "enhancement",
            time.perf_counter() - started,
            None,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.chunks,
            None,
        )

    return {"summary": summary, "enhancement": enhancement}, lambda: engine.model_name, close_engine


def queue_jobs(
    args: argparse.Namespace,
) -> tuple[dict[str, Job], Callable[[], str], Callable[[], None]]:
    """Jobs that go through Redis to a running worker; the model is read from results."""
    models: set[str] = set()
    from structsum.client import enqueue_enhancement, enqueue_summary

    def summary(text: str) -> JobSample:
        started = time.perf_counter()
        try:
            handle = enqueue_summary(text, args.template_id, language=args.language)
            result = handle.result(timeout=args.timeout_s)
        except StructsumError as exc:
            return failed("summary", started, exc)
        models.add(result.model)
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

    def enhancement(text: str) -> JobSample:
        started = time.perf_counter()
        try:
            handle = enqueue_enhancement(text, language=args.language)
            result = handle.result(timeout=args.timeout_s)
        except StructsumError as exc:
            return failed("enhancement", started, exc)
        models.add(result.model)
        latency = time.perf_counter() - started
        return JobSample(
            "enhancement",
            latency,
            max(0.0, latency - result.elapsed_s),
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.chunks,
            None,
        )

    def model() -> str:
        return ", ".join(sorted(models)) or "unknown (no job finished)"

    return {"summary": summary, "enhancement": enhancement}, model, lambda: None


# --- run -------------------------------------------------------------------------------


def run_level(
    job: Job, texts: list[str], iterations: int, concurrency: int
) -> tuple[list[JobSample], float]:
    """``iterations`` jobs with ``concurrency`` in flight; returns samples and wall time."""
    inputs = [texts[i % len(texts)] for i in range(iterations)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-job") as pool:
        samples = list(pool.map(job, inputs))
    return samples, time.perf_counter() - started


# --- report ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.iterations < 1 or min(args.concurrency) < 1:
        raise SystemExit("--iterations and --concurrency must be >= 1")
    tasks = list(TASKS) if args.task == "both" else [args.task]
    texts, source = pick_inputs(args)
    jobs, model_name, close = queue_jobs(args) if args.via_queue else in_process_jobs(args)

    metrics: list[TaskMetrics] = []
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for task in tasks:
            for text in texts[: args.warmup]:
                jobs[task](text)
            for concurrency in args.concurrency:
                log.info("%s: %d jobs, %d in flight", task, args.iterations, concurrency)
                run, duration = run_level(jobs[task], texts, args.iterations, concurrency)
                metrics.append(summarize_jobs(task, concurrency, run, duration))
                samples.setdefault(task, {})[str(concurrency)] = [asdict(s) for s in run]
    finally:
        close()
    model = model_name()

    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = base_report(
        "tasks", arguments=arguments, model=model, metadata=parse_metadata(args.metadata)
    )
    report["settings"] = {"mode": "queue" if args.via_queue else "in-process", "inputs": source}
    if not args.via_queue:
        from structsum.config import get_settings

        report["settings"]["structsum"] = get_settings().model_dump(mode="json")
    report["results"] = [asdict(m) for m in metrics]
    report["samples"] = samples
    path = write_report(report, args.result_dir, args.result_filename or report_filename("tasks"))

    mode = "via queue" if args.via_queue else "in-process"
    print_table(
        f"task benchmark ({mode}): {Path(model).name}", TASK_COLUMNS, task_rows(report["results"])
    )
    print(f"report: {path}")
    failures = sum(m.failed for m in metrics)
    if failures:
        errors = {
            s["error"]
            for run in samples.values()
            for level in run.values()
            for s in level
            if s["error"]
        }
        print(f"FAILED: {failures} job(s): {sorted(errors)[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
