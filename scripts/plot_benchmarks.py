#!/usr/bin/env python3
"""Draw saved benchmark reports: a PNG of throughput vs batch size, or Markdown tables.

Commands:

    # guided vs unguided output tok/s over batch sizes, one panel per report and backend
    python scripts/plot_benchmarks.py results/engine-*.json --output results/engine.png

    # the tables of any reports (engine, tasks, templates, warm-summary) as Markdown,
    # for docs/benchmarks.md
    python scripts/plot_benchmarks.py results/*.json --markdown
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from structsum.bench.plot import plot_reports
from structsum.bench.report import fmt, load_report, markdown_table
from structsum.bench.tables import ENGINE_FOOTNOTE, report_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("reports", nargs="+", type=Path, help="JSON reports of the benchmarks")
    parser.add_argument(
        "--output", type=Path, default=Path("results/benchmarks.png"), help="the PNG to write"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print Markdown tables instead of plotting"
    )
    return parser


def markdown(report: dict[str, object]) -> str:
    columns, rows = report_table(report)
    machine = report["machine"]
    versions = report["versions"]
    assert isinstance(machine, dict) and isinstance(versions, dict)
    device = (machine.get("gpus") or [None])[0] or f"{machine['cpu']} x{machine['cpu_count']}"
    head = (
        f"**{report['benchmark']}** on {device}, {report['date']}, model `{report['model']}`, "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    )
    foot = ""
    if report["benchmark"] == "engine":
        foot = f"\n\n{ENGINE_FOOTNOTE}"
    elif report["benchmark"] == "warm-summary":
        median = report.get("median_s")
        foot = f"\n\nmedian {fmt(median if isinstance(median, int | float) else None)} s"
    return f"{head}\n\n{markdown_table(columns, rows)}{foot}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reports = [load_report(path) for path in args.reports]
    if args.markdown:
        print("\n".join(markdown(report) for report in reports))
        return 0
    engine_reports = [r for r in reports if r["benchmark"] == "engine"]
    print(plot_reports(engine_reports, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
