import itertools

import pytest

from structsum.errors import PromptTooLong
from structsum.processors.chunking import split_text
from tests.fakes import words


def test_short_text_is_one_chunk() -> None:
    assert split_text("one two three.", max_tokens=10, overlap_tokens=2, count=words) == [
        "one two three."
    ]


def test_chunks_respect_the_limit_and_cover_every_sentence() -> None:
    sentences = [f"Sentence {i} has five words." for i in range(40)]
    text = " ".join(sentences[:20]) + "\n\n" + " ".join(sentences[20:])
    chunks = split_text(text, max_tokens=23, overlap_tokens=6, count=words)
    assert len(chunks) > 1
    assert all(words(c) <= 23 for c in chunks)
    for sentence in sentences:
        assert any(sentence in c for c in chunks)


def test_neighbouring_chunks_overlap() -> None:
    text = " ".join(f"Fact number {i} is here." for i in range(30))
    chunks = split_text(text, max_tokens=20, overlap_tokens=5, count=words)
    for left, right in itertools.pairwise(chunks):
        last_sentence = left.rsplit(". ", 1)[-1]
        assert last_sentence in right


def test_a_run_on_sentence_is_cut_at_words() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = split_text(text, max_tokens=30, overlap_tokens=0, count=words)
    assert all(words(c) <= 30 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_limit_must_be_positive() -> None:
    # typed, with a hint: a huge language hint or variables used to end here as ValueError
    with pytest.raises(PromptTooLong) as info:
        split_text("a b", max_tokens=0, overlap_tokens=0, count=words)
    assert info.value.hint


class CountingWords:
    """``words`` that records how many characters it was asked to count."""

    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, text: str) -> int:
        self.chars += len(text)
        return words(text)


@pytest.mark.parametrize("punctuated", [False, True], ids=["asr-run-on", "sentences"])
def test_chunking_is_linear_in_the_text(punctuated: bool) -> None:
    """Raw speech-to-text has no punctuation: one 400k-character sentence."""
    mark = "." if punctuated else ""
    text = " ".join(f"word{i}{mark if i % 12 == 11 else ''}" for i in range(60_000))
    count = CountingWords()
    chunks = split_text(text, max_tokens=700, overlap_tokens=64, count=count)
    assert all(words(c) <= 700 for c in chunks)
    assert " ".join(chunks).split()[:50] == text.split()[:50]
    # a few passes over the text, not one per word (the old cost: ~700x the text)
    assert count.chars <= 8 * len(text)


def test_every_word_survives_a_run_on_text_in_order() -> None:
    text = " ".join(f"w{i}" for i in range(5_000))
    chunks = split_text(text, max_tokens=97, overlap_tokens=0, count=words)
    assert " ".join(chunks).split() == text.split()
    assert all(words(c) <= 97 for c in chunks)


def test_a_chunk_the_tokenizer_counts_higher_gives_units_back() -> None:
    # a tokenizer that merges nothing when counting words alone but charges one
    # extra token per join: the packed sum underestimates, the check catches it
    def count(text: str) -> int:
        return words(text) + text.count(" ")

    text = " ".join(f"w{i}" for i in range(300))
    chunks = split_text(text, max_tokens=40, overlap_tokens=0, count=count)
    assert all(count(c) <= 40 for c in chunks)
    assert " ".join(chunks).split() == text.split()
