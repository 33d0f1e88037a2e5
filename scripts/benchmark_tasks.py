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

    # through a worker started for the run on its own Redis DB (loads an engine: lock)
    STRUCTSUM_QUEUE__BROKER_URL=redis://127.0.0.1:6379/7 flock /tmp/structsum-engine.lock \\
        python scripts/benchmark_tasks.py --task summary --via-queue --start-worker

    # the same on a remote vLLM server (`structsum serve-engine` running at the URL)
    python scripts/benchmark_tasks.py --task summary --engine remote --url http://127.0.0.1:8000

    # scale-out: 2 workers on one Redis, one GPU each (CUDA_VISIBLE_DEVICES=0 and 1)
    python scripts/benchmark_tasks.py --task summary --via-queue --start-worker --workers 2 \\
        --gpu-per-worker --concurrency 64 128

Exit status 1 if any job failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from structsum.bench.faults import free_port
from structsum.bench.flags import (
    add_input_flags,
    add_output_flags,
    add_seed_flag,
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
from structsum.bench.jobs import Job, run_level, timed_job
from structsum.bench.report import print_table, report_filename
from structsum.bench.stats import TaskMetrics, summarize_jobs
from structsum.bench.tables import TASK_COLUMNS, task_rows
from structsum.bench.worker import WorkerProcess
from structsum.errors import StructsumError

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])
TASKS = ("enhancement", "summary")

log = logging.getLogger("benchmark_tasks")

# (jobs by task, the model name once jobs ran, close)
Jobs = tuple[dict[str, Job], Callable[[], str], Callable[[], None]]
# The logs of the workers --start-worker started, by node name (jobs per worker).
WORKER_LOGS: dict[str, Path] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    add_template_id_flag(parser)
    parser.add_argument(
        "--iterations", type=int, default=8, help="jobs per task and concurrency level"
    )
    parser.add_argument(
        "--min-rounds",
        type=int,
        default=0,
        help="at least this many jobs per slot: a level runs max(iterations, "
        "min-rounds x concurrency) jobs, so high concurrency stays full without "
        "making the batch-1 level long",
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1], help="jobs in flight (one or more)"
    )
    parser.add_argument(
        "--via-queue", action="store_true", help="through Celery + Redis to a running worker"
    )
    parser.add_argument(
        "--start-worker",
        action="store_true",
        help="with --via-queue: start `structsum worker` for the run (env settings), stop it after",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --start-worker: start this many workers on the queue (each its own engine, "
        "or each a client of --url)",
    )
    parser.add_argument(
        "--gpu-per-worker",
        action="store_true",
        help="with --workers: worker i sees only GPU i (CUDA_VISIBLE_DEVICES=i)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "remote"],
        default=None,
        help="engine kind for this run and the workers it starts [default: engine.kind]",
    )
    parser.add_argument("--url", default=None, help="the vLLM server's URL for --engine remote")
    parser.add_argument(
        "--timeout-s", type=float, default=900.0, help="per job, when waiting on the queue"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured jobs per task before measuring"
    )
    parser.add_argument(
        "--use-cache",
        action="store_true",
        help="with --via-queue: let the result cache answer repeated texts (off: every job "
        "runs on an engine)",
    )
    add_input_flags(parser, DEFAULTS)
    add_seed_flag(parser, "order in which inputs are used")
    add_output_flags(parser, DEFAULTS)
    return parser


# --- sample ----------------------------------------------------------------------------


def pick_texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """The inputs, shuffled by --seed, without those over --max-input-chars."""
    inputs, source = script_inputs(args, DEFAULTS)
    picked = pick_inputs(
        inputs, max_chars=args.max_input_chars, order=Order.SHUFFLED, seed=args.seed
    )
    return [i.text for i in picked], source


def in_process_jobs(args: argparse.Namespace) -> Jobs:
    """Jobs that call the processors on this process's engine."""
    from structsum.config import get_settings
    from structsum.models import EnhancementRequest, SummaryRequest
    from structsum.processors.engine import close_engine, load_engine
    from structsum.processors.enhancement import enhance
    from structsum.processors.summary import summarize

    settings = get_settings()
    engine = load_engine(settings.engine, settings.cache_dir)

    def summary(text: str) -> Any:
        request = SummaryRequest(text=text, template_id=args.template_id, language=args.language)
        return summarize(request, engine=engine, settings=settings)

    def enhancement(text: str) -> Any:
        request = EnhancementRequest(text=text, language=args.language)
        return enhance(request, engine=engine, settings=settings)

    jobs = {
        "summary": lambda text: timed_job("summary", lambda: summary(text), queued=False),
        "enhancement": lambda text: timed_job(
            "enhancement", lambda: enhancement(text), queued=False
        ),
    }
    return jobs, lambda: engine.model_name, close_engine


def queue_jobs(args: argparse.Namespace) -> Jobs:
    """Jobs that go through Redis to a worker; the model is read from their results."""
    from structsum.client import enqueue_enhancement, enqueue_summary

    models: set[str] = set()

    # Texts repeat (warm-up, levels, runs on one Redis): the result cache would answer
    # them without engine work, so it is off unless --use-cache asks for it.
    use_cache = args.use_cache

    def summary(text: str) -> Any:
        handle = enqueue_summary(
            text, args.template_id, language=args.language, use_cache=use_cache
        )
        result = handle.result(timeout=args.timeout_s)
        models.add(result.model)
        return result

    def enhancement(text: str) -> Any:
        handle = enqueue_enhancement(text, language=args.language, use_cache=use_cache)
        result = handle.result(timeout=args.timeout_s)
        models.add(result.model)
        return result

    def model() -> str:
        return ", ".join(sorted(models)) or "unknown (no job finished)"

    jobs = {
        "summary": lambda text: timed_job("summary", lambda: summary(text), queued=True),
        "enhancement": lambda text: timed_job(
            "enhancement", lambda: enhancement(text), queued=True
        ),
    }
    return jobs, model, lambda: None


def started_worker_jobs(args: argparse.Namespace) -> Jobs:
    """``queue_jobs`` against ``--workers`` workers started for this run, stopped after it."""
    from structsum.config import get_settings

    settings = get_settings()
    log.info("starting %d worker(s) (an engine load takes a minute)", args.workers)
    workers: list[WorkerProcess] = []

    def stop_all() -> None:
        for worker in workers:
            worker.stop()

    def kill_all(signum: int, frame: object) -> None:
        # SIGTERM (a `timeout` cutting the run): the workers run in process groups of
        # their own, so they and their engines (GPU memory) would outlive this process
        for worker in workers:
            worker.kill()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, kill_all)
    try:
        for index in range(args.workers):
            name = f"worker{index}"
            log_path = args.result_dir / report_filename("tasks", name).replace(".json", ".log")
            env = {"CUDA_VISIBLE_DEVICES": str(index)} if args.gpu_per_worker else {}
            workers.append(
                WorkerProcess.start(
                    settings,
                    log_path=log_path,
                    hostname=f"{name}@%h",
                    # a free port each: other workers on this host may hold 9464, 9465...
                    env={**env, "STRUCTSUM_QUEUE__METRICS_PORT": str(free_port())},
                    wait=False,
                )
            )
        for worker in workers:  # they load their engines together
            worker.wait_ready(settings)
    except BaseException:
        stop_all()
        raise
    WORKER_LOGS.update({f"worker{i}": w.log_path for i, w in enumerate(workers)})
    jobs, model, _ = queue_jobs(args)
    return jobs, model, stop_all


def succeeded_jobs(log_path: Path) -> int:
    """Jobs a worker finished, from its log (Celery's "Task NAME[ID] succeeded in")."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return sum("] succeeded in " in line for line in text.splitlines())


# --- engine figures --------------------------------------------------------------------


def engine_figures(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Cumulative prefix-cache/speculation counters by engine: this process's, or workers'."""

    if not args.via_queue:
        from structsum.processors.engine import loaded_engine

        engine = loaded_engine()  # the jobs' engine; none when they run without one
        # a remote engine has no counters here: they are the server's (/metrics)
        counters = getattr(engine, "counters", None)
        return {"in-process": counters().as_dict()} if counters is not None else {}
    from structsum.service.stats import collect

    workers = collect(timeout=2.0)["workers"]
    return {
        name: w["structsum"]["engine"]
        for name, w in workers.items()
        if (w.get("structsum") or {}).get("engine")
    }


def engine_delta(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The counters' growth over the run, per engine, with the rates of that growth."""
    from structsum.processors.engine_stats import EngineCounters

    fields = set(EngineCounters.__dataclass_fields__)
    delta: dict[str, dict[str, Any]] = {}
    for name, now in after.items():
        then = before.get(name, {})
        grown = EngineCounters(**{k: now.get(k, 0) - then.get(k, 0) for k in fields})
        delta[name] = grown.as_dict()
    return delta


# --- run -------------------------------------------------------------------------------


def measure(
    jobs: dict[str, Job], tasks: Sequence[str], texts: list[str], args: argparse.Namespace
) -> tuple[list[TaskMetrics], dict[str, dict[str, list[dict[str, Any]]]]]:
    """Each task at each concurrency level, after its warm-up jobs."""
    metrics: list[TaskMetrics] = []
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in tasks:
        for text in texts[: args.warmup]:
            jobs[task](text)
        for concurrency in args.concurrency:
            count = max(args.iterations, args.min_rounds * concurrency)
            log.info("%s: %d jobs, %d in flight", task, count, concurrency)
            run, duration = run_level(jobs[task], texts, count, concurrency)
            metrics.append(summarize_jobs(task, concurrency, run, duration))
            samples.setdefault(task, {})[str(concurrency)] = [asdict(s) for s in run]
    return metrics, samples


# --- report ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    if args.iterations < 1 or min(args.concurrency) < 1:
        raise SystemExit("--iterations and --concurrency must be >= 1")
    if args.start_worker and not args.via_queue:
        raise SystemExit("--start-worker goes with --via-queue")
    if args.workers < 1 or (args.workers > 1 and not args.start_worker):
        raise SystemExit("--workers N (N >= 1) goes with --start-worker")
    if args.engine == "remote" and not args.url:
        raise SystemExit("--engine remote needs --url (the vLLM server, e.g. http://host:8000)")
    # Through the environment: this process's settings and the workers it starts agree.
    if args.engine:
        os.environ["STRUCTSUM_ENGINE__KIND"] = args.engine
    if args.url:
        os.environ["STRUCTSUM_ENGINE__URL"] = args.url
    tasks = list(TASKS) if args.task == "both" else [args.task]
    texts, source = pick_texts(args)
    if not args.via_queue:
        jobs, model_name, close = in_process_jobs(args)
    else:
        try:
            jobs, model_name, close = (started_worker_jobs if args.start_worker else queue_jobs)(
                args
            )
        except StructsumError as exc:
            print(f"{exc.code}: {exc}", file=sys.stderr)
            return 1
    before = engine_figures(args)
    try:
        metrics, samples = measure(jobs, tasks, texts, args)
        figures = engine_delta(before, engine_figures(args))
    finally:
        close()
    model = model_name()

    report = start_report("tasks", args, model=model, defaults=DEFAULTS)
    from structsum.config import get_settings

    engine = get_settings().engine
    report["settings"] = {
        "mode": "queue" if args.via_queue else "in-process",
        "inputs": source,
        "engine": engine.kind,
        "url": engine.url,
        "workers": args.workers if args.start_worker else None,
        "gpu_per_worker": args.gpu_per_worker,
    }
    if WORKER_LOGS:
        # how the queue spread the jobs (warm-up jobs included)
        report["settings"]["jobs_per_worker"] = {
            name: succeeded_jobs(path) for name, path in WORKER_LOGS.items()
        }
    if not args.via_queue:
        # the broker URL's password is masked when the report is written
        report["settings"]["structsum"] = get_settings().model_dump(mode="json")
    report["results"] = [asdict(m) for m in metrics]
    report["samples"] = samples
    # vLLM's prefix-cache and speculation figures over the run (warm-up jobs included)
    report["engine"] = figures
    path = finish_report(report, args)

    mode = "via queue" if args.via_queue else "in-process"
    mode += f", {engine.kind} engine"
    if args.start_worker:
        mode += f", {args.workers} worker(s)"
        print(f"jobs per worker: {report['settings']['jobs_per_worker']}")
    print_table(
        f"task benchmark ({mode}): {Path(model).name}", TASK_COLUMNS, task_rows(report["results"])
    )
    for worker, counters in sorted(figures.items()):
        rate = counters.get("prefix_hit_rate")
        print(
            f"prefix cache ({worker}): {counters.get('prefix_hits', 0)}/"
            f"{counters.get('prefix_queries', 0)} prompt tokens reused"
            + ("" if rate is None else f" ({rate:.0%})")
        )
    print(f"report: {path}")
    failures = sum(m.failed for m in metrics)
    if failures:
        errors = {s["error"] for run in samples.values() for level in run.values() for s in level}
        print(f"FAILED: {failures} job(s): {sorted(e for e in errors if e)[:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
