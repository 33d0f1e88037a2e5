"""Split text into pieces of at most N tokens, on paragraph and sentence boundaries.

Pure: the caller passes the tokenizer's counting function, so tests run without a
model. Neighbouring chunks overlap by a few sentences so that a decision stated
across a boundary is seen whole by at least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable

CountTokens = Callable[[str], int]

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?…])\s+")
_WORDS = re.compile(r"\s+")


def _units(text: str) -> list[str]:
    units: list[str] = []
    for paragraph in _PARAGRAPHS.split(text):
        units.extend(s for s in _SENTENCES.split(paragraph.strip()) if s)
    return units


def _split_long(unit: str, limit: int, count: CountTokens) -> list[str]:
    """A unit over the limit (a run-on sentence) is cut at word boundaries."""
    pieces: list[str] = []
    current: list[str] = []
    for word in _WORDS.split(unit):
        if current and count(" ".join([*current, word])) > limit:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_text(text: str, *, max_tokens: int, overlap_tokens: int, count: CountTokens) -> list[str]:
    """Chunks of at most ``max_tokens`` (by ``count``), each ending on a sentence if it can."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    if count(text) <= max_tokens:
        return [text]
    units: list[str] = []
    for unit in _units(text):
        units.extend(_split_long(unit, max_tokens, count) if count(unit) > max_tokens else [unit])

    chunks: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and count(" ".join([*current, unit])) > max_tokens:
            chunks.append(" ".join(current))
            current = _tail(current, overlap_tokens, count)
            while current and count(" ".join([*current, unit])) > max_tokens:
                current.pop(0)
        current.append(unit)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _tail(units: list[str], overlap_tokens: int, count: CountTokens) -> list[str]:
    tail: list[str] = []
    for unit in reversed(units):
        if count(" ".join([unit, *tail])) > overlap_tokens:
            break
        tail.insert(0, unit)
    return tail
