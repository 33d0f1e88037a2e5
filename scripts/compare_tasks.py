#!/usr/bin/env python3
"""Task reports side by side: one row per report and level, jobs/s relative to the first.

For scale-out and remote-vs-local runs of ``benchmark_tasks.py``: the first report is
the baseline (1 worker, or the local engine), ``x base`` is each row's jobs/s over the
baseline's at the same task and concurrency (the scaling factor, or the remote
engine's share of the local rate).

Commands:

    python scripts/compare_tasks.py results/cpu-scale-1worker.json results/cpu-scale-2workers.json
    python scripts/compare_tasks.py results/*.json --markdown
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from structsum.bench.report import fmt, load_report, markdown_table

COLUMNS = (
    "run",
    "engine",
    "workers",
    "task",
    "conc",
    "jobs",
    "failed",
    "jobs/s",
    "x base",
    "lat p50 s",
    "lat p99 s",
    "valid",
    "jobs per worker",
)


def label(report: dict[str, Any], path: Path) -> str:
    return str((report.get("metadata") or {}).get("label") or path.stem)


def comparison_rows(reports: Sequence[tuple[Path, dict[str, Any]]]) -> list[list[str]]:
    """Rows of COLUMNS; ``x base`` divides by the first report's row of the same level."""
    base: dict[tuple[str, int], float] = {}
    if reports:
        for row in reports[0][1]["results"]:
            base[(row["task"], row["concurrency"])] = row["jobs_per_s"]
    table: list[list[str]] = []
    for path, report in reports:
        settings = report.get("settings") or {}
        spread = settings.get("jobs_per_worker") or {}
        for row in report["results"]:
            reference = base.get((row["task"], row["concurrency"]))
            ratio = row["jobs_per_s"] / reference if reference else None
            valid = row.get("valid_fraction")
            table.append(
                [
                    label(report, path),
                    str(settings.get("engine", "")),
                    str(settings.get("workers") or ""),
                    row["task"],
                    str(row["concurrency"]),
                    str(row["jobs"]),
                    str(row["failed"]),
                    fmt(row["jobs_per_s"], 3),
                    fmt(ratio, 2),
                    fmt(row["p50_latency_ms"] / 1000.0, 1),
                    fmt(row["p99_latency_ms"] / 1000.0, 1),
                    "" if valid is None else f"{valid:.0%}",
                    "/".join(str(n) for n in spread.values()),
                ]
            )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("reports", nargs="+", type=Path, help="task reports, the baseline first")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    reports = [(path, load_report(path)) for path in args.reports]
    if any(report["benchmark"] != "tasks" for _, report in reports):
        raise SystemExit("compare_tasks.py reads benchmark_tasks.py reports only")
    rows = comparison_rows(reports)
    if args.markdown:
        print(markdown_table(COLUMNS, rows))
    else:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
        for line in [list(COLUMNS), *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
