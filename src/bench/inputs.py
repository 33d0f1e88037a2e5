"""The texts a benchmark summarizes: read from folders, then picked and ordered.

Where inputs live is the caller's business (a script in a checkout knows its
``tests/data/inputs``; an installed package knows no checkout), so every function
here takes the folders as an argument.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# Used only when no input folder has text: a made-up meeting, long enough to fill
# a prompt when repeated. Real inputs give the real model something to summarize.
BUILTIN_TEXT = """\
Weekly product meeting, notes taken by Dana. Present: Dana (product), Luis (backend),
Mei (design), Arjun (support), Petra (finance).

Luis reported that the export service now handles files up to two gigabytes, but the
nightly job still times out twice a week when the storage cluster is busy. He proposed
moving the job to a queue with retries and a smaller batch size. Petra asked what the
extra workers would cost; Luis estimated about four hundred euros a month.

Mei showed the new onboarding screens. Testers finished the setup twenty percent faster,
but three of eight could not find the language switch. Mei will move it to the first
screen and test again next Thursday.

Arjun said support tickets about failed exports doubled since the last release, and most
customers asked for an email when an export is ready instead of waiting on the page.
Dana agreed this should be in the next release and asked Luis to size the work.

Decisions: the export job moves to the queue; the onboarding test repeats next week;
email notification for exports is planned for release 4.2. Action items: Luis sizes the
notification work by Monday; Mei updates the language switch; Petra approves the worker
budget; Arjun sends Dana the list of affected customers.
"""
BUILTIN_NAME = "builtin"


@dataclass(frozen=True)
class Input:
    """One input text and the name its sample is reported under (the file's stem)."""

    name: str
    text: str


class Order(StrEnum):
    """How picked inputs are ordered: each benchmark wants a different fairness."""

    NAME = "name"  # as the files sort: stable across runs and machines
    SHUFFLED = "shuffled"  # seeded: no arm always gets the short texts
    SHORTEST_FIRST = "shortest-first"  # deterministic and cheap to repeat


def read_inputs(dirs: Sequence[Path], *, builtin: bool = True) -> tuple[list[Input], str]:
    """Non-empty ``.txt`` files of the first folder that has any, sorted by name; and
    where they came from. With none: the built-in text, or an empty list if
    ``builtin`` is off (a caller that must measure real texts refuses then).
    """
    for folder in dirs:
        if folder.is_dir():
            inputs = [
                Input(p.stem, p.read_text(encoding="utf-8", errors="replace"))
                for p in sorted(folder.glob("*.txt"))
            ]
            inputs = [i for i in inputs if i.text.strip()]
            if inputs:
                return inputs, str(folder)
    where = ", ".join(map(str, dirs))
    if not builtin:
        return [], f"no .txt found in {where}"
    return [Input(BUILTIN_NAME, BUILTIN_TEXT)], f"built-in text (no .txt found in {where})"


def load_corpus(dirs: Sequence[Path]) -> tuple[list[str], str]:
    """Texts of the first folder that has any ``.txt``, else the built-in text."""
    inputs, source = read_inputs(dirs)
    return [i.text for i in inputs], source


def pick_inputs(
    inputs: Sequence[Input],
    *,
    max_chars: int | None = None,
    order: Order = Order.NAME,
    seed: int = 0,
    limit: int | None = None,
    count: int | None = None,
) -> list[Input]:
    """The inputs a run uses.

    ``max_chars`` skips longer texts (they are chunked: another workload), keeping
    the first input when none is short enough, so a run never has nothing to do.
    ``limit`` keeps the first N after ordering; ``count`` repeats them cyclically
    to exactly N (one per job).
    """
    picked = list(inputs)
    if max_chars:
        picked = [i for i in picked if len(i.text) <= max_chars] or picked[:1]
    if order is Order.NAME:
        picked.sort(key=lambda i: i.name)
    elif order is Order.SHUFFLED:
        random.Random(seed).shuffle(picked)
    elif order is Order.SHORTEST_FIRST:
        picked.sort(key=lambda i: len(i.text))
    if limit is not None:
        picked = picked[:limit]
    if count is not None and picked:
        picked = [picked[i % len(picked)] for i in range(count)]
    return picked
