"""The error tree: every leaf tells the user what to fix, and a raise site may say it better."""

from __future__ import annotations

import pytest

from structsum import errors
from structsum.errors import PlotUnavailable, StructsumError, TextTooLong


def _leaves(cls: type[StructsumError]) -> list[type[StructsumError]]:
    subclasses = cls.__subclasses__()
    if not subclasses:
        return [cls]
    return [leaf for sub in subclasses for leaf in _leaves(sub)]


@pytest.mark.parametrize("leaf", _leaves(StructsumError), ids=lambda c: c.__name__)
def test_every_leaf_has_a_docstring_and_a_hint(leaf: type[StructsumError]) -> None:
    assert leaf.__module__ == "structsum.errors"
    assert leaf.__doc__ and "\n" not in leaf.__doc__.strip()
    assert leaf.hint


def test_plot_unavailable_lives_in_the_tree() -> None:
    assert errors.PlotUnavailable is PlotUnavailable
    assert not PlotUnavailable.retryable
    assert "matplotlib" in PlotUnavailable.hint


def test_a_raise_site_hint_replaces_the_class_hint_for_that_error_only() -> None:
    specific = TextTooLong("needs 40 chunks", {"chunks": 40}, hint="raise MAX_CHUNKS")
    assert specific.hint == "raise MAX_CHUNKS"
    assert str(specific) == "needs 40 chunks (hint: raise MAX_CHUNKS)"
    assert specific.to_dict()["hint"] == "raise MAX_CHUNKS"
    assert TextTooLong.hint != "raise MAX_CHUNKS"
    assert TextTooLong("other").hint == TextTooLong.hint


def test_args_rebuild_the_same_error_hint_included() -> None:
    """Celery's JSON backend rebuilds an error as ``cls(*args)``."""
    for original in (
        TextTooLong("too long", {"chars": 9}),
        TextTooLong("too long", {"chars": 9}, hint="split it"),
    ):
        rebuilt = type(original)(*original.args)
        assert (rebuilt.message, rebuilt.details, rebuilt.hint) == (
            original.message,
            original.details,
            original.hint,
        )
