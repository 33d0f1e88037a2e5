"""Rows and report parts of the raw-engine benchmark, from raw samples (no engine here)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from structsum.bench.stats import RequestSample, compare_arms, summarize_arm
from structsum.bench.workload import SchemaVariant

# arm label -> batch size -> runs -> one sample per request
RawSamples = dict[str, dict[int, list[list[RequestSample]]]]
# arm label -> batch size -> seconds per run
Durations = dict[str, dict[int, list[float]]]


def compute_rows(
    args: argparse.Namespace,
    backend: str,
    variants: list[SchemaVariant],
    raw: RawSamples,
    durations: Durations,
    compile_ms: dict[str, float | None],
    skipped: dict[str, str],
    examples: dict[str, str],
) -> list[dict[str, Any]]:
    """One unguided row per batch size, then one row per schema variant compared with it."""
    rows: list[dict[str, Any]] = []
    for batch_size in args.batch_sizes:
        base = summarize_arm(
            batch_size, raw["unguided"][batch_size], durations["unguided"][batch_size]
        )
        rows.append(
            {
                "backend": backend,
                "template_id": None,
                "schema": None,
                "arm": "unguided",
                "status": "ok",
                "note": "",
                **asdict(base),
            }
        )
        for variant in variants:
            row: dict[str, Any] = {
                "backend": backend,
                "template_id": variant.template_id,
                "schema": variant.name,
                "arm": "guided",
                "batch_size": batch_size,
                "compile_overhead_ms": compile_ms.get(variant.label),
            }
            if variant.label in skipped:
                rows.append({**row, "status": "skipped", "note": skipped[variant.label]})
                continue
            metrics = summarize_arm(
                batch_size, raw[variant.label][batch_size], durations[variant.label][batch_size]
            )
            comparison = compare_arms(metrics, base, length_tolerance=args.length_tolerance)
            rows.append(
                {
                    **row,
                    "status": "ok",
                    "note": comparison.note,
                    **asdict(metrics),
                    "throughput_ratio": comparison.throughput_ratio,
                    "length_ratio": comparison.length_ratio,
                    "fair": comparison.fair,
                    "example_output": examples.get(variant.label, ""),
                }
            )
    return rows


def failed_requests(rows: list[dict[str, Any]]) -> int:
    return sum(int(row.get("failed", 0) or 0) for row in rows)


def failed_part(backend: str, code: int) -> dict[str, Any]:
    """What a backend whose engine process died adds to the report."""
    return {
        "backend": backend,
        "rows": [],
        "samples": {},
        "schemas": {},
        "notes": [f"{backend}: engine process failed (exit {code})"],
        "error": f"exit {code}",
    }


def add_part(report: dict[str, Any], part: dict[str, Any]) -> None:
    """Merge one backend's part into the report."""
    report["results"].extend(part["rows"])
    report["samples"][part["backend"]] = part["samples"]
    report["notes"].extend(part["notes"])
    report["schemas"].update(part.get("schemas", {}))
    report["engines"][part["backend"]] = {
        key: part.get(key)
        for key in ("engine_load_s", "prompt_source", "compile_baseline_ms", "error", "profile")
    }
