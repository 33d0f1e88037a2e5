"""Which inputs a benchmark uses, in which order: the same on every machine."""

from __future__ import annotations

from pathlib import Path

from structsum.bench.inputs import BUILTIN_TEXT, Input, Order, pick_inputs, read_inputs

INPUTS = [Input("a", "x" * 30), Input("b", "x" * 10), Input("c", "x" * 20)]


def test_inputs_come_from_the_first_folder_with_text(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (empty / "blank.txt").write_text("  \n", encoding="utf-8")
    (full / "b.txt").write_text("second", encoding="utf-8")
    (full / "a.txt").write_text("first", encoding="utf-8")
    inputs, source = read_inputs([tmp_path / "missing", empty, full])
    assert inputs == [Input("a", "first"), Input("b", "second")]
    assert source == str(full)


def test_no_text_gives_the_built_in_one_unless_refused(tmp_path: Path) -> None:
    inputs, source = read_inputs([tmp_path])
    assert inputs == [Input("builtin", BUILTIN_TEXT)] and "built-in" in source
    inputs, source = read_inputs([tmp_path], builtin=False)
    assert inputs == [] and str(tmp_path) in source


def test_orders() -> None:
    assert [i.name for i in pick_inputs(INPUTS[::-1])] == ["a", "b", "c"]
    assert [i.name for i in pick_inputs(INPUTS)] == ["a", "b", "c"]
    assert [i.name for i in pick_inputs(INPUTS, order=Order.SHORTEST_FIRST)] == ["b", "c", "a"]
    first = pick_inputs(INPUTS, order=Order.SHUFFLED, seed=1)
    assert first == pick_inputs(INPUTS, order=Order.SHUFFLED, seed=1)
    assert sorted(first, key=lambda i: i.name) == pick_inputs(INPUTS)


def test_long_inputs_are_skipped_but_never_all() -> None:
    assert [i.name for i in pick_inputs(INPUTS, max_chars=20)] == ["b", "c"]
    assert [i.name for i in pick_inputs(INPUTS, max_chars=5)] == ["a"]
    assert len(pick_inputs(INPUTS, max_chars=0)) == 3  # 0: no limit


def test_limit_keeps_the_first_and_count_repeats() -> None:
    assert [i.name for i in pick_inputs(INPUTS, limit=2)] == ["a", "b"]
    picked = pick_inputs(INPUTS, order=Order.SHORTEST_FIRST, count=5)
    assert [i.name for i in picked] == ["b", "c", "a", "b", "c"]
