"""Split text into pieces of at most N tokens, on paragraph and sentence boundaries.

Pure: the caller passes the tokenizer's counting function, so tests run without a
model. Neighbouring chunks overlap by a few sentences so that a decision stated
across a boundary is seen whole by at least one chunk.

Linear in the text: every unit (sentence, or word of a run-on sentence) is counted
once, chunks are packed by the sum of those counts, and each finished chunk is
counted once more to be sure. Re-counting the growing chunk per unit was quadratic,
and raw speech-to-text output (no punctuation, one 400k-character "sentence") is
exactly the input that made it so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from structsum.errors import PromptTooLong

CountTokens = Callable[[str], int]

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?…])\s+")
_WORDS = re.compile(r"\s+")


def _units(text: str) -> list[str]:
    units: list[str] = []
    for paragraph in _PARAGRAPHS.split(text):
        units.extend(s for s in _SENTENCES.split(paragraph.strip()) if s)
    return units


def _pack(
    units: Sequence[str],
    costs: Sequence[int],
    *,
    max_tokens: int,
    overlap_tokens: int,
    count: CountTokens,
) -> list[str]:
    """Join consecutive units into chunks whose summed cost fits ``max_tokens``.

    A single unit over the limit (one enormous word) still becomes its own chunk:
    there is no boundary left to cut at. A chunk the tokenizer counts higher than
    the sum of its units (merges across a space) gives back units from its end.
    """
    chunks: list[str] = []
    start, total_units = 0, len(units)
    while start < total_units:
        end, total = start, 0
        while end < total_units and (end == start or total + costs[end] <= max_tokens):
            total += costs[end]
            end += 1
        while end - start > 1 and count(" ".join(units[start:end])) > max_tokens:
            end -= 1
        chunks.append(" ".join(units[start:end]))
        if end >= total_units:
            break
        # The next chunk repeats the last units of this one that fit in the overlap,
        # dropping the oldest of them if the overlap and the next unit do not fit.
        back, tail = end, 0
        while back - 1 > start and tail + costs[back - 1] <= overlap_tokens:
            back -= 1
            tail += costs[back]
        while back < end and tail + costs[end] > max_tokens:
            tail -= costs[back]
            back += 1
        start = back
    return chunks


def _split_long(unit: str, limit: int, count: CountTokens) -> list[str]:
    """A unit over the limit (a run-on sentence) is cut at word boundaries."""
    words = [w for w in _WORDS.split(unit) if w]
    costs = [count(w) if i == 0 else count(" " + w) for i, w in enumerate(words)]
    return _pack(words, costs, max_tokens=limit, overlap_tokens=0, count=count)


def split_text(text: str, *, max_tokens: int, overlap_tokens: int, count: CountTokens) -> list[str]:
    """Chunks of at most ``max_tokens`` (by ``count``), each ending on a sentence if it can."""
    if max_tokens < 1:
        raise PromptTooLong(
            f"the prompt leaves {max_tokens} tokens for text in each chunk",
            {"chunk_tokens": max_tokens},
        )
    if count(text) <= max_tokens:
        return [text]
    units: list[str] = []
    costs: list[int] = []
    for unit in _units(text):
        cost = count(unit)
        if cost <= max_tokens:
            units.append(unit)
            costs.append(cost)
            continue
        for piece in _split_long(unit, max_tokens, count):
            units.append(piece)
            costs.append(count(piece))
    return _pack(units, costs, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count=count)
