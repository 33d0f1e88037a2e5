"""A PNG of output throughput against batch size, guided vs unguided.

One panel per (report, backend): the unguided baseline and each guided schema as
lines over batch sizes, so the gap that grows with the batch is visible at once.
matplotlib is imported only here and only when a plot is asked for (``plot`` extra).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from structsum.errors import PlotUnavailable


def machine_label(report: Mapping[str, Any]) -> str:
    machine = report.get("machine", {})
    gpus = machine.get("gpus") or []
    device = gpus[0] if gpus else f"CPU x{machine.get('cpu_count', '?')}"
    label = report.get("metadata", {}).get("label")
    return f"{label} ({device})" if label else str(device)


def throughput_series(
    report: Mapping[str, Any],
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """backend -> line name -> [(batch size, output tok/s)], from an engine report."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in report.get("results", []):
        if row.get("status") != "ok":
            continue
        rate = row.get("output_tokens_per_s")
        if rate is None or not math.isfinite(rate):
            continue
        if row.get("arm") == "unguided":
            name = "unguided"
        else:
            name = f"{row.get('template_id')} {row.get('schema')}"
        series[str(row.get("backend"))][name].append((int(row["batch_size"]), float(rate)))
    return {
        backend: {name: sorted(points) for name, points in lines.items()}
        for backend, lines in series.items()
    }


def plot_reports(reports: Sequence[Mapping[str, Any]], output: Path) -> Path:
    """Draw every engine report into one PNG at ``output``; returns the path."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable("matplotlib is not installed") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (report, backend, lines)
        for report in reports
        for backend, lines in sorted(throughput_series(report).items())
    ]
    if not panels:
        raise ValueError("no engine results to plot (only 'engine' reports have batch sizes)")
    # One colour per line name across every panel, so "uncapped" looks the same everywhere.
    names = sorted({name for _, _, lines in panels for name in lines} - {"unguided"})
    palette = plt.get_cmap("tab10")
    colours: dict[str, Any] = {name: palette(index % 10) for index, name in enumerate(names)}
    colours["unguided"] = "black"
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.8 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (report, backend, lines) in zip(axes.flat, panels, strict=False):
        for name, points in sorted(lines.items(), key=lambda item: item[0] != "unguided"):
            xs, ys = zip(*points, strict=True)
            width = 2.0 if name == "unguided" else 1.5
            axis.plot(xs, ys, marker="o", label=name, color=colours[name], linewidth=width)
        axis.set_xscale("log", base=2)
        sizes = sorted({x for points in lines.values() for x, _ in points})
        axis.set_xticks(sizes, [str(size) for size in sizes])
        axis.minorticks_off()
        axis.set_xlabel("batch size (concurrent requests)")
        axis.set_ylabel("output tokens/s")
        axis.set_title(f"{machine_label(report)}: {backend}", fontsize=9)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
