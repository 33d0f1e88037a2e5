"""How much of a summary comes from its source: the grounding score (issue 15).

A schema-valid summary can still be invented: on meeting transcripts the bundled
model wrote titles and tags that occur nowhere in the text. The score makes that
visible on every result, in the worker metrics and in the template benchmark:

* ``score``: the share of the summary's *content words* (letters only, longer than
  ``min_word_chars - 1``, not stopwords, case-folded) that occur as words of the
  source. Strings that are enum or const values of the schema (a sentiment, a
  category) are the template's words, not the model's, and are left out.
* ``verbatim``: the share of verbatim fields (processors/verbatim.py) whose value is
  a substring of the source after whitespace normalisation; None when the template
  has none.

Exact word matches only (no stemming): "meetings" for "meeting" counts as not
found, which under-counts a little and never over-counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from structsum.models import Grounding
from structsum.processors.schema_walk import walk

# Runs of letters in any script; digits, underscores and punctuation split words.
_WORD = re.compile(r"[^\W\d_]+")

# Common English function words: they occur in every source, so counting them would
# lift the score of any summary.
_STOPWORD_TEXT = """
    about above after again against also although among another anyone anything
    around because been before being below between both cannot could does doing done
    down during each either else even ever every from further have having hence here
    hers herself himself however into itself just least less many maybe more most
    much must myself neither never none nothing only onto other others ought ours
    ourselves over same several shall should since some something such than that
    their theirs them themselves then there therefore these they this those though
    through thus till under unless until upon very want were what whatever when
    whenever where whereas whether which while whom whose will with within without
    would your yours yourself yourselves okay yeah well like really still need needs
    going make made take took gets said says
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str, *, min_chars: int) -> list[str]:
    """The text's content words, case-folded, in order, repeats kept."""
    words = (match.group().casefold() for match in _WORD.finditer(text))
    return [w for w in words if len(w) >= min_chars and w not in STOPWORDS]


def enum_strings(schema: dict[str, Any]) -> frozenset[str]:
    """Every string an ``enum`` or ``const`` of the schema allows (not the model's words)."""
    found: set[str] = set()
    for _, node in walk(schema):
        values = list(node.get("enum", []))
        if "const" in node:
            values.append(node["const"])
        found.update(v for v in values if isinstance(v, str))
    return frozenset(found)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def word_share(
    data: Any, source: str, *, min_chars: int, skip: frozenset[str] = frozenset()
) -> tuple[float | None, int]:
    """(share of content words of ``data``'s strings found in ``source``, words counted)."""
    known = set(content_words(source, min_chars=min_chars))
    words = [
        word
        for string in _strings(data)
        if string not in skip
        for word in content_words(string, min_chars=min_chars)
    ]
    if not words:
        return None, 0
    return sum(word in known for word in words) / len(words), len(words)


def grounding(
    data: Any,
    source: str,
    *,
    schema: dict[str, Any],
    min_chars: int,
    verbatim_checked: int = 0,
    verbatim_failed: int = 0,
) -> Grounding:
    """The grounding of ``data`` in ``source``; the verbatim counts come from the check."""
    score, counted = word_share(data, source, min_chars=min_chars, skip=enum_strings(schema))
    share = (verbatim_checked - verbatim_failed) / verbatim_checked if verbatim_checked else None
    return Grounding(
        score=score,
        content_words=counted,
        verbatim=share,
        verbatim_fields=verbatim_checked,
        verbatim_copied=verbatim_checked - verbatim_failed,
    )
