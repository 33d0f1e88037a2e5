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
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from structsum.bench.engine_arms import run_one
from structsum.bench.engine_rows import add_part, failed_part, failed_requests
from structsum.bench.engine_runs import BACKEND_MODULES, installed_backends, on_gpu
from structsum.bench.flags import checkout_defaults
from structsum.bench.report import (
    base_report,
    parse_metadata,
    print_table,
    report_filename,
    to_jsonable,
    write_report,
)
from structsum.bench.stats import DEFAULT_LENGTH_TOLERANCE
from structsum.bench.tables import ENGINE_COLUMNS, ENGINE_FOOTNOTE, engine_rows
from structsum.bench.workload import VARIANTS, list_template_ids

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])

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
    model.add_argument(
        "--mask-threads",
        type=int,
        default=None,
        help="grammar-mask threads (structsum's vLLM plugin; 0: vLLM's serial fill); "
        "default: the hardware profile's for each backend, as a worker would run",
    )
    model.add_argument(
        "--mask-batch-size", type=int, default=None, help="guided requests per mask task"
    )

    work = parser.add_argument_group("workload")
    work.add_argument(
        "--backends",
        nargs="+",
        default=None,
        choices=sorted(BACKEND_MODULES),
        help="structured-output backends, one engine each; default: every one installed",
    )
    work.add_argument("--templates-dir", type=Path, default=DEFAULTS.root / "schemas")
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
    out.add_argument("--result-dir", type=Path, default=DEFAULTS.result_dir)
    out.add_argument("--result-filename", default=None, help="default: engine-<date>.json")
    out.add_argument(
        "--metadata",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="stored in the report (label=H100 names the plot panel)",
    )
    out.add_argument("--save-itl", action="store_true", help="keep every inter-token gap")
    out.add_argument(
        "--profile",
        action="store_true",
        help="time vLLM's step stages (grammar bitmask, token acceptance, scheduling) per "
        "arm and batch size: what a guided arm pays beyond the unguided one",
    )
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
    if args.mask_batch_size is None:
        from structsum.config import get_settings

        args.mask_batch_size = get_settings().engine.mask_batch_size


# --- model ------------------------------------------------------------------------------


def resolve_model(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    from structsum.config import get_settings
    from structsum.processors.model_store import resolve_model as bundled

    return bundled(None, get_settings().cache_dir)


# --- report ----------------------------------------------------------------------------


def show(rows: list[dict[str, Any]], title: str) -> None:
    print_table(title, ENGINE_COLUMNS, engine_rows(rows))
    print(ENGINE_FOOTNOTE)


PROFILE_STAGES = ("step", "schedule", "grammar_bitmask", "accept_tokens", "update_from_output")


def show_profile(engines: dict[str, Any]) -> None:
    """Milliseconds per engine step of each stage, per backend, arm and batch size."""
    columns = ["backend", "arm", "batch", "steps", *(f"{s} ms" for s in PROFILE_STAGES)]
    rows = []
    for backend, engine in engines.items():
        for arm, by_batch in (engine.get("profile") or {}).items():
            for batch, stages in by_batch.items():
                cells = [f"{stages[s]:.2f}" if s in stages else "-" for s in PROFILE_STAGES]
                rows.append([backend, arm, batch, f"{stages.get('steps', 0):.0f}", *cells])
    print_table("step profile (ms per engine step, all runs)", columns, rows)


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
                yield failed_part(backend, code)
                continue
            yield json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.inputs_dir = args.inputs_dir or list(DEFAULTS.input_dirs)
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
    if args.profile:
        show_profile(report["engines"])
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
