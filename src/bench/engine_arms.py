"""One backend's run of the raw-engine benchmark: warm up, probe compiles, measure every arm.

Arms (unguided, then each schema variant) alternate within each run so that
drift over the run hits all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from structsum.bench.engine_rows import Durations, RawSamples, compute_rows
from structsum.bench.engine_runs import (
    Runner,
    build_prompts,
    engine_settings,
    judge_samples,
    probe_compile,
    sampling_params,
)
from structsum.bench.stats import RequestSample, median
from structsum.bench.workload import SchemaVariant, schema_variants
from structsum.processors import engine_profile
from structsum.processors.engine import build_engine_args

log = logging.getLogger("benchmark_engine")

EXAMPLE_CHARS = 400
# A grammar every backend accepts (outlines refuses json_object), used only to warm up.
TINY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
WARM_UP = SchemaVariant("warm-up", "tiny", "json", TINY_SCHEMA, TINY_SCHEMA)


@dataclass
class Probes:
    """Compile overhead per variant, and which variants go on to be measured."""

    compile_ms: dict[str, float | None] = field(default_factory=dict)
    active: list[SchemaVariant] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Measured:
    raw: RawSamples = field(default_factory=dict)
    durations: Durations = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    # label -> batch size -> per run: step-stage totals (engine_profile), with --profile
    profile: dict[str, dict[int, list[engine_profile.Totals]]] = field(default_factory=dict)


class StageClock:
    """Step-stage totals around one arm, read from the engine processes' profile files."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    async def read(self) -> engine_profile.Totals:
        if self.directory is None:
            return {}
        # Let every engine process flush what the finished batch did.
        await asyncio.sleep(engine_profile.SETTLE_S)
        return engine_profile.read_totals(self.directory)


async def warm_up(
    runner: Runner, args: argparse.Namespace, prompts: list[list[int]], notes: list[str]
) -> list[float]:
    """Pay one-time costs outside the measurement; returns 2-token unguided baselines (ms)."""
    # A backend's first guided request pays for its one-time setup (tokenizer
    # tables, thread pools); a trivial grammar takes that out of the compile probes.
    warm, _, _ = await runner.batch([prompts[0]], sampling_params(args, WARM_UP, 2))
    if warm[0].error:
        notes.append(f"warm-up guided request failed: {warm[0].error}")
    # Warm-up at the largest batch: the first batch of a size pays for lazy
    # initialisation (measured: a 4 s TTFT p99 at batch 64 on an H100 without it).
    await runner.batch(prompts, sampling_params(args, None, 8))
    return [
        (await runner.batch([prompts[0]], sampling_params(args, None, 2)))[2] * 1000.0
        for _ in range(3)
    ]


async def probe_all(
    runner: Runner,
    args: argparse.Namespace,
    prompt: list[int],
    variants: list[SchemaVariant],
    baseline_ms: float,
) -> Probes:
    probes = Probes()
    for variant in variants:
        overhead, error = await probe_compile(runner, args, prompt, variant, baseline_ms)
        probes.compile_ms[variant.label] = overhead
        if error:
            probes.skipped[variant.label] = error
        else:
            probes.active.append(variant)
    return probes


async def measure(
    runner: Runner,
    args: argparse.Namespace,
    prompts: list[list[int]],
    probes: Probes,
    backend: str,
    clock: StageClock,
) -> Measured:
    from jsonschema import Draft202012Validator

    validators = {v.label: Draft202012Validator(v.full_schema) for v in probes.active}
    measured = Measured()
    arms: list[SchemaVariant | None] = [None, *probes.active]
    for batch_size in args.batch_sizes:
        for run in range(args.num_runs):
            for variant in arms:
                label = variant.label if variant else "unguided"
                params = sampling_params(args, variant, args.output_len)
                before = await clock.read()
                samples, texts, duration = await runner.batch(prompts[:batch_size], params)
                if clock.directory is not None:
                    stages = engine_profile.difference(await clock.read(), before)
                    runs = measured.profile.setdefault(label, {}).setdefault(batch_size, [])
                    runs.append(stages)
                if variant is not None:
                    samples = judge_samples(samples, texts, validators[variant.label])
                    measured.examples.setdefault(label, texts[0][:EXAMPLE_CHARS])
                measured.raw.setdefault(label, {}).setdefault(batch_size, []).append(samples)
                times = measured.durations.setdefault(label, {}).setdefault(batch_size, [])
                times.append(duration)
                tokens = sum(s.output_tokens for s in samples)
                log.info(
                    "%s %s batch=%d run=%d: %.2f s, %d tokens",
                    *(backend, label, batch_size, run, duration, tokens),
                )
    return measured


async def run_backend(args: argparse.Namespace, model: str, backend: str) -> dict[str, Any]:
    """Every arm of one backend in one engine; returns rows, raw samples and notes."""
    from vllm.v1.engine.async_llm import AsyncLLM

    variants, notes = schema_variants(args.templates_dir, args.template_ids, args.schemas)
    profile_dir = Path(tempfile.mkdtemp(prefix="structsum-profile-")) if args.profile else None
    if profile_dir is not None:
        # Read by structsum's vLLM plugin in the engine-core process it starts.
        os.environ[engine_profile.ENV_DIR] = str(profile_dir)
    clock = StageClock(profile_dir)
    started = time.perf_counter()
    llm = AsyncLLM.from_engine_args(build_engine_args(engine_settings(args, backend), model))
    load_s = time.perf_counter() - started
    try:
        tokenizer = llm.get_tokenizer()
        if asyncio.iscoroutine(tokenizer):
            tokenizer = await tokenizer
        prompts, source = build_prompts(args, tokenizer, variants)
        runner = Runner(llm)
        warm_notes: list[str] = []
        baseline = await warm_up(runner, args, prompts, warm_notes)
        notes.extend(f"{backend}: {note}" for note in warm_notes)
        probes = await probe_all(runner, args, prompts[0], variants, median(baseline))
        notes.extend(f"{backend} {label} skipped: {e}" for label, e in probes.skipped.items())
        measured = await measure(runner, args, prompts, probes, backend, clock)
    finally:
        llm.shutdown()

    rows = compute_rows(
        args,
        backend,
        variants,
        measured.raw,
        measured.durations,
        probes.compile_ms,
        probes.skipped,
        measured.examples,
    )
    return {
        "backend": backend,
        "engine_load_s": load_s,
        "prompt_source": source,
        "compile_baseline_ms": baseline,
        "rows": rows,
        "samples": {
            label: {
                str(b): [[sample_dict(s, args.save_itl) for s in run] for run in runs]
                for b, runs in by_batch.items()
            }
            for label, by_batch in measured.raw.items()
        },
        "schemas": {
            v.label: {"kind": v.guide_kind, "decoding": v.guide_value, "changes": v.changes}
            for v in variants
        },
        "notes": notes,
        "profile": stage_summary(measured.profile),
    }


def stage_summary(
    profile: dict[str, dict[int, list[engine_profile.Totals]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and batch size: each stage's ms per engine step, summed over the runs."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for label, by_batch in profile.items():
        for batch_size, runs in by_batch.items():
            total: engine_profile.Totals = {}
            for run in runs:
                for stage, entry in run.items():
                    into = total.setdefault(stage, {"calls": 0.0, "s": 0.0})
                    into["calls"] += entry["calls"]
                    into["s"] += entry["s"]
            summary.setdefault(label, {})[str(batch_size)] = engine_profile.per_step_ms(total)
    return summary


def run_one(args: argparse.Namespace, model: str, backend: str) -> dict[str, Any]:
    part = asyncio.run(run_backend(args, model, backend))
    # AsyncLLM keeps itself alive through reference cycles; collected at interpreter exit
    # its __del__ calls shutdown again with half the modules gone. Collect it here.
    gc.collect()
    return part


def sample_dict(sample: RequestSample, save_itl: bool) -> dict[str, Any]:
    data = asdict(sample)
    if not save_itl:
        data.pop("itl_ms")
    data["tpot_ms"] = sample.tpot_ms
    return data
