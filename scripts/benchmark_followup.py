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
import dataclasses
import json
import logging
import re
import sys
import tempfile
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
    # Past turn 10 (--turns 12): the kept history is full, turns start to drop out.
    "Which part of the document is the longest?",
    "What would you ask the authors next?",
]
# The end of every long input: facts the summary can only have if the end was read.
# Each fact is absent from tests/data/inputs (whole words), so the summary has it only
# from the tail: no "48" (support ticket #48211) or "Priya" (a candidate interview).
TAIL = (
    "\n\nFinal update from the steering group. The vendor Zentrix will deliver 57 servers "
    "on 14 March. Marisol Quillon owns the data-centre migration. The budget cap is 730,000 "
    "euros. Go-live is set for 2 June."
)
TAIL_FACTS = ("Zentrix", "57", "14 March", "Quillon", "730", "2 June")

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


class ExactLength:
    """The engine, each answer run to exactly its max_tokens (EOS ignored).

    With natural answers the per-turn latency follows each answer's length; at equal
    length it shows what the turn's prompt costs, which is what caching and trimming
    change. The answers are free text (no guide), so ignoring EOS is safe.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.model_name = engine.model_name

    def generate(self, requests: Any, *, deadline: float | None = None) -> Any:
        exact = [dataclasses.replace(r, exact_length=True) for r in requests]
        return self._engine.generate(exact, deadline=deadline)

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return list(self._engine.tokenize_chat(messages))

    def count_tokens(self, text: str) -> int:
        return int(self._engine.count_tokens(text))


def counters_now(engine: Any) -> Any:
    """The engine's counters once the last step's stats are in (vLLM records them just
    after it hands the output over)."""
    time.sleep(0.2)
    return engine.counters()


def run_conversation(
    engine: Any,
    settings: Settings,
    document: str,
    *,
    name: str,
    turns: int,
    max_tokens: int,
    empty_cache: bool = False,
) -> list[dict[str, Any]]:
    """One conversation; ``empty_cache``: vLLM's prefix cache is emptied before each turn
    (untimed), so every turn recomputes its whole prompt, as with prefix caching off."""
    from structsum.models import AskRequest
    from structsum.processors.ask import ask

    asker = ExactLength(engine) if name == "exact" else engine
    store = DictStore()
    rows = []
    before = counters_now(engine)
    for i, question in enumerate(QUESTIONS[:turns]):
        if empty_cache:
            engine.reset_prefix_cache()
            before = counters_now(engine)
        request = AskRequest(
            conversation_id=f"bench-{name}",
            question=question,
            text=document if i == 0 else None,
            max_tokens=max_tokens,
        )
        result = ask(request, document=request.text, engine=asker, settings=settings, store=store)
        after = counters_now(engine)
        cache = after.delta(before)
        before = after
        rows.append(
            {
                "answers": name,
                "turn": result.turn,
                "elapsed_s": result.elapsed_s,
                "ttft_s": result.ttft_s,
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "history_turns": result.history_turns,
                "prefix_hits": cache.prefix_hits,
                "prefix_queries": cache.prefix_queries,
                "answer": result.answer,
            }
        )
        log.info(
            "%s turn %d: %.2f s, %d prompt tokens, %d from the prefix cache",
            *(name, i + 1, result.elapsed_s, result.usage.prompt_tokens, cache.prefix_hits),
        )
    return rows


def run_turns(
    settings: Settings,
    document: str,
    args: argparse.Namespace,
    *,
    empty_cache: bool = False,
    turns: int | None = None,
) -> Callable[[Any], Arm]:
    count = turns or args.turns

    def run(engine: Any) -> Arm:
        rows: list[dict[str, Any]] = []
        for name in args.answers:
            engine.reset_prefix_cache()  # each conversation starts cold, as a new one does
            rows += run_conversation(
                engine, settings, document, name=name, turns=count,
                max_tokens=args.max_tokens, empty_cache=empty_cache,
            )  # fmt: skip
        return {"turns": rows}

    return run


def turn_ratio(turns: list[dict[str, Any]], answers: str, last: int = 10) -> float | None:
    """Latency of turn ``last`` over turn 2 (the acceptance: at most 1.5 with both on)."""
    by_turn = {t["turn"]: t["elapsed_s"] for t in turns if t["answers"] == answers}
    if 2 not in by_turn or last not in by_turn:
        return None
    return float(by_turn[last] / by_turn[2])


def bench_turns(args: argparse.Namespace, base: Settings) -> tuple[list[Arm], list[list[str]]]:
    """Arm "on": prefix caching on, history trimmed by the settings. Arm "off": the history
    unbounded and no prefix reuse: by default on the same engine with its prefix cache
    emptied before every turn (one engine start less, the same recomputation), with
    ``--off-engine`` on a second engine started with enable_prefix_caching=false."""
    document = (INPUTS / args.document).read_text()
    unbounded = ConversationSettings(max_history_turns=1_000, max_history_tokens=1_000_000)
    off = base.model_copy(update={"conversation": unbounded})

    def describe(arm: Arm, name: str, settings: Settings, emptied: bool) -> Arm:
        arm.update(
            arm=name,
            enable_prefix_caching=settings.engine.enable_prefix_caching and not emptied,
            prefix_cache_emptied_each_turn=emptied,
            conversation=settings.conversation.model_dump(),
        )
        if "turns" in arm:
            arm["turn10_over_turn2"] = {a: turn_ratio(arm["turns"], a) for a in args.answers}
        return arm

    results: list[Arm] = []
    if args.off_engine:
        off = engine_settings(off, enable_prefix_caching=False)
        for name, settings in (("on", base), ("off", off)):
            log.info("arm %s", name)
            count = args.turns if name == "on" else min(args.turns, args.off_turns)
            arm = with_engine(settings, run_turns(settings, document, args, turns=count))
            results.append(describe(arm, name, settings, emptied=False))
            args.save(results)
    else:

        def both(engine: Any) -> Arm:
            for name, settings, emptied in (("on", base, False), ("off", off, True)):
                log.info("arm %s", name)
                before = counters_now(engine)
                count = args.turns if name == "on" else min(args.turns, args.off_turns)
                arm = run_turns(settings, document, args, empty_cache=emptied, turns=count)(engine)
                arm["engine"] = counters_now(engine).delta(before).as_dict()
                arm["model"] = engine.model_name
                results.append(describe(arm, name, settings, emptied))
                args.save(results)
            return {}

        shared = with_engine(base, both)
        if "error" in shared:
            results.append(shared)
    rows = []
    for arm in results:
        for turn in arm.get("turns", []):
            rows.append(
                [arm["arm"], turn["answers"], str(turn["turn"]), str(turn["prompt_tokens"]),
                 str(turn["prefix_hits"]), str(turn["history_turns"]),
                 str(turn["completion_tokens"]), fmt(turn["ttft_s"], 3),
                 fmt(turn["elapsed_s"], 2)]
            )  # fmt: skip
        for answers, ratio in arm.get("turn10_over_turn2", {}).items():
            rows.append([arm["arm"], answers, "10/2", "", "", "", "", "", fmt(ratio, 2)])
    return results, rows


TURN_COLUMNS = [
    "arm", "answers", "turn", "prompt tok", "cached tok", "kept turns", "answer tok", "ttft s",
    "latency s",
]  # fmt: skip


# --- speculation ---------------------------------------------------------------------------


def run_jobs(
    settings: Settings, texts: list[str], unguided_dir: Path | None
) -> Callable[[Any], Arm]:
    """Per text: an enhancement (free text), a guided summary (the template's policy) and
    an unguided one (the same template, decoding unconstrained, validated after; not
    with ``unguided_dir`` None: on a CPU the bundled model's unguided attempts run to
    max_tokens, minutes each)."""
    from structsum.models import EnhancementRequest, SummaryRequest
    from structsum.processors.enhancement import enhance
    from structsum.processors.summary import summarize

    summaries = {"summary guided": settings}
    if unguided_dir is not None:
        summaries["summary unguided"] = settings.model_copy(update={"templates_dir": unguided_dir})

    def run(engine: Any) -> Arm:
        jobs: dict[str, list[dict[str, Any]]] = {"enhancement": []}
        jobs.update({task: [] for task in summaries})
        for text in texts:
            done = enhance(EnhancementRequest(text=text), engine=engine, settings=settings)
            jobs["enhancement"].append(
                {"elapsed_s": done.elapsed_s, "completion_tokens": done.usage.completion_tokens}
            )
            for task, task_settings in summaries.items():
                summary = summarize(
                    SummaryRequest(text=text, template_id=TEMPLATE, use_cache=False),
                    engine=engine,
                    settings=task_settings,
                )
                jobs[task].append(
                    {
                        "elapsed_s": summary.elapsed_s,
                        "completion_tokens": summary.usage.completion_tokens,
                        "valid": summary.valid,
                        "attempts": len(summary.attempts),
                        "title": (summary.data or {}).get("title"),
                    }
                )
                log.info("%s: %s", task, jobs[task][-1])
        return {"jobs": jobs}

    return run


def bench_speculation(
    args: argparse.Namespace, base: Settings
) -> tuple[list[Arm], list[list[str]]]:
    from structsum.bench.policy_variants import variant_templates_dir

    paths = sorted(INPUTS.glob("*.txt"), key=lambda p: len(p.read_text()))
    texts = [p.read_text() for p in paths[args.skip : args.skip + args.jobs]]
    arms = {
        "off": engine_settings(base, ngram_draft_tokens=0, speculative_config=None),
        "ngram": engine_settings(
            base, ngram_draft_tokens=args.draft_tokens, ngram_lookup_min=2, ngram_lookup_max=4,
            speculative_config=None,
        ),
    }  # fmt: skip
    results: list[Arm] = []
    with tempfile.TemporaryDirectory(prefix="structsum-bench-") as tmp:
        unguided_dir = variant_templates_dir(
            Path(tmp), base.templates_dir, TEMPLATE, "unguided", profile=base.profile
        )
        for name, settings in arms.items():
            log.info("arm %s", name)
            arm = with_engine(
                settings, run_jobs(settings, texts, None if args.no_unguided else unguided_dir)
            )
            arm.update(arm=name, ngram_draft_tokens=settings.engine.ngram_draft_tokens)
            results.append(arm)
            args.save(results)
    rows = []
    for arm in results:
        if "error" in arm:
            rows.append([arm["arm"], "-", "-", "-", "-", "-", arm["error"][:60]])
            continue
        for task, jobs in arm["jobs"].items():
            tokens = sum(j["completion_tokens"] for j in jobs)
            seconds = sum(j["elapsed_s"] for j in jobs)
            valid = [j["valid"] for j in jobs if "valid" in j]
            rows.append(
                [arm["arm"], task, str(len(jobs)), str(tokens), fmt(seconds, 1),
                 fmt(tokens / seconds, 1), f"{sum(valid)}/{len(valid)}" if valid else "-"]
            )  # fmt: skip
        accepted = arm["engine"].get("spec_acceptance_rate")
        if accepted is not None:
            rows.append([arm["arm"], "draft acceptance", "", "", "", fmt(accepted, 2), ""])
    return results, rows


SPEC_COLUMNS = ["arm", "task", "jobs", "tokens out", "seconds", "tok/s", "valid"]


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
    """TAIL facts in the summary, as whole words ("57" does not count inside "1957")."""
    text = json.dumps(data or {}, ensure_ascii=False)
    return sum(
        re.search(rf"(?<!\w){re.escape(fact)}(?!\w)", text, re.IGNORECASE) is not None
        for fact in TAIL_FACTS
    )


def run_long(
    settings: Settings, sizes: list[int], save: Callable[[list[Arm]], Any]
) -> Callable[[Any], Arm]:
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
                        "data": result.data,  # to read which facts a summary kept
                    }
                )
                log.info("%d tokens, %s: %s", tokens, mode, samples[-1])
                save([{"samples": samples, "model": engine.model_name}])
        return {"samples": samples}

    return run


def bench_long(args: argparse.Namespace, base: Settings) -> tuple[list[Arm], list[list[str]]]:
    arm = with_engine(base, run_long(base, args.sizes, args.save))
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
    turns.add_argument(
        "--turns",
        type=int,
        default=10,
        choices=range(2, len(QUESTIONS) + 1),
        metavar="N",
        help=f"questions per conversation (2-{len(QUESTIONS)})",
    )
    turns.add_argument(
        "--answers", nargs="+", choices=["exact", "natural"], default=["exact", "natural"],
        help="one conversation per entry: exact = every answer max-tokens long (EOS "
        "ignored, so turns differ only by their prompt); natural = answers end on EOS",
    )  # fmt: skip
    turns.add_argument(
        "--off-turns", type=int, default=10, help="at most this many turns in arm off"
    )
    turns.add_argument(
        "--off-engine", action="store_true",
        help="arm off on its own engine with enable_prefix_caching=false (default: the same "
        "engine, its prefix cache emptied before every turn)",
    )  # fmt: skip
    spec = sub.add_parser("speculation", help="tok/s with n-gram speculation on/off")
    spec.add_argument("--jobs", type=int, default=3, help="inputs, each enhanced and summarized")
    spec.add_argument("--skip", type=int, default=8, help="skip this many shortest inputs")
    spec.add_argument("--draft-tokens", type=int, default=4, help="num_speculative_tokens")
    spec.add_argument("--no-unguided", action="store_true", help="leave out the unguided summaries")
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

    def save(results: list[Arm], *, partial: bool = True) -> Path:
        """The report so far: a run cut short (the engine lock's time) keeps its arms."""
        model = next((a["model"] for a in results if "model" in a), None)
        shown = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "save"})
        report = start_report(f"followup-{args.bench}", shown, model=model, defaults=DEFAULTS)
        report["settings"] = {"structsum": base.model_dump(mode="json")}
        report["partial"] = partial
        report["results"] = results
        return finish_report(report, args)

    args.save = save
    results, rows = bench(args, base)
    path = save(results, partial=False)
    model = next((a["model"] for a in results if "model" in a), None)
    print_table(f"followup {args.bench}: {Path(model or '?').name}", columns, rows)
    print(f"report: {path}")
    return 1 if any("error" in a for a in results) and args.bench != "speculation" else 0


if __name__ == "__main__":
    sys.exit(main())
