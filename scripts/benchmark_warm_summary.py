#!/usr/bin/env python3
"""Warm summary: one sample summarized again and again on a warm engine, as the demo's job.

The engine loads and compiles the templates' grammars (what a worker does before it
consumes), then the sample is summarized ``--runs`` times one after another with
the process's settings (the profile's defaults plus any ``STRUCTSUM_...``
variable). Before each run the prefix cache is emptied, so every run pays the
prompt's prefill like the first job after a worker starts (``--keep-prefix-cache``
times the cached case instead). The engine is seeded once, so the runs sample
different answers: the median is the number to quote.

Command (this 2-core box; take the engine lock, one engine at a time):

    flock /tmp/structsum-engine.lock python scripts/benchmark_warm_summary.py --runs 5

Writes ``results/warm-summary-<date>.json`` (arguments, machine, versions, settings,
every run) and prints a table. Exit status 1 if a run failed with an exception.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structsum.bench.flags import (
    add_output_flags,
    add_template_id_flag,
    checkout_defaults,
    finish_report,
    new_parser,
    parse_args,
    setup_logging,
    start_report,
)
from structsum.bench.report import fmt, print_table
from structsum.bench.stats import median
from structsum.bench.tables import WARM_SUMMARY_COLUMNS, warm_summary_rows
from structsum.config import Settings
from structsum.models import SummaryRequest

if TYPE_CHECKING:
    from structsum.processors.engine import Engine

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])
DEFAULT_SAMPLE = DEFAULTS.root / "scripts" / "samples" / "meeting.txt"

log = logging.getLogger("benchmark_warm_summary")


@dataclass(frozen=True)
class Run:
    """One summary of the sample: its time and what it cost."""

    elapsed_s: float
    valid: bool
    attempts: int
    decodings: list[str]
    prompt_tokens: int
    completion_tokens: int
    first_ttft_s: float | None
    failure: str | None = None
    data: dict[str, Any] | None = None


COLUMNS = WARM_SUMMARY_COLUMNS


def table_rows(runs: Sequence[Run]) -> list[list[str]]:
    return warm_summary_rows([asdict(run) for run in runs])


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="text to summarize")
    add_template_id_flag(parser)
    parser.add_argument("--runs", type=int, default=5, help="summaries, one after another")
    parser.add_argument(
        "--keep-prefix-cache",
        action="store_true",
        help="leave the prompt cached between runs (default: each run pays its prefill)",
    )
    add_output_flags(parser, DEFAULTS)
    return parser


def one_run(engine: Engine, settings: Settings, request: SummaryRequest) -> Run:
    from structsum.processors.summary import summarize

    started = time.perf_counter()
    try:
        result = summarize(request, engine=engine, settings=settings)
    except Exception as exc:  # a benchmark records the failure and goes on (exit 1)
        log.warning("run failed: %s", exc)
        return Run(time.perf_counter() - started, False, 0, [], 0, 0, None, repr(exc))
    return Run(
        elapsed_s=result.elapsed_s,
        valid=result.valid,
        attempts=len(result.attempts),
        decodings=[a.decoding or "unguided" for a in result.attempts],
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        first_ttft_s=result.attempts[0].ttft_s if result.attempts else None,
        data=result.data,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    settings = Settings()
    request = SummaryRequest(
        text=args.sample.read_text(encoding="utf-8"),
        template_id=args.template_id,
        language=args.language,
    )
    model = settings.engine.model or "bundled SmolLM2-135M-Instruct"
    report = start_report("warm-summary", args, model=model, defaults=DEFAULTS)
    report["settings"] = {
        "profile": settings.profile,
        "profile_reason": settings.profile_reason,
        "engine": settings.engine.model_dump(mode="json"),
        "sampling": settings.sampling.summary.model_dump(mode="json"),
    }
    from structsum.processors.engine import close_engine, load_engine
    from structsum.processors.warmup import warm_grammars

    started = time.perf_counter()
    engine = load_engine(settings.engine, settings.cache_dir)
    report["engine_start_s"] = time.perf_counter() - started
    runs: list[Run] = []
    try:
        report["warmup_s"] = warm_grammars(engine, settings).seconds
        for number in range(1, args.runs + 1):
            if not args.keep_prefix_cache:
                engine.reset_prefix_cache()
            runs.append(one_run(engine, settings, request))
            log.info("run %d: %.2f s", number, runs[-1].elapsed_s)
    finally:
        close_engine()
    report["runs"] = runs
    times = [run.elapsed_s for run in runs if run.failure is None]
    report["median_s"] = median(times) if times else None
    path = finish_report(report, args)
    print_table(f"{args.template_id} on {args.sample.name} ({model})", COLUMNS, table_rows(runs))
    valid = sum(run.valid for run in runs)
    print(f"median {fmt(report['median_s'])} s, {valid}/{len(runs)} valid; report: {path}")
    return 1 if any(run.failure for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
