"""Report rows as table cells: one layout for the terminal (rich) and the docs (Markdown).

Both take the ``results`` rows of a JSON report, so a table can be redrawn from any
saved report (``scripts/plot_benchmarks.py --markdown``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from structsum.bench.report import fmt, fmt_share

ENGINE_COLUMNS = (
    "backend",
    "schema",
    "batch",
    "out tok/s",
    "req/s",
    "ratio",
    "mean out tok",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "valid",
    "compile ms",
)

ENGINE_FOOTNOTE = (
    "ratio = guided output tok/s / unguided (same engine, same prompts); "
    "* = mean output lengths differ by more than the tolerance, not comparable; "
    "valid = outputs the template's full schema accepts"
)

TASK_COLUMNS = (
    "task",
    "conc",
    "jobs",
    "failed",
    "jobs/s",
    "out tok/s",
    "lat p50 ms",
    "lat p95 ms",
    "lat p99 ms",
    "queue p50 ms",
    "queue p99 ms",
    "valid@1",
    "valid",
    "attempts",
    "mean out tok",
)


def engine_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    table: list[list[str]] = []
    for row in rows:
        guided = row["arm"] == "guided"
        arm = f"{row['template_id']}:{row['schema']}" if guided else "unguided"
        compile_ms = fmt(row.get("compile_overhead_ms"), 0) if guided else ""
        head = [str(row["backend"]), arm, str(row["batch_size"])]
        if row["status"] != "ok":
            table.append([*head, "skipped", *[""] * 8, compile_ms])
            continue
        ratio_text = ""
        if guided:
            ratio_text = fmt_share(row.get("throughput_ratio")) + ("" if row.get("fair") else "*")
        table.append(
            [
                *head,
                fmt(row["output_tokens_per_s"]),
                fmt(row["requests_per_s"], 2),
                ratio_text,
                fmt(row["mean_output_tokens"]),
                fmt(row["p50_ttft_ms"]),
                fmt(row["p99_ttft_ms"]),
                fmt(row["p50_itl_ms"], 2),
                fmt(row["p99_itl_ms"], 2),
                fmt_share(row.get("valid_fraction")),
                compile_ms,
            ]
        )
    return table


def task_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            str(m["task"]),
            str(m["concurrency"]),
            str(m["jobs"]),
            str(m["failed"]),
            fmt(m["jobs_per_s"], 3),
            fmt(m["output_tokens_per_s"]),
            fmt(m["p50_latency_ms"], 0),
            fmt(m["p95_latency_ms"], 0),
            fmt(m["p99_latency_ms"], 0),
            fmt(m["p50_queue_wait_ms"], 0),
            fmt(m["p99_queue_wait_ms"], 0),
            fmt_share(m.get("valid_first_fraction")),
            fmt_share(m["valid_fraction"]),
            fmt(m["mean_attempts"], 2),
            fmt(m["mean_completion_tokens"], 0),
        ]
        for m in rows
    ]


# scripts/benchmark_templates.py: one row per template and policy variant.
TEMPLATE_COLUMNS = (
    "template",
    "variant",
    "n",
    "valid@1",
    "valid final",
    "attempts",
    "cut",
    "decodings",
    "tok/req",
    "mean s",
    "p90 s",
    "wall s",
    "tok/s",
    "grounding",
    "verbatim",
    "compile ms",
)


def template_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of ``ArmMetrics`` (as dicts); keys added later are optional in older reports."""
    table: list[list[str]] = []
    for m in rows:
        failed = m["failed_requests"]
        decodings = m.get("decoding_runs") or {}
        table.append(
            [
                str(m["template_id"]),
                str(m["variant"]),
                str(m["requests"]) + (f" ({failed} failed)" if failed else ""),
                fmt_share(m["valid_first_share"]),
                fmt_share(m["valid_final_share"]),
                fmt(m["mean_attempts"], 2),
                str(m["truncated_attempts"]),
                ", ".join(f"{name} {runs}" for name, runs in decodings.items()),
                fmt(m["mean_completion_tokens"], 0),
                fmt(m["mean_latency_s"]),
                fmt(m["p90_latency_s"]),
                fmt(m["wall_s"]),
                fmt(m["output_tok_per_s"]),
                fmt(m.get("mean_grounding"), 2),
                fmt_share(m.get("verbatim_share")),
                f"{fmt(m.get('compile_ms_template'), 0)} / {fmt(m.get('compile_ms_request'), 0)}",
            ]
        )
    return table


# scripts/benchmark_warm_summary.py: one row per summary of the sample.
WARM_SUMMARY_COLUMNS = (
    "run",
    "s",
    "valid",
    "attempts",
    "prompt tok",
    "output tok",
    "ttft s",
    "tok/s",
)


def warm_summary_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of the script's ``Run`` records (as dicts), numbered from 1."""
    table: list[list[str]] = []
    for number, run in enumerate(runs, start=1):
        elapsed, ttft, tokens = run["elapsed_s"], run["first_ttft_s"], run["completion_tokens"]
        decode_s = elapsed - (ttft or 0.0)
        table.append(
            [
                str(number),
                fmt(elapsed),
                "failed" if run["failure"] else str(run["valid"]),
                str(run["attempts"]),
                str(run["prompt_tokens"]),
                str(tokens),
                fmt(ttft),
                fmt(tokens / decode_s if decode_s > 0 else float("nan")),
            ]
        )
    return table


def report_table(report: Mapping[str, Any]) -> tuple[Sequence[str], list[list[str]]]:
    """Columns and cells for any report, by its ``benchmark`` kind."""
    if report["benchmark"] == "engine":
        return ENGINE_COLUMNS, engine_rows(report["results"])
    if report["benchmark"] == "tasks":
        return TASK_COLUMNS, task_rows(report["results"])
    if report["benchmark"] == "templates":
        return TEMPLATE_COLUMNS, template_rows(report["results"])
    if report["benchmark"] == "warm-summary":
        return WARM_SUMMARY_COLUMNS, warm_summary_rows(report["runs"])
    raise ValueError(f"unknown benchmark kind {report['benchmark']!r}")
