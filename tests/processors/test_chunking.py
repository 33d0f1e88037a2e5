import itertools

import pytest

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
    with pytest.raises(ValueError):
        split_text("a b", max_tokens=0, overlap_tokens=0, count=words)
