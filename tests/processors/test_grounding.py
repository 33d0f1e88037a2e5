"""The grounding score: which words count, and what share of them the source holds."""

from __future__ import annotations

import pytest

from structsum.processors.grounding import content_words, enum_strings, grounding, word_share

SOURCE = "Anna: the checkout redesign ships on Friday. Ravi fixes the rotation bug."


def test_content_words_are_letters_only_longer_than_three_and_not_stopwords() -> None:
    words = content_words("The Café's 240 tickets, e-mail: über-fast WOULD run 2x", min_chars=4)
    # "The"/"run"/"x" too short, "would" a stopword, digits split words and never count.
    assert words == ["café", "tickets", "mail", "über", "fast"]


def test_share_counts_repeats_and_ignores_case() -> None:
    data = {"title": "Checkout REDESIGN", "points": ["Checkout ships Friday", "Invented banner"]}
    share, counted = word_share(data, SOURCE, min_chars=4)
    # checkout x2, redesign, ships, friday found; invented, banner not.
    assert counted == 7
    assert share == pytest.approx(5 / 7)


def test_a_summary_without_content_words_has_no_score() -> None:
    assert word_share({"date": "2025-03-04", "n": 3}, SOURCE, min_chars=4) == (None, 0)


def test_enum_values_are_the_templates_words_not_the_models() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mood": {"enum": ["positive", "negative"]},
            "kind": {"const": "meeting"},
            "topic": {"type": "string"},
        },
    }
    assert enum_strings(schema) == {"positive", "negative", "meeting"}
    result = grounding(
        {"mood": "positive", "kind": "meeting", "topic": "rotation bug"},
        SOURCE,
        schema=schema,
        min_chars=4,
    )
    assert result.score == 1.0 and result.content_words == 1


def test_verbatim_share_comes_from_the_check_counts() -> None:
    result = grounding(
        {"q": "x"}, SOURCE, schema={}, min_chars=4, verbatim_checked=4, verbatim_failed=1
    )
    assert (result.verbatim, result.verbatim_fields, result.verbatim_copied) == (0.75, 4, 3)
    assert grounding({"q": "x"}, SOURCE, schema={}, min_chars=4).verbatim is None
