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


def report_table(report: Mapping[str, Any]) -> tuple[Sequence[str], list[list[str]]]:
    """Columns and cells for any report, by its ``benchmark`` kind."""
    if report["benchmark"] == "engine":
        return ENGINE_COLUMNS, engine_rows(report["results"])
    if report["benchmark"] == "tasks":
        return TASK_COLUMNS, task_rows(report["results"])
    raise ValueError(f"unknown benchmark kind {report['benchmark']!r}")
