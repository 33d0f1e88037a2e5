"""Where a guided decode step spends its time: wall-clock totals of vLLM's step stages.

Why: issue 18 asks, wherever guided decoding falls short of unguided speed, for a
profile of what costs the difference. A sampling profiler sees the scheduler thread
but not which request kind it worked for, and vLLM's torch profiler traces the GPU,
not the grammar work on the CPU. The grammar costs sit in a handful of methods
(bitmask fill, token acceptance, the scheduler's step), so timing those directly,
per benchmark arm, answers the question with almost no overhead (two
``perf_counter`` calls per method call).

How: when ``STRUCTSUM_ENGINE_PROFILE_DIR`` is set, structsum's vLLM plugin (loaded in
every vLLM process, the engine-core one included) calls :func:`install`, which wraps
each method in :data:`TARGETS` that exists in this vLLM version with a timer and
starts a daemon thread writing the running totals to
``<dir>/profile-<pid>.json`` every :data:`FLUSH_INTERVAL_S`. Readers (the engine
benchmark) merge the files of every process (:func:`read_totals`) before and after an
arm, and subtract (:func:`difference`). Targets a version lacks are listed in the
file, not an error: vLLM moves these methods between releases.

Like the plugin, this module imports only the standard library at import time.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_DIR = "STRUCTSUM_ENGINE_PROFILE_DIR"
FLUSH_INTERVAL_S = 0.25
# What a reader waits after the work it measures, so that every process has flushed.
SETTLE_S = 3 * FLUSH_INTERVAL_S
# (label, module, qualified name). Both engine step variants are listed: vLLM uses one.
TARGETS: tuple[tuple[str, str, str], ...] = (
    ("step", "vllm.v1.engine.core", "EngineCore.step"),
    ("step", "vllm.v1.engine.core", "EngineCore.step_with_batch_queue"),
    ("schedule", "vllm.v1.core.sched.scheduler", "Scheduler.schedule"),
    ("update_from_output", "vllm.v1.core.sched.scheduler", "Scheduler.update_from_output"),
    ("grammar_bitmask", "vllm.v1.structured_output", "StructuredOutputManager.grammar_bitmask"),
    ("accept_tokens", "vllm.v1.structured_output", "StructuredOutputManager.accept_tokens"),
    (
        "accept_tokens",
        "vllm.v1.structured_output.backend_xgrammar",
        "XgrammarGrammar.accept_tokens",
    ),
    (
        "accept_tokens",
        "vllm.v1.structured_output.backend_guidance",
        "GuidanceGrammar.accept_tokens",
    ),
    ("execute_model", "vllm.v1.executor.abstract", "Executor.execute_model"),
    ("sample_tokens", "vllm.v1.executor.abstract", "Executor.sample_tokens"),
)
_WRAPPED = "_structsum_profiled"

Totals = dict[str, dict[str, float]]

_lock = threading.Lock()
_totals: Totals = {}
_missing: list[str] = []
_started = False
_directory: Path | None = None


def _record(label: str, seconds: float) -> None:
    with _lock:
        entry = _totals.setdefault(label, {"calls": 0.0, "s": 0.0})
        entry["calls"] += 1
        entry["s"] += seconds


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _record(label, time.perf_counter() - started)

    setattr(wrapper, _WRAPPED, True)
    return wrapper


def _wrap_target(label: str, module_name: str, qualname: str) -> bool:
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return False
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return False
    # Only a method the class defines itself: a wrapped inherited one would be timed twice.
    function = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if function is None or not callable(function):
        return False
    if not getattr(function, _WRAPPED, False):
        setattr(owner, name, _timed(label, function))
    return True


def _flush(directory: Path) -> None:
    path = directory / f"profile-{os.getpid()}.json"
    with _lock:
        data = {"pid": os.getpid(), "totals": _totals, "missing": _missing}
        text = json.dumps(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _flusher(directory: Path) -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        try:
            _flush(directory)
        except OSError:  # the reader removed its directory: nothing left to report to
            return


def _start_flusher() -> None:
    if _directory is not None:
        threading.Thread(
            target=_flusher, args=(_directory,), name="structsum-profile", daemon=True
        ).start()


def _after_fork_in_child() -> None:
    """A forked process (vLLM forks its engine core on GPUs) inherits the wrapped
    classes but not the flusher thread, and must not report its parent's totals."""
    global _lock
    _lock = threading.Lock()
    _totals.clear()
    _start_flusher()


def install(environ: Mapping[str, str] = os.environ) -> bool:
    """Time the targets in this process if the environment asks for it; idempotent."""
    global _started, _directory
    directory = environ.get(ENV_DIR)
    if not directory:
        return False
    for label, module_name, qualname in TARGETS:
        if not _wrap_target(label, module_name, qualname) and qualname not in _missing:
            _missing.append(qualname)
    if not _started:
        _started = True
        _directory = Path(directory)
        _directory.mkdir(parents=True, exist_ok=True)
        _start_flusher()
        os.register_at_fork(after_in_child=_after_fork_in_child)
    return True


def read_totals(directory: Path) -> Totals:
    """The totals of every process that wrote to ``directory``, summed."""
    merged: Totals = {}
    for path in sorted(directory.glob("profile-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # a file replaced mid-read: the next read has it
            continue
        for label, entry in data.get("totals", {}).items():
            into = merged.setdefault(label, {"calls": 0.0, "s": 0.0})
            into["calls"] += float(entry["calls"])
            into["s"] += float(entry["s"])
    return merged


def difference(after: Totals, before: Totals) -> Totals:
    """What happened between two reads (labels absent before count from zero)."""
    zero = {"calls": 0.0, "s": 0.0}
    return {
        label: {key: entry[key] - before.get(label, zero)[key] for key in ("calls", "s")}
        for label, entry in after.items()
        if entry["calls"] > before.get(label, zero)["calls"]
    }


def per_step_ms(totals: Totals) -> dict[str, float]:
    """Each stage's milliseconds per engine step: the unit that compares arms."""
    steps = totals.get("step", {}).get("calls", 0.0)
    if not steps:
        return {}
    summary = {label: entry["s"] * 1000.0 / steps for label, entry in totals.items()}
    summary["steps"] = steps
    return summary
