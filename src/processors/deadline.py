"""A job's deadline, carried to every engine call without touching the processors.

Celery's threads pool ignores task time limits, so the bound on a job is enforced
where it waits: ``Engine.generate(..., deadline=...)``. Processors call
``engine.generate(requests)`` several times per job (enhancement chunks, condense
rounds, retry attempts); wrapping the engine gives every one of those calls the
same job-wide deadline, and processors stay free of Celery and of clocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from structsum.processors.engine import Engine, GenerationOutput, GenerationRequest


def deadline_in(seconds: float, *, now: float | None = None) -> float:
    """The ``time.monotonic()`` instant ``seconds`` from now."""
    return (time.monotonic() if now is None else now) + seconds


def earliest(*deadlines: float | None) -> float | None:
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


class DeadlineEngine:
    """An engine whose every ``generate`` stops at one job's deadline."""

    def __init__(self, engine: Engine, deadline: float | None) -> None:
        self.engine = engine
        self.deadline = deadline
        self.model_name = engine.model_name

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]:
        return self.engine.generate(requests, deadline=earliest(self.deadline, deadline))

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self.engine.tokenize_chat(messages)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def __getattr__(self, name: str) -> Any:
        # Anything else the real engine offers (decode, check_health) passes through.
        return getattr(self.engine, name)
