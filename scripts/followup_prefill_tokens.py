#!/usr/bin/env python3
"""Tokens each conversation turn must prefill, sliding-window trim vs half trim (no engine).

With the real tokenizer and chat template, a fixed answer per turn and vLLM's reuse of
whole cached blocks (128 tokens on the CPU build): what the prefix cache can serve of
each prompt, and so what each turn recomputes. No timing, no engine lock needed:

    python scripts/followup_prefill_tokens.py meeting_long_planning.txt out.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import transformers

from structsum.config import Settings
from structsum.models import Turn
from structsum.processors import ask
from structsum.processors.model_store import bundled_gguf_path, converted_model_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_followup import INPUTS, QUESTIONS  # noqa: E402

BLOCK = 128
ANSWER = (
    "The document names several people, dates and decisions; the answer here is a fixed "
    "text of about thirty-two tokens."
)


def slide(
    turns: Sequence[Turn], *, max_turns: int, max_tokens: int, count: Callable[[str], int]
) -> list[Turn]:
    """The trimming before the fix: the newest max_turns, then oldest out to max_tokens."""
    kept = list(turns[-max_turns:]) if max_turns > 0 else []
    sizes = [count(t.question) + count(t.answer) for t in kept]
    while kept and sum(sizes) > max_tokens:
        kept.pop(0)
        sizes.pop(0)
    return kept


def main() -> None:
    folder = converted_model_dir(Settings().cache_dir, bundled_gguf_path())
    tok: Any = transformers.AutoTokenizer.from_pretrained(str(folder))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    def chat(messages: list[dict[str, str]]) -> list[int]:
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    system = ask.system_prompt((INPUTS / sys.argv[1]).read_text(), None, None)
    limits = Settings().conversation
    report: dict[str, Any] = {"document": sys.argv[1], "block": BLOCK, "answer": ANSWER}
    for name, trim in (("slide (before)", slide), ("half (after)", ask.trim_history)):
        stored: list[Turn] = []
        previous: list[int] = []
        rows = []
        for i, question in enumerate(QUESTIONS):
            kept = trim(
                stored,
                max_turns=limits.max_history_turns,
                max_tokens=limits.max_history_tokens,
                count=count,
            )
            ids = chat(ask.build_messages(system, kept, question))
            common = 0
            for a, b in zip(previous, ids, strict=False):
                if a != b:
                    break
                common += 1
            reused = common // BLOCK * BLOCK
            rows.append(
                {"turn": i + 1, "kept_turns": len(kept), "prompt_tokens": len(ids),
                 "reusable_tokens": reused, "prefill_tokens": len(ids) - reused}
            )  # fmt: skip
            previous = ids + tok.encode(ANSWER, add_special_tokens=False)
            stored = [*kept, Turn(question=question, answer=ANSWER)]
        report[name] = rows
        print(name, " ".join(f"{r['turn']}:{r['prefill_tokens']}" for r in rows))
    Path(sys.argv[2]).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
