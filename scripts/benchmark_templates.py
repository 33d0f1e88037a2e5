#!/usr/bin/env python3
"""Template benchmark: schema-valid rate, attempts and time per template and decoding variant.

Each template summarizes every input text through the real pipeline
(``structsum.processors.summary.summarize``: prompt, guided decoding, validation
against the FULL schema, retries per policy) on one in-process engine. Requests of
an arm run concurrently so the engine batches them, as a worker would.

Decoding variants (the policy's ``[simplify]`` table is replaced; ``[retry]`` stays):

* ``policy``   - simplification on: the template's shipped policy.
* ``full``     - simplification off: decode with the full schema as written. Only
  what vLLM refuses for xgrammar is dropped (``uniqueItems``, ``contains``,
  ``multipleOf``, and length bounds next to ``pattern``/``format``); no added caps,
  no ``additionalProperties``/``required`` changes, ``$ref`` kept.
* ``uncapped`` - the shipped policy without any ``maxItems``/``maxLength`` in the
  grammar (the GPU fast path of DESIGN.md section 5); the full schema still validates.
* ``unguided`` - no constraint at all (mode ``none``); validation only.

The ``decodings`` column counts the attempts each decoding schema of the policy ran
(``[retry] decoding``: e.g. ``uncapped 24, default 3`` when 3 first attempts fell
back to a capped retry), and ``unguided`` for attempts decoded without a grammar.

Commands (this 2-core box; take the engine lock, one engine at a time):

    flock /tmp/structsum-engine.lock python scripts/benchmark_templates.py \\
        --variants policy full --limit 24

    # a quick look at one template
    flock /tmp/structsum-engine.lock python scripts/benchmark_templates.py \\
        --templates generic_summary_v1 --variants policy --limit 4

Beside validity each arm reports grounding (processors/grounding.py): the mean share
of the summaries' content words found in their text, and the share of verbatim
fields copied word for word. ``--compile-samples N`` times the grammar compile
(outside vLLM, engine idle, cache off) of the template's own decoding schema and of
the per-request schemas of the first N texts (verbatim fields make it per request).

    # grounding of an older report's summaries (its inputs must still be on disk)
    python scripts/benchmark_templates.py --regrade results/templates-<date>.json
Corpus mode (issue 16, bring your own schema): every schema of a corpus folder
(``tests/data/schema_corpus``, described by its ``sources.json``) becomes a template
without ``policy.toml`` (prompt and example from ``structsum templates add``'s
scaffold), and is loaded and run on one input text (inputs cycled by name). The
table is per category: load outcome (loaded / refused with a typed error / untyped
failure), valid@1, valid after retries, tokens and time:

    # build the templates once (this checkout's scaffold), then run them
    python scripts/benchmark_templates.py --corpus tests/data/schema_corpus \\
        --corpus-build results/corpus-templates --build-only
    flock /tmp/structsum-engine.lock python scripts/benchmark_templates.py \\
        --corpus-templates results/corpus-templates --corpus-slice 0:30 --concurrency 16

``--corpus-templates`` needs nothing newer than the loader and ``summarize``, so the
same command measures main's behaviour with main's package on ``PYTHONPATH``.

Writes ``results/templates-<date>.json`` (arguments, machine, versions, per-arm
metrics and every request's attempts) and prints a table. Exit status 1 if any
request failed with an exception (an invalid summary is a measurement, not a failure).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from structsum.bench.flags import (
    add_input_flags,
    add_output_flags,
    checkout_defaults,
    finish_report,
    new_parser,
    parse_args,
    script_inputs,
    setup_logging,
    start_report,
)
from structsum.bench.inputs import Input, pick_inputs
from structsum.bench.jobs import run_concurrently
from structsum.bench.policy_variants import VARIANTS, variant_templates_dir
from structsum.bench.report import fmt, fmt_share, print_table
from structsum.bench.stats import mean, percentile
from structsum.bench.tables import TEMPLATE_COLUMNS, template_rows
from structsum.config import Settings
from structsum.models import SummaryRequest, SummaryResult
from structsum.processors.templates import list_templates, load_template

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])
GOAL_VALID_SHARE = 0.99
# How much of each raw answer the corpus report keeps.
RAW_CHARS = 3000
# How an unguided attempt is counted among the decoding schemas that ran.
UNGUIDED = "unguided"

log = logging.getLogger("benchmark_templates")


# --- running ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One summary request: what came back, or the exception that stopped it."""

    template_id: str
    variant: str
    input_name: str
    latency_s: float
    valid: bool = False
    attempts: int = 0
    valid_first: bool = False
    temperatures: list[float] = field(default_factory=list)
    # Per attempt, the policy's decoding schema that guided it, or "unguided".
    decodings: list[str] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    chunks: int = 1
    errors: list[str] = field(default_factory=list)
    attempt_errors: list[list[str]] = field(default_factory=list)
    failure: str | None = None
    data: dict[str, Any] | None = None
    grounding: float | None = None
    verbatim_fields: int = 0
    verbatim_copied: int = 0
    # Corpus mode: each attempt's raw answer (its first RAW_CHARS characters), to see why
    # an answer failed.
    raw_outputs: list[str] = field(default_factory=list)


def _sample(template_id: str, variant: str, name: str, result: SummaryResult) -> Sample:
    return Sample(
        template_id=template_id,
        variant=variant,
        input_name=name,
        latency_s=result.elapsed_s,
        valid=result.valid,
        attempts=len(result.attempts),
        valid_first=bool(result.attempts) and result.attempts[0].valid,
        temperatures=[a.temperature for a in result.attempts],
        decodings=[a.decoding or UNGUIDED for a in result.attempts],
        finish_reasons=[a.finish_reason for a in result.attempts],
        completion_tokens=result.usage.completion_tokens,
        prompt_tokens=result.usage.prompt_tokens,
        chunks=result.chunks,
        errors=result.errors,
        attempt_errors=[a.errors for a in result.attempts],
        data=result.data,
        grounding=result.grounding.score if result.grounding else None,
        verbatim_fields=result.grounding.verbatim_fields if result.grounding else 0,
        verbatim_copied=result.grounding.verbatim_copied if result.grounding else 0,
    )


def run_arm(
    *,
    engine: Any,
    settings: Settings,
    template_id: str,
    variant: str,
    inputs: Sequence[tuple[str, str]],
    concurrency: int,
) -> tuple[list[Sample], float]:
    """All inputs through one (template, variant) arm at once; (samples, wall seconds)."""
    from structsum.processors.summary import summarize

    def one(name: str, text: str) -> Sample:
        started = time.perf_counter()
        request = SummaryRequest(text=text, template_id=template_id)
        try:
            result = summarize(request, engine=engine, settings=settings)
        except Exception as exc:  # a benchmark records every failure and goes on (exit 1)
            log.warning("%s/%s %s failed: %s", template_id, variant, name, exc)
            return Sample(
                template_id,
                variant,
                name,
                time.perf_counter() - started,
                failure=f"{type(exc).__name__}: {exc}",
            )
        sample = _sample(template_id, variant, name, result)
        log.info(
            "%s/%s %s: valid=%s attempts=%d %.1fs",
            *(template_id, variant, name, sample.valid, sample.attempts, sample.latency_s),
        )
        return sample

    return run_concurrently(lambda item: one(*item), inputs, concurrency)


# --- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmMetrics:
    template_id: str
    variant: str
    requests: int
    failed_requests: int
    valid_first_share: float
    valid_final_share: float
    mean_attempts: float
    truncated_attempts: int
    # Attempts per decoding schema of the policy (and "unguided"): how often a
    # fallback such as a capped retry after an uncapped first attempt ran.
    decoding_runs: dict[str, int]
    mean_completion_tokens: float
    mean_latency_s: float
    p90_latency_s: float
    wall_s: float
    output_tok_per_s: float
    # Mean grounding score over the summaries that parsed (None: none did).
    mean_grounding: float | None = None
    # Verbatim values copied word for word / all verbatim values (None: the arm has none).
    verbatim_share: float | None = None
    # Grammar compile ms (--compile-samples): the template's own decoding schema, and the
    # median over the per-request schemas (None: not measured).
    compile_ms_template: float | None = None
    compile_ms_request: float | None = None


def compute_metrics(
    template_id: str,
    variant: str,
    samples: Sequence[Sample],
    wall_s: float,
    compile_ms: tuple[float | None, float | None] = (None, None),
) -> ArmMetrics:
    done = [s for s in samples if s.failure is None]
    n = len(samples)
    tokens = sum(s.completion_tokens for s in done)
    scores = [s.grounding for s in done if s.grounding is not None]
    fields = sum(s.verbatim_fields for s in done)
    copied = sum(s.verbatim_copied for s in done)
    return ArmMetrics(
        template_id=template_id,
        variant=variant,
        requests=n,
        failed_requests=n - len(done),
        # Failed requests count as not valid: the share is of all requests sent.
        valid_first_share=sum(s.valid_first for s in done) / n if n else float("nan"),
        valid_final_share=sum(s.valid for s in done) / n if n else float("nan"),
        mean_attempts=mean([float(s.attempts) for s in done]),
        truncated_attempts=sum(r == "length" for s in done for r in s.finish_reasons),
        decoding_runs=dict(Counter(d for s in done for d in s.decodings)),
        mean_completion_tokens=mean([float(s.completion_tokens) for s in done]),
        mean_latency_s=mean([s.latency_s for s in done]),
        p90_latency_s=percentile([s.latency_s for s in done], 90),
        wall_s=wall_s,
        output_tok_per_s=tokens / wall_s if wall_s > 0 else float("nan"),
        mean_grounding=mean(scores) if scores else None,
        verbatim_share=copied / fields if fields else None,
        compile_ms_template=compile_ms[0],
        compile_ms_request=compile_ms[1],
    )


# --- report -------------------------------------------------------------------------------

COLUMNS = TEMPLATE_COLUMNS


def table_rows(metrics: Sequence[ArmMetrics]) -> list[list[str]]:
    return template_rows([asdict(m) for m in metrics])


# --- main ---------------------------------------------------------------------------------


def pick(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, text) of the first --limit inputs by name; no inputs is an error, not a guess."""
    inputs, source = script_inputs(args, DEFAULTS, builtin=False)
    if not inputs:
        raise SystemExit(source)
    picked: list[Input] = pick_inputs(inputs, max_chars=args.max_input_chars, limit=args.limit)
    return [(i.name, i.text) for i in picked]


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    corpus = parser.add_argument_group("corpus mode")
    corpus.add_argument(
        "--corpus", type=Path, default=None, help="a folder of schemas with sources.json"
    )
    corpus.add_argument(
        "--corpus-build",
        type=Path,
        default=None,
        help="where --corpus writes its templates (default: a temporary folder)",
    )
    corpus.add_argument(
        "--build-only", action="store_true", help="build the corpus templates and stop"
    )
    corpus.add_argument(
        "--corpus-templates",
        type=Path,
        default=None,
        help="run templates built by --corpus earlier (their corpus.json says the categories)",
    )
    corpus.add_argument(
        "--corpus-slice",
        default=None,
        help="START:END of the corpus (by file name) to run, to keep each run short",
    )
    parser.add_argument(
        "--templates", nargs="+", default=None, help="template ids; default: every template"
    )
    parser.add_argument("--templates-dir", type=Path, default=None, help="default: settings")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        default=["policy", "full"],
        help="decoding variants (see above); default: policy full",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="first N inputs (sorted by name); default: all"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight per arm (the engine batches them); default 8",
    )
    parser.add_argument(
        "--no-data", action="store_true", help="leave the summaries themselves out of the JSON"
    )
    parser.add_argument(
        "--compile-samples",
        type=int,
        default=0,
        help="time the grammar compile of the template's schema and of the first N "
        "per-request schemas, per arm (outside vLLM, after the arm); default 0: off",
    )
    parser.add_argument(
        "--example",
        choices=["on", "off"],
        default=None,
        help="show example.json in the prompt or not; default: as the policy says",
    )
    parser.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=None,
        help="the retry policy's temperature schedule; default: as the policy says",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        nargs="+",
        default=None,
        help="summary sampling's repetition penalty, one arm per value; default: the settings'",
    )
    parser.add_argument(
        "--regrade",
        type=Path,
        default=None,
        help="print grounding for the samples of an earlier report (no engine) and exit",
    )
    add_input_flags(parser, DEFAULTS)
    add_output_flags(parser, DEFAULTS)
    return parser


def policy_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The policy keys the command line sets for every arm (--example, --temperatures)."""
    overrides: dict[str, Any] = {}
    if args.example is not None:
        overrides["example"] = args.example == "on"
    if args.temperatures:
        overrides["retry"] = {"temperatures": args.temperatures}
    return overrides


def with_sampling(settings: Settings, repetition_penalty: float | None) -> Settings:
    """The settings with one arm's summary sampling (--repetition-penalty)."""
    if repetition_penalty is None:
        return settings
    summary = settings.sampling.summary.model_copy(
        update={"repetition_penalty": repetition_penalty}
    )
    sampling = settings.sampling.model_copy(update={"summary": summary})
    return settings.model_copy(update={"sampling": sampling})


def run_all(
    engine: Any,
    settings: Settings,
    template_ids: Sequence[str],
    inputs: Sequence[tuple[str, str]],
    args: argparse.Namespace,
) -> tuple[list[ArmMetrics], dict[str, list[Sample]]]:
    """Every (template, variant) arm in turn, each on its own copy of the template."""
    templates_dir = args.templates_dir or settings.templates_dir
    metrics: list[ArmMetrics] = []
    samples: dict[str, list[Sample]] = {}
    penalties: list[float | None] = list(args.repetition_penalty or [None])
    with tempfile.TemporaryDirectory(prefix="structsum-bench-") as tmp:
        for template_id in template_ids:
            for variant in args.variants:
                arm_dir = variant_templates_dir(
                    Path(tmp),
                    templates_dir,
                    template_id,
                    variant,
                    profile=settings.profile,
                    overrides=policy_overrides(args),
                )
                arm_settings = settings.model_copy(update={"templates_dir": arm_dir})
                for penalty in penalties:
                    label = variant if len(penalties) == 1 else f"{variant} rp={penalty}"
                    arm, wall = run_arm(
                        engine=engine,
                        settings=with_sampling(arm_settings, penalty),
                        template_id=template_id,
                        variant=label,
                        inputs=inputs,
                        concurrency=args.concurrency,
                    )
                    compile_ms = time_compiles(arm_settings, template_id, inputs, args)
                    metrics.append(compute_metrics(template_id, label, arm, wall, compile_ms))
                    print_table("so far", COLUMNS, table_rows(metrics[-1:]))
                    for sample in arm if args.no_data else ():
                        sample.data = None
                    samples[f"{template_id}:{label}"] = arm
    return metrics, samples


def time_compiles(
    settings: Settings,
    template_id: str,
    inputs: Sequence[tuple[str, str]],
    args: argparse.Namespace,
) -> tuple[float | None, float | None]:
    """(ms of the template's own schema, median ms of per-request schemas); None: off."""
    if args.compile_samples <= 0:
        return None, None
    from structsum.bench.grammar import GrammarTimer
    from structsum.processors.model_store import resolve_model
    from structsum.processors.verbatim import request_guide

    template = load_template(settings.template_dirs, template_id).for_profile(settings.profile)
    if template.decoding.schema is None:
        return None, None
    model_dir = resolve_model(settings.engine.model, settings.cache_dir)
    timer = GrammarTimer(model_dir, settings.engine.structured_output_backend)
    own = timer.ms(template.decoding.schema)
    per_request = []
    for _, text in inputs[: args.compile_samples]:
        guide = request_guide(
            template.decoding, text, settings.grounding, settings.engine.structured_output_backend
        )
        if guide is not None and isinstance(guide.value, dict):
            per_request.append(timer.ms(guide.value))
    log.info("%s: compile %.0f ms, per request %s ms", template_id, own, per_request)
    return own, percentile(per_request, 50) if per_request else None


def regrade(path: Path, settings: Settings, args: argparse.Namespace) -> int:
    """Grounding of an earlier report's summaries, graded by this checkout's scorer."""
    from structsum.bench.report import load_report
    from structsum.processors.summary import summary_grounding

    report = load_report(path)
    texts = dict(pick(args))
    rows = []
    for key, raw in report["samples"].items():
        template_id, variant = key.split(":", 1)
        template = load_template(settings.template_dirs, template_id).for_profile(settings.profile)
        samples = [Sample(**sample) for sample in raw]
        for sample in samples:
            if sample.data is None or sample.input_name not in texts:
                continue
            graded = summary_grounding(
                template, sample.data, texts[sample.input_name], settings=settings
            )
            if graded is not None:
                sample.grounding = graded.score
                sample.verbatim_fields = graded.verbatim_fields
                sample.verbatim_copied = graded.verbatim_copied
        wall = next(
            r["wall_s"]
            for r in report["results"]
            if r["template_id"] == template_id and r["variant"] == variant
        )
        rows.append(compute_metrics(template_id, variant, samples, wall))
    print_table(f"{path} regraded (verbatim: this checkout's marks)", COLUMNS, table_rows(rows))
    return 0


# --- corpus mode ----------------------------------------------------------------------------

CORPUS_MANIFEST = "sources.json"
BUILT_MANIFEST = "corpus.json"
CORPUS_COLUMNS = (
    "category",
    "schemas",
    "loaded",
    "refused",
    "untyped",
    "valid@1",
    "valid final",
    "tok/req",
    "mean s",
)


@dataclass
class CorpusEntry:
    """One corpus schema: its template id, category, what should happen, what did."""

    template_id: str
    category: str
    draft: str
    expect: str
    built: str = "ok"  # "ok", or the typed error of the scaffold ("refused: Code: ...")
    load: str = ""  # "loaded", "refused: Code", "untyped: Type: message"
    sample: Sample | None = None


def build_corpus(corpus: Path, target: Path) -> list[CorpusEntry]:
    """A template folder per corpus schema (no policy.toml: the profile default applies)."""
    from structsum.errors import StructsumError
    from structsum.processors.scaffold import write_template

    manifest = json.loads((corpus / CORPUS_MANIFEST).read_text(encoding="utf-8"))
    entries: list[CorpusEntry] = []
    target.mkdir(parents=True, exist_ok=True)
    for item in manifest["schemas"]:
        template_id = Path(item["file"]).stem
        entry = CorpusEntry(template_id, item["category"], item["draft"], item["expect"])
        directory = target / template_id
        try:
            schema = json.loads((corpus / item["file"]).read_text(encoding="utf-8"))
            write_template(directory, schema, prompt=None, kind="cpu")
            (directory / "policy.toml").unlink()
        except StructsumError as exc:
            entry.built = f"refused: {exc.code}: {exc.message[:160]}"
            # Keep the schema so that the loader's own refusal is measured too.
            directory.mkdir(exist_ok=True)
            (directory / "schema.json").write_bytes((corpus / item["file"]).read_bytes())
            for name, text in (("prompt.jinja", "{{ text }}\n"), ("example.json", "{}\n")):
                if not (directory / name).exists():
                    (directory / name).write_text(text, encoding="utf-8")
        except Exception as exc:  # a benchmark records every failure and goes on
            entry.built = f"untyped: {type(exc).__name__}: {exc}"[:200]
        entries.append(entry)
    rows = [{k: v for k, v in vars(e).items() if k != "sample"} for e in entries]
    (target / BUILT_MANIFEST).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return entries


def read_built(target: Path) -> list[CorpusEntry]:
    rows = json.loads((target / BUILT_MANIFEST).read_text(encoding="utf-8"))
    return [CorpusEntry(**{**row, "load": ""}) for row in rows]


def load_outcome(templates_dir: Path, template_id: str, settings: Settings) -> str:
    """ "loaded", "refused: Code: message" (typed) or "untyped: ..." (a bug, must be 0)."""
    from structsum.errors import StructsumError
    from structsum.processors.templates import load_template

    options = getattr(settings, "templates", None)  # main's loader has no options
    try:
        if options is None:
            load_template(templates_dir, template_id)
        else:
            load_template(templates_dir, template_id, options)
    except StructsumError as exc:
        return f"refused: {exc.code}: {exc.message[-160:]}"
    except Exception as exc:
        return f"untyped: {type(exc).__name__}: {exc}"[:200]
    return "loaded"


def run_corpus(
    engine: Any,
    settings: Settings,
    entries: list[CorpusEntry],
    inputs: Sequence[tuple[str, str]],
    concurrency: int,
    progress: Path | None = None,
) -> float:
    """Load every entry, then summarize one input per loaded template, all in flight at once.

    ``progress`` gets one JSON line per entry as it finishes, so a run cut short by the
    engine lock's time box still leaves its measurements.
    """
    lock = threading.Lock()

    def record(entry: CorpusEntry) -> None:
        if progress is not None:
            line = json.dumps(
                {**_entry_row(entry), "sample": asdict(entry.sample) if entry.sample else None}
            )
            with lock, progress.open("a", encoding="utf-8") as out:
                out.write(line + "\n")

    for entry in entries:
        entry.load = load_outcome(settings.templates_dir, entry.template_id, settings)
        if entry.load != "loaded":
            record(entry)
    loaded = [e for e in entries if e.load == "loaded"]
    work = [(e, inputs[i % len(inputs)]) for i, e in enumerate(loaded)]

    def one(item: tuple[CorpusEntry, tuple[str, str]]) -> Sample:
        entry, (name, text) = item
        recording = RecordingEngine(engine)
        samples, _ = run_arm(
            engine=recording,
            settings=settings,
            template_id=entry.template_id,
            variant="default",
            inputs=[(name, text)],
            concurrency=1,
        )
        entry.sample = samples[0]
        entry.sample.raw_outputs = recording.raw
        record(entry)
        return samples[0]

    _, wall = run_concurrently(one, work, concurrency)
    return wall


class RecordingEngine:
    """The engine, keeping the first RAW_CHARS of each answer's text in ``raw``."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.raw: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, requests: Any, **kwargs: Any) -> Any:
        outputs = self._engine.generate(requests, **kwargs)
        self.raw.extend(output.text[:RAW_CHARS] for output in outputs)
        return outputs


def _entry_row(entry: CorpusEntry) -> dict[str, Any]:
    return {k: v for k, v in vars(entry).items() if k != "sample"}


def _untyped(entry: CorpusEntry) -> bool:
    """A load or a request that failed with something other than a structsum error."""
    import structsum.errors

    failure = entry.sample.failure if entry.sample is not None else None
    name = failure.split(":", 1)[0] if failure else ""
    typed = isinstance(getattr(structsum.errors, name, None), type)
    return entry.load.startswith("untyped") or (failure is not None and not typed)


def corpus_rows(entries: Sequence[CorpusEntry]) -> list[list[str]]:
    groups: dict[str, list[CorpusEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.category, []).append(entry)
        groups.setdefault("ALL good" if entry.expect == "load" else "ALL bad", []).append(entry)
    rows = []
    for category in sorted(groups, key=lambda c: (c.startswith("ALL"), c)):
        group = groups[category]
        done = [e.sample for e in group if e.sample is not None and e.sample.failure is None]
        sent = [e for e in group if e.sample is not None]
        untyped = sum(_untyped(e) for e in group)
        rows.append(
            [
                category,
                str(len(group)),
                str(sum(e.load == "loaded" for e in group)),
                str(sum(e.load.startswith("refused") for e in group)),
                str(untyped),
                fmt_share(sum(s.valid_first for s in done) / len(sent)) if sent else "-",
                fmt_share(sum(s.valid for s in done) / len(sent)) if sent else "-",
                fmt(mean([float(s.completion_tokens) for s in done]), 0) if done else "-",
                fmt(mean([s.latency_s for s in done])) if done else "-",
            ]
        )
    return rows


def parse_slice(text: str | None, n: int) -> slice:
    if not text:
        return slice(0, n)
    start, _, end = text.partition(":")
    return slice(int(start or 0), int(end) if end else n)


def corpus_main(args: argparse.Namespace, settings: Settings) -> int:
    if args.corpus is not None:
        target = args.corpus_build or Path(tempfile.mkdtemp(prefix="structsum-corpus-"))
        entries = build_corpus(args.corpus, target)
        print(f"built {len(entries)} corpus templates in {target}")
        if args.build_only:
            return 0
    else:
        target = args.corpus_templates
        entries = read_built(target)
    entries = sorted(entries, key=lambda e: e.template_id)[
        parse_slice(args.corpus_slice, len(entries))
    ]
    settings = settings.model_copy(update={"templates_dir": target})
    inputs = pick(args)
    report = start_report("templates-corpus", args, model=settings.engine.model, defaults=DEFAULTS)
    from structsum.processors.engine import close_engine, load_engine

    started = time.perf_counter()
    engine = load_engine(settings.engine, settings.cache_dir)
    report["engine_start_s"] = time.perf_counter() - started
    try:
        progress = args.result_dir / f"{args.result_filename or 'corpus'}.progress.jsonl"
        progress.parent.mkdir(parents=True, exist_ok=True)
        progress.unlink(missing_ok=True)
        report["wall_s"] = run_corpus(
            engine, settings, entries, inputs, args.concurrency, progress=progress
        )
    finally:
        close_engine()
    report["entries"] = [
        {**{k: v for k, v in vars(e).items() if k != "sample"}, "sample": e.sample} for e in entries
    ]
    rows = corpus_rows(entries)
    report["table"] = [dict(zip(CORPUS_COLUMNS, row, strict=True)) for row in rows]
    path = finish_report(report, args)
    print_table(f"corpus {target} ({len(entries)} schemas)", CORPUS_COLUMNS, rows)
    for e in entries:
        if e.load != "loaded" or (e.sample is not None and not e.sample.valid):
            print(
                f"  {e.template_id}: expect={e.expect} load={e.load} "
                f"valid={e.sample.valid if e.sample else '-'}"
            )
    print(f"report: {path}")
    return 1 if any(_untyped(e) for e in entries) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    settings = Settings()
    if args.regrade is not None:
        return regrade(args.regrade, settings, args)

    if args.corpus is not None or args.corpus_templates is not None:
        return corpus_main(args, settings)
    template_ids = args.templates or list_templates(args.templates_dir or settings.templates_dir)
    inputs = pick(args)
    model = settings.engine.model or "bundled SmolLM2-135M-Instruct"
    report = start_report("templates", args, model=model, defaults=DEFAULTS)
    report["notes"].append(
        "valid = the answer satisfies the template's FULL schema; valid@1 on the first "
        "attempt; failed requests count as invalid"
    )
    from structsum.processors.engine import close_engine, load_engine

    started = time.perf_counter()
    engine = load_engine(settings.engine, settings.cache_dir)
    report["engine_start_s"] = time.perf_counter() - started
    try:
        metrics, samples = run_all(engine, settings, template_ids, inputs, args)
    finally:
        close_engine()
    report["results"] = metrics
    report["samples"] = samples
    report["goal_valid_share"] = GOAL_VALID_SHARE
    path = finish_report(report, args)
    print_table(
        f"templates over {len(inputs)} inputs ({settings.engine.model or 'bundled 135M'})",
        COLUMNS,
        table_rows(metrics),
    )
    print(f"report: {path}")
    return 1 if any(m.failed_requests for m in metrics) else 0


if __name__ == "__main__":
    sys.exit(main())
