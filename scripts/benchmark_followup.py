#!/usr/bin/env python3
"""Follow-up benchmarks (issue 13): conversation turns, n-gram speculation, long inputs.

In-process, on this process's engine (one arm = one engine: the settings compared
are engine-level), so take the engine lock:

    # per-turn latency, turns 1-10: prefix caching + trimming on vs off
    flock /tmp/structsum-engine.lock python scripts/benchmark_followup.py turns

    # enhancement and summary tok/s, n-gram (prompt-lookup) speculation on vs off
    flock /tmp/structsum-engine.lock python scripts/benchmark_followup.py speculation

    # 5k-30k token inputs: map/reduce condensing vs plain truncation
    flock /tmp/structsum-engine.lock python scripts/benchmark_followup.py long

Each prints a table and writes a JSON report (machine, versions, settings, every
sample, vLLM's prefix-cache and speculation counters per arm) under results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structsum.bench.flags import (
    add_output_flags,
    checkout_defaults,
    finish_report,
    new_parser,
    parse_args,
    setup_logging,
    start_report,
)
from structsum.bench.report import fmt, print_table
from structsum.config import ConversationSettings, Settings, get_settings

DEFAULTS = checkout_defaults(Path(__file__).resolve().parents[1])
INPUTS = DEFAULTS.root / "tests" / "data" / "inputs"
TEMPLATE = "generic_summary_v1"

log = logging.getLogger("benchmark_followup")

QUESTIONS = [
    "What is this document about, in one sentence?",
    "Who are the people named in it?",
    "Which dates are mentioned?",
    "What was decided?",
    "What are the open questions?",
    "Which numbers appear, and what do they count?",
    "Who owns the next steps?",
    "What risks are mentioned?",
    "What happens first?",
    "Summarize the answers so far in one sentence.",
]
# The end of every long input: facts the summary can only have if the end was read.
TAIL = (
    "\n\nFinal update from the steering group. The vendor Zentrix will deliver 48 servers "
    "on 14 March. Priya Raman owns the data-centre migration. The budget cap is 730,000 "
    "euros. Go-live is set for 2 June."
)
TAIL_FACTS = ("Zentrix", "48", "14 March", "Priya", "730", "2 June")

Arm = dict[str, Any]


class DictStore:
    """The conversation store in a dict (no Redis in a benchmark of the engine)."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def load(self, conversation_id: str) -> str | None:
        return self.items.get(conversation_id)

    def save(self, conversation_id: str, value: str, ttl_s: int) -> None:
        self.items[conversation_id] = value


def with_engine(settings: Settings, run: Callable[[Any], Arm]) -> Arm:
    """Load an engine for these settings, run one arm on it, close it (next arm, next engine)."""
    from structsum.processors.engine import close_engine, load_engine

    started = time.perf_counter()
    try:
        engine = load_engine(settings.engine, settings.cache_dir)
    except Exception as exc:  # an engine vLLM refuses is a result to report, not a crash
        log.error("engine refused: %s: %s", type(exc).__name__, exc)
        close_engine()
        return {"error": f"{type(exc).__name__}: {exc}"}
    log.info("engine up in %.1f s", time.perf_counter() - started)
    try:
        before = engine.counters()
        try:
            arm = run(engine)
        except Exception as exc:  # e.g. vLLM refusing a request under these engine settings
            log.exception("arm failed")
            arm = {"error": f"{type(exc).__name__}: {exc}"}
        arm["engine"] = engine.counters().delta(before).as_dict()
        arm["model"] = engine.model_name
        return arm
    finally:
        close_engine()


def engine_settings(base: Settings, **changes: Any) -> Settings:
    return base.model_copy(update={"engine": base.engine.model_copy(update=changes)})


# --- turns -------------------------------------------------------------------------------


def run_turns(settings: Settings, document: str, max_tokens: int) -> Callable[[Any], Arm]:
    from structsum.models import AskRequest
    from structsum.processors.ask import ask

    def run(engine: Any) -> Arm:
        store = DictStore()
        turns = []
        for i, question in enumerate(QUESTIONS):
            request = AskRequest(
                conversation_id="bench",
                question=question,
                text=document if i == 0 else None,
                max_tokens=max_tokens,
            )
            result = ask(
                request,
                document=request.text,
                engine=engine,
                settings=settings,
                store=store,
            )
            turns.append(
                {
                    "turn": result.turn,
                    "elapsed_s": result.elapsed_s,
                    "ttft_s": result.ttft_s,
                    "prompt_tokens": result.usage.prompt_tokens,
                    "completion_tokens": result.usage.completion_tokens,
                    "history_turns": result.history_turns,
                }
            )
            log.info("turn %d: %.2f s, %d prompt tokens", i + 1, result.elapsed_s,
                     result.usage.prompt_tokens)  # fmt: skip
        return {"turns": turns}

    return run


def bench_turns(args: argparse.Namespace, base: Settings) -> tuple[list[Arm], list[list[str]]]:
    document = (INPUTS / args.document).read_text()
    unbounded = ConversationSettings(max_history_turns=1_000, max_history_tokens=1_000_000)
    arms = {
        "on": base,  # prefix caching on (the default), history trimmed by the defaults
        "off": engine_settings(base, enable_prefix_caching=False).model_copy(
            update={"conversation": unbounded}
        ),
    }
    results: list[Arm] = []
    for name, settings in arms.items():
        log.info("arm %s", name)
        arm = with_engine(settings, run_turns(settings, document, args.max_tokens))
        arm.update(
            arm=name,
            enable_prefix_caching=settings.engine.enable_prefix_caching,
            conversation=settings.conversation.model_dump(),
        )
        results.append(arm)
    rows = []
    for arm in results:
        for turn in arm.get("turns", []):
            rows.append(
                [arm["arm"], str(turn["turn"]), str(turn["prompt_tokens"]),
                 str(turn["history_turns"]), fmt(turn["ttft_s"], 3), fmt(turn["elapsed_s"], 2)]
            )  # fmt: skip
    return results, rows


TURN_COLUMNS = ["arm", "turn", "prompt tok", "kept turns", "ttft s", "latency s"]


# --- speculation ---------------------------------------------------------------------------


def run_jobs(settings: Settings, texts: list[str]) -> Callable[[Any], Arm]:
    from structsum.models import EnhancementRequest, SummaryRequest
    from structsum.processors.enhancement import enhance
    from structsum.processors.summary import summarize

    def run(engine: Any) -> Arm:
        jobs: dict[str, list[dict[str, Any]]] = {"enhancement": [], "summary": []}
        for text in texts:
            done = enhance(EnhancementRequest(text=text), engine=engine, settings=settings)
            jobs["enhancement"].append(
                {"elapsed_s": done.elapsed_s, "completion_tokens": done.usage.completion_tokens}
            )
            summary = summarize(
                SummaryRequest(text=text, template_id=TEMPLATE), engine=engine, settings=settings
            )
            jobs["summary"].append(
                {
                    "elapsed_s": summary.elapsed_s,
                    "completion_tokens": summary.usage.completion_tokens,
                    "valid": summary.valid,
                }
            )
        return {"jobs": jobs}

    return run


def bench_speculation(
    args: argparse.Namespace, base: Settings
) -> tuple[list[Arm], list[list[str]]]:
    paths = sorted(INPUTS.glob("*.txt"), key=lambda p: len(p.read_text()))
    texts = [p.read_text() for p in paths[args.skip : args.skip + args.jobs]]
    ngram = {
        "method": "ngram",
        "num_speculative_tokens": args.draft_tokens,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
    }
    arms = {"off": base, "ngram": engine_settings(base, speculative_config=ngram)}
    results: list[Arm] = []
    for name, settings in arms.items():
        log.info("arm %s", name)
        arm = with_engine(settings, run_jobs(settings, texts))
        arm.update(arm=name, speculative_config=settings.engine.speculative_config)
        results.append(arm)
    rows = []
    for arm in results:
        if "error" in arm:
            rows.append([arm["arm"], "-", "-", "-", "-", arm["error"][:60]])
            continue
        for task, jobs in arm["jobs"].items():
            tokens = sum(j["completion_tokens"] for j in jobs)
            seconds = sum(j["elapsed_s"] for j in jobs)
            valid = [j["valid"] for j in jobs if "valid" in j]
            rows.append(
                [arm["arm"], task, str(len(jobs)), str(tokens), fmt(tokens / seconds, 1),
                 f"{sum(valid)}/{len(valid)}" if valid else "-"]
            )  # fmt: skip
        accepted = arm["engine"].get("spec_acceptance_rate")
        if accepted is not None:
            rows.append([arm["arm"], "draft acceptance", "", "", fmt(accepted, 2), ""])
    return results, rows


SPEC_COLUMNS = ["arm", "task", "jobs", "tokens out", "tok/s", "valid"]


# --- long inputs -----------------------------------------------------------------------------


def long_inputs(engine: Any, sizes: list[int]) -> list[tuple[int, str]]:
    """Texts of about ``size`` tokens each: the corpus repeated, then the TAIL facts."""
    corpus = "\n\n".join(p.read_text() for p in sorted(INPUTS.glob("*.txt")))
    per_copy = engine.count_tokens(corpus)
    texts = []
    for size in sizes:
        copies = max(1, -(-size // per_copy))
        body = "\n\n".join([corpus] * copies)
        cut = int(len(body) * size / (per_copy * copies))
        text = body[:cut] + TAIL
        texts.append((engine.count_tokens(text), text))
    return texts


def facts_reached(data: Any) -> int:
    text = json.dumps(data or {}, ensure_ascii=False).lower()
    return sum(fact.lower() in text for fact in TAIL_FACTS)


def run_long(settings: Settings, sizes: list[int]) -> Callable[[Any], Arm]:
    from structsum.models import SummaryRequest
    from structsum.processors.chunking import split_text
    from structsum.processors.summary import _text_allowance, summarize
    from structsum.processors.templates import load_template

    template = load_template(settings.template_dirs, TEMPLATE)

    def run(engine: Any) -> Arm:
        samples = []
        for tokens, text in long_inputs(engine, sizes):
            request = SummaryRequest(text=text, template_id=TEMPLATE)
            allowance = _text_allowance(template, request, engine=engine, settings=settings)
            head = split_text(text, max_tokens=allowance, overlap_tokens=0,
                              count=engine.count_tokens)[0]  # fmt: skip
            for mode, body in (("truncate", head), ("map/reduce", text)):
                started = time.perf_counter()
                result = summarize(
                    request.model_copy(update={"text": body}), engine=engine, settings=settings
                )
                samples.append(
                    {
                        "input_tokens": tokens,
                        "mode": mode,
                        "elapsed_s": time.perf_counter() - started,
                        "valid": result.valid,
                        "chunks": result.chunks,
                        "tail_facts": facts_reached(result.data),
                        "completion_tokens": result.usage.completion_tokens,
                    }
                )
                log.info("%d tokens, %s: %s", tokens, mode, samples[-1])
        return {"samples": samples}

    return run


def bench_long(args: argparse.Namespace, base: Settings) -> tuple[list[Arm], list[list[str]]]:
    arm = with_engine(base, run_long(base, args.sizes))
    rows = [
        [str(s["input_tokens"]), s["mode"], str(s["chunks"]), fmt(s["elapsed_s"], 1),
         "yes" if s["valid"] else "no", f"{s['tail_facts']}/{len(TAIL_FACTS)}"]
        for s in arm.get("samples", [])
    ]  # fmt: skip
    return [arm], rows


LONG_COLUMNS = ["input tok", "mode", "chunks", "seconds", "valid", "end facts"]


# --- main ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    turns = sub.add_parser("turns", help="per-turn latency, prefix caching + trimming on/off")
    turns.add_argument("--document", default="meeting_long_planning.txt", help="in tests/data")
    turns.add_argument("--max-tokens", type=int, default=32, help="answer cap per turn")
    spec = sub.add_parser("speculation", help="tok/s with n-gram speculation on/off")
    spec.add_argument("--jobs", type=int, default=3, help="inputs, each enhanced and summarized")
    spec.add_argument("--skip", type=int, default=8, help="skip this many shortest inputs")
    spec.add_argument("--draft-tokens", type=int, default=4, help="num_speculative_tokens")
    long = sub.add_parser("long", help="map/reduce vs truncation on long inputs")
    long.add_argument("--sizes", type=int, nargs="+", default=[5_000, 15_000, 30_000])
    for each in (turns, spec, long):
        add_output_flags(each, DEFAULTS)
    return parser


BENCHES = {
    "turns": (bench_turns, TURN_COLUMNS),
    "speculation": (bench_speculation, SPEC_COLUMNS),
    "long": (bench_long, LONG_COLUMNS),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    setup_logging()
    base = get_settings()
    bench, columns = BENCHES[args.bench]
    results, rows = bench(args, base)
    model = next((a["model"] for a in results if "model" in a), None)
    report = start_report(f"followup-{args.bench}", args, model=model, defaults=DEFAULTS)
    report["settings"] = {"structsum": base.model_dump(mode="json")}
    report["results"] = results
    path = finish_report(report, args)
    print_table(f"followup {args.bench}: {Path(model or '?').name}", columns, rows)
    print(f"report: {path}")
    return 1 if any("error" in a for a in results) and args.bench != "speculation" else 0


if __name__ == "__main__":
    sys.exit(main())
