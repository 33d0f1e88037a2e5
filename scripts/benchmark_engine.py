#!/usr/bin/env python3
"""Raw-engine benchmark: guided vs unguided decoding in one engine, same prompts.

For each structured-output backend (one engine each, in its own subprocess so that
memory is really freed between them), each batch size and each template's decoding
schema (``full`` as written, ``simplified`` by its policy, ``uncapped``: the policy
without length caps), it sends a batch of concurrent requests through vLLM's
``AsyncLLM`` and measures output tok/s, requests/s, TTFT, inter-token latency, the
fraction of outputs valid against the template's FULL schema (jsonschema, not just
``json.loads``), and the first-request grammar compile overhead.

Fair length: unguided requests are forced to exactly ``--output-len`` tokens
(``ignore_eos`` and ``min_tokens``). Guided requests cannot be forced: vLLM lets a
request run on past the end of its grammar only by dropping the grammar (once a
matcher terminates, every token is allowed again), so a forced guided arm would be
partly unguided. Guided requests therefore stop where their grammar ends or at
``--output-len``; tok/s counts the tokens actually produced, the report gives each
arm's mean output tokens, and a ratio whose arms differ by more than
``--length-tolerance`` is flagged "unfair" (shown with '*').

Commands:

    # this CPU box, bundled SmolLM2-135M (take the engine lock: one engine at a time)
    flock /tmp/structsum-engine.lock python scripts/benchmark_engine.py \\
        --batch-sizes 1 8 --input-len 256 --output-len 64 --backends xgrammar guidance

    # a GPU, 1.7B Llama shape with random weights (scripts/gpu_run.sh does this)
    python scripts/benchmark_engine.py --model .gpu/model --load-format dummy \\
        --batch-sizes 1 8 64 --input-len 512 --output-len 256 \\
        --schemas full simplified uncapped --metadata label=H100

    # a PNG from one or more reports
    python scripts/plot_benchmarks.py results/engine-*.json --output results/engine.png

Exit status 1 if any request failed or a backend's engine did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from structsum.bench.report import (
    base_report,
    parse_metadata,
    print_table,
    report_filename,
    to_jsonable,
    write_report,
)
from structsum.bench.stats import (
    DEFAULT_LENGTH_TOLERANCE,
    RequestSample,
    compare_arms,
    median,
    summarize_arm,
)
from structsum.bench.tables import ENGINE_COLUMNS, ENGINE_FOOTNOTE, engine_rows
from structsum.bench.workload import (
    DEFAULT_INPUT_DIRS,
    REPO_ROOT,
    VARIANTS,
    SchemaVariant,
    fit_prompt,
    list_template_ids,
    load_corpus,
    schema_valid,
    schema_variants,
    system_prompt,
)

log = logging.getLogger("benchmark_engine")

# Backend name in vLLM -> the module that must be importable for it.
BACKEND_MODULES = {"xgrammar": "xgrammar", "guidance": "llguidance", "outlines": "outlines_core"}
EXAMPLE_CHARS = 400
# Finish reasons of requests that vLLM ended without a usable answer.
FAILED_FINISH = ("abort", "error")
# A grammar every backend accepts (outlines refuses json_object), used only to warm up.
TINY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}
WARM_UP = SchemaVariant("warm-up", "tiny", "json", TINY_SCHEMA, TINY_SCHEMA)
# Prompt windows of successive requests start this many tokens apart: different texts,
# so no two requests of a batch share more than the system prompt.
PROMPT_STRIDE = 131


def installed_backends() -> list[str]:
    return [name for name, module in BACKEND_MODULES.items() if importlib.util.find_spec(module)]


# --- arguments -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    model = parser.add_argument_group("model and engine")
    model.add_argument(
        "--model",
        default=None,
        help="HF model folder or name; default: the bundled SmolLM2-135M (converted once)",
    )
    model.add_argument("--tokenizer", default=None, help="tokenizer folder; default: --model")
    model.add_argument(
        "--load-format",
        default="auto",
        help="'dummy' gives random weights of the model's shape: right for throughput, "
        "meaningless for validity",
    )
    model.add_argument("--dtype", default="bfloat16")
    model.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="default: input-len + output-len + 128",
    )
    model.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    model.add_argument(
        "--kv-cache-gib",
        type=float,
        default=None,
        help="KV cache size; default 2 GiB on a CPU, vLLM's sizing on a GPU",
    )
    model.add_argument(
        "--max-num-seqs", type=int, default=None, help="default: the largest batch size"
    )
    model.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs / compile")
    model.add_argument(
        "--enable-prefix-caching",
        action="store_true",
        help="off by default: arms share prompts, and a cached prefill would favour "
        "whichever arm runs second",
    )
    model.add_argument(
        "--disable-any-whitespace",
        action="store_true",
        help="no free whitespace between JSON tokens in the grammar",
    )
    model.add_argument("--seed", type=int, default=0, help="engine seed (no per-request seeds)")

    work = parser.add_argument_group("workload")
    work.add_argument(
        "--backends",
        nargs="+",
        default=None,
        choices=sorted(BACKEND_MODULES),
        help="structured-output backends, one engine each; default: every one installed",
    )
    work.add_argument("--templates-dir", type=Path, default=REPO_ROOT / "schemas")
    work.add_argument(
        "--template-ids", nargs="+", default=None, help="default: every template found"
    )
    work.add_argument(
        "--schemas",
        nargs="+",
        default=["full", "simplified"],
        choices=VARIANTS,
        help="decoding schemas per template (full: as written; simplified: by its policy; "
        "uncapped: policy without maxLength/maxItems)",
    )
    work.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 64])
    work.add_argument("--input-len", type=int, default=512, help="prompt tokens per request")
    work.add_argument("--output-len", type=int, default=256, help="output tokens per request")
    work.add_argument("--num-runs", type=int, default=3, help="runs per arm and batch size")
    work.add_argument("--temperature", type=float, default=0.7)
    work.add_argument("--top-p", type=float, default=0.95)
    work.add_argument(
        "--inputs-dir",
        type=Path,
        action="append",
        default=None,
        help="folders of .txt inputs (first non-empty wins); default: tests/data/inputs, "
        "scripts/samples, else a built-in text",
    )
    work.add_argument(
        "--compile-timeout-s",
        type=float,
        default=120.0,
        help="a schema whose first request takes longer is skipped for that backend",
    )
    work.add_argument(
        "--length-tolerance",
        type=float,
        default=DEFAULT_LENGTH_TOLERANCE,
        help="flag a guided/unguided ratio whose mean output lengths differ by more",
    )

    out = parser.add_argument_group("output")
    out.add_argument("--result-dir", type=Path, default=REPO_ROOT / "results")
    out.add_argument("--result-filename", default=None, help="default: engine-<date>.json")
    out.add_argument(
        "--metadata",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="stored in the report (label=H100 names the plot panel)",
    )
    out.add_argument("--save-itl", action="store_true", help="keep every inter-token gap")
    out.add_argument("--plot", type=Path, default=None, help="also write this PNG")
    out.add_argument(
        "--in-process",
        action="store_true",
        help="run all backends in this process (engines are shut down in turn)",
    )
    out.add_argument("--worker-output", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def check_args(args: argparse.Namespace) -> None:
    if min(args.batch_sizes) < 1 or args.num_runs < 1:
        raise SystemExit("batch sizes and --num-runs must be >= 1")
    if args.output_len < 2:
        raise SystemExit("--output-len must be >= 2 (TTFT and ITL need two tokens)")
    if args.backends is None:
        args.backends = installed_backends()
    if not args.backends:
        raise SystemExit(f"no structured-output backend installed ({sorted(BACKEND_MODULES)})")
    missing = [b for b in args.backends if not importlib.util.find_spec(BACKEND_MODULES[b])]
    if missing:
        raise SystemExit(f"backends not installed: {missing}")
    if args.template_ids is None:
        args.template_ids = list_template_ids(args.templates_dir)
    if args.max_model_len is None:
        args.max_model_len = args.input_len + args.output_len + 128
    if args.max_num_seqs is None:
        args.max_num_seqs = max(args.batch_sizes)


# --- engine ----------------------------------------------------------------------------


def resolve_model(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    from structsum.config import get_settings
    from structsum.processors.model_store import resolve_model as bundled

    return bundled(None, get_settings().cache_dir)


def on_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def engine_args(args: argparse.Namespace, model: str, backend: str) -> Any:
    """vLLM engine arguments; the config object (not a dict) works on vLLM 0.26 and 0.32."""
    from vllm.config.structured_outputs import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": args.tokenizer or model,
        "load_format": args.load_format,
        "dtype": args.dtype,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "enforce_eager": args.enforce_eager,
        "enable_prefix_caching": args.enable_prefix_caching,
        "seed": args.seed,
        "structured_outputs_config": StructuredOutputsConfig(
            backend=cast(Any, backend), disable_any_whitespace=args.disable_any_whitespace
        ),
    }
    kv_gib = args.kv_cache_gib
    if kv_gib is None and not on_gpu():
        kv_gib = 2.0
    if kv_gib:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * (1 << 30))
    return AsyncEngineArgs(**kwargs)


def sampling_params(
    args: argparse.Namespace, variant: SchemaVariant | None, max_tokens: int
) -> Any:
    """Unguided: exactly ``max_tokens`` tokens. Guided: up to ``max_tokens`` (see the doc)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    common: dict[str, Any] = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": max_tokens,
        "output_kind": RequestOutputKind.DELTA,
    }
    if variant is None:
        return SamplingParams(ignore_eos=True, min_tokens=max_tokens, **common)
    if variant.guide_kind == "json":
        structured = StructuredOutputsParams(
            json=variant.guide_value, disable_any_whitespace=args.disable_any_whitespace
        )
    elif variant.guide_kind == "regex":
        structured = StructuredOutputsParams(regex=variant.guide_value)
    else:
        structured = StructuredOutputsParams(json_object=True)
    return SamplingParams(structured_outputs=structured, **common)


def chat_ids_fn(tokenizer: Any) -> Any:
    def chat_ids(messages: list[dict[str, str]]) -> list[int]:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    return chat_ids


def build_prompts(
    args: argparse.Namespace, tokenizer: Any, variants: list[SchemaVariant]
) -> tuple[list[list[int]], str]:
    """``max(batch sizes)`` prompts, each a different window of the input texts."""
    texts, source = load_corpus(args.inputs_dir or DEFAULT_INPUT_DIRS)
    source_ids: list[int] = tokenizer.encode("\n\n".join(texts), add_special_tokens=False)
    system = system_prompt(variants[0].full_schema if variants else None)
    prompts = [
        fit_prompt(
            chat_ids=chat_ids_fn(tokenizer),
            decode=lambda ids: str(tokenizer.decode(ids)),
            source_ids=source_ids,
            system=system,
            input_len=args.input_len,
            offset=i * PROMPT_STRIDE,
        )
        for i in range(max(args.batch_sizes))
    ]
    return prompts, source


# --- run -------------------------------------------------------------------------------


class Runner:
    """Sends batches to one AsyncLLM and times each request from the client side."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._ids = itertools.count()

    async def one(
        self, prompt: list[int], params: Any, started: float
    ) -> tuple[RequestSample, str]:
        from vllm.inputs import TokensPrompt

        request_id = f"bench-{next(self._ids)}"
        ttft_ms: float | None = None
        last = started
        itl: list[float] = []
        tokens = 0
        text: list[str] = []
        finish: str | None = None
        try:
            async for output in self.llm.generate(
                TokensPrompt(prompt_token_ids=prompt), params, request_id
            ):
                now = time.perf_counter()
                delta = output.outputs[0]
                count = len(delta.token_ids)
                if count:
                    if ttft_ms is None:
                        ttft_ms = (now - started) * 1000.0
                    else:
                        itl.extend([(now - last) * 1000.0 / count] * count)
                    last = now
                    tokens += count
                text.append(delta.text)
                finish = delta.finish_reason or finish
        except Exception as exc:  # a failed request is a result: counted, reported, exit 1
            return (
                RequestSample(
                    input_tokens=len(prompt),
                    output_tokens=tokens,
                    ttft_ms=ttft_ms,
                    e2e_ms=(time.perf_counter() - started) * 1000.0,
                    finish_reason=finish,
                    error=f"{type(exc).__name__}: {exc}",
                ),
                "".join(text),
            )
        sample = RequestSample(
            input_tokens=len(prompt),
            output_tokens=tokens,
            ttft_ms=ttft_ms,
            e2e_ms=(time.perf_counter() - started) * 1000.0,
            itl_ms=itl,
            finish_reason=finish,
            # vLLM ends a request whose grammar fails to compile (outlines' regex
            # timeout, say) without raising, with no tokens. That is a failure.
            error=None if tokens and finish not in FAILED_FINISH else f"finish={finish}",
        )
        return sample, "".join(text)

    async def batch(
        self, prompts: list[list[int]], params: Any
    ) -> tuple[list[RequestSample], list[str], float]:
        started = time.perf_counter()
        results = await asyncio.gather(*(self.one(p, params, started) for p in prompts))
        duration = time.perf_counter() - started
        return [r[0] for r in results], [r[1] for r in results], duration


def judge(samples: list[RequestSample], texts: list[str], validator: Any) -> list[RequestSample]:
    from dataclasses import replace

    return [
        s if s.error else replace(s, valid=schema_valid(t, validator))
        for s, t in zip(samples, texts, strict=True)
    ]


async def probe_compile(
    runner: Runner,
    args: argparse.Namespace,
    prompt: list[int],
    variant: SchemaVariant,
    baseline_ms: float,
) -> tuple[float | None, str | None]:
    """First-request overhead of a schema: a 2-token guided request, minus unguided.

    vLLM compiles a grammar when its first request arrives and caches it by schema, so
    this is the compile cost a new template pays once per engine.
    """
    params = sampling_params(args, variant, 2)
    try:
        samples, _, duration = await asyncio.wait_for(
            runner.batch([prompt], params), timeout=args.compile_timeout_s
        )
    except TimeoutError:
        return None, f"first request took over {args.compile_timeout_s:.0f} s (grammar compile)"
    if samples[0].error:
        return None, samples[0].error
    return max(0.0, duration * 1000.0 - baseline_ms), None


async def run_backend(args: argparse.Namespace, model: str, backend: str) -> dict[str, Any]:
    """Every arm of one backend in one engine; returns rows, raw samples and notes."""
    from jsonschema import Draft202012Validator
    from vllm.v1.engine.async_llm import AsyncLLM

    variants, notes = schema_variants(args.templates_dir, args.template_ids, args.schemas)
    started = time.perf_counter()
    llm = AsyncLLM.from_engine_args(engine_args(args, model, backend))
    load_s = time.perf_counter() - started
    try:
        tokenizer = llm.get_tokenizer()
        if asyncio.iscoroutine(tokenizer):
            tokenizer = await tokenizer
        prompts, source = build_prompts(args, tokenizer, variants)
        runner = Runner(llm)
        # A backend's first guided request pays for its one-time setup (tokenizer
        # tables, thread pools); a trivial grammar takes that out of the compile probes.
        warm, _, _ = await runner.batch([prompts[0]], sampling_params(args, WARM_UP, 2))
        if warm[0].error:
            notes.append(f"{backend}: warm-up guided request failed: {warm[0].error}")
        # Warm-up at the largest batch: the first batch of a size pays for lazy
        # initialisation (measured: a 4 s TTFT p99 at batch 64 on an H100 without it).
        await runner.batch(prompts, sampling_params(args, None, 8))
        baseline = [
            (await runner.batch([prompts[0]], sampling_params(args, None, 2)))[2] * 1000.0
            for _ in range(3)
        ]
        compile_ms: dict[str, float | None] = {}
        active: list[SchemaVariant] = []
        skipped: dict[str, str] = {}
        for variant in variants:
            overhead, error = await probe_compile(
                runner, args, prompts[0], variant, median(baseline)
            )
            compile_ms[variant.label] = overhead
            if error:
                skipped[variant.label] = error
                notes.append(f"{backend} {variant.label} skipped: {error}")
            else:
                active.append(variant)
        validators = {v.label: Draft202012Validator(v.full_schema) for v in active}

        # arm -> batch size -> runs
        raw: dict[str, dict[int, list[list[RequestSample]]]] = {}
        durations: dict[str, dict[int, list[float]]] = {}
        examples: dict[str, str] = {}
        arms: list[SchemaVariant | None] = [None, *active]
        for batch_size in args.batch_sizes:
            for run in range(args.num_runs):
                # Arms alternate within each run so that drift hits all of them alike.
                for variant in arms:
                    label = variant.label if variant else "unguided"
                    params = sampling_params(args, variant, args.output_len)
                    samples, texts, duration = await runner.batch(prompts[:batch_size], params)
                    if variant is not None:
                        samples = judge(samples, texts, validators[variant.label])
                        examples.setdefault(label, texts[0][:EXAMPLE_CHARS])
                    raw.setdefault(label, {}).setdefault(batch_size, []).append(samples)
                    durations.setdefault(label, {}).setdefault(batch_size, []).append(duration)
                    log.info(
                        "%s %s batch=%d run=%d: %.2f s, %d tokens",
                        backend,
                        label,
                        batch_size,
                        run,
                        duration,
                        sum(s.output_tokens for s in samples),
                    )
    finally:
        llm.shutdown()

    rows = compute_rows(args, backend, variants, raw, durations, compile_ms, skipped, examples)
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
            for label, by_batch in raw.items()
        },
        "schemas": {
            v.label: {"kind": v.guide_kind, "decoding": v.guide_value, "changes": v.changes}
            for v in variants
        },
        "notes": notes,
    }


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


# --- compute ---------------------------------------------------------------------------


def compute_rows(
    args: argparse.Namespace,
    backend: str,
    variants: list[SchemaVariant],
    raw: dict[str, dict[int, list[list[RequestSample]]]],
    durations: dict[str, dict[int, list[float]]],
    compile_ms: dict[str, float | None],
    skipped: dict[str, str],
    examples: dict[str, str],
) -> list[dict[str, Any]]:
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


# --- report ----------------------------------------------------------------------------


def show(rows: list[dict[str, Any]], title: str) -> None:
    print_table(title, ENGINE_COLUMNS, engine_rows(rows))
    print(ENGINE_FOOTNOTE)


def failed_requests(rows: list[dict[str, Any]]) -> int:
    return sum(int(row.get("failed", 0) or 0) for row in rows)


def run_children(args: argparse.Namespace, argv: list[str]) -> Iterator[dict[str, Any]]:
    """One subprocess per backend: an engine's memory is only surely freed with its process."""
    with tempfile.TemporaryDirectory(prefix="structsum-bench-") as tmp:
        for backend in args.backends:
            out = Path(tmp) / f"{backend}.json"
            script = str(Path(__file__).resolve())
            command = [
                sys.executable,
                script,
                *argv,
                "--backends",
                backend,
                "--worker-output",
                str(out),
            ]
            print(f"== backend {backend}: engine in a subprocess", flush=True)
            code = subprocess.call(command)
            if code != 0 or not out.is_file():
                yield {
                    "backend": backend,
                    "rows": [],
                    "samples": {},
                    "schemas": {},
                    "notes": [f"{backend}: engine process failed (exit {code})"],
                    "error": f"exit {code}",
                }
                continue
            yield json.loads(out.read_text(encoding="utf-8"))


def add_part(report: dict[str, Any], part: dict[str, Any]) -> None:
    report["results"].extend(part["rows"])
    report["samples"][part["backend"]] = part["samples"]
    report["notes"].extend(part["notes"])
    report["schemas"].update(part.get("schemas", {}))
    report["engines"][part["backend"]] = {
        key: part.get(key)
        for key in ("engine_load_s", "prompt_source", "compile_baseline_ms", "error")
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    check_args(args)
    model = resolve_model(args)

    if args.worker_output is not None:  # child: one backend, raw part for the parent
        part = run_one(args, model, args.backends[0])
        args.worker_output.write_text(json.dumps(to_jsonable(part)), encoding="utf-8")
        # Skip interpreter teardown: vLLM's AsyncLLM.__del__ would run its shutdown again
        # with half the modules gone and print a harmless but alarming traceback.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = base_report(
        "engine", arguments=arguments, model=model, metadata=parse_metadata(args.metadata)
    )
    report["settings"] = {
        "platform": "gpu" if on_gpu() else "cpu",
        "fair_length_rule": "unguided forced to output-len (ignore_eos, min_tokens); guided "
        "stops at its grammar's end or output-len; tok/s over tokens produced",
        "prefix_caching": args.enable_prefix_caching,
        "weights": "random (dummy)" if args.load_format == "dummy" else "real",
    }
    report["schemas"] = {}
    report["engines"] = {}
    filename = args.result_filename or report_filename("engine")
    if args.in_process:
        parts: Iterable[dict[str, Any]] = (run_one(args, model, b) for b in args.backends)
    else:
        parts = run_children(args, argv)
    broken: list[str] = []
    for part in parts:
        add_part(report, part)
        if part.get("error"):
            broken.append(part["backend"])
        # Written after every backend: a run cut short still leaves what it measured.
        path = write_report(report, args.result_dir, filename)

    machine = report["machine"]
    device = machine["gpus"][0] if machine["gpus"] else f"{machine['cpu']} x{machine['cpu_count']}"
    show(report["results"], f"engine benchmark: {Path(model).name} on {device}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {path}")
    if args.plot is not None:
        from structsum.bench.plot import plot_reports

        print(f"plot: {plot_reports([report], args.plot)}")

    failures = failed_requests(report["results"])
    if failures or broken:
        print(
            f"FAILED: {failures} request(s) failed; engines that did not run: {broken}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
