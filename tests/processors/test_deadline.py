"""A job's deadline reaches every engine call of the job, through one wrapper."""

from __future__ import annotations

from collections.abc import Sequence

from structsum.config import SamplingSettings
from structsum.processors.deadline import DeadlineEngine, deadline_in, earliest
from structsum.processors.engine import GenerationOutput, GenerationRequest
from tests.fakes import FakeEngine

REQUEST = GenerationRequest([{"role": "user", "content": "hi"}], SamplingSettings())


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(lambda _: ("ok", "stop"))
        self.deadlines: list[float | None] = []

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]:
        self.deadlines.append(deadline)
        return super().generate(requests)


def test_every_call_gets_the_jobs_deadline() -> None:
    inner = RecordingEngine()
    engine = DeadlineEngine(inner, 100.0)
    engine.generate([REQUEST])
    engine.generate([REQUEST], deadline=50.0)  # a caller's own, earlier deadline wins
    engine.generate([REQUEST], deadline=500.0)
    assert inner.deadlines == [100.0, 50.0, 100.0]
    assert engine.model_name == inner.model_name
    assert engine.count_tokens("a b c") == 3


def test_no_deadline_means_none() -> None:
    inner = RecordingEngine()
    DeadlineEngine(inner, None).generate([REQUEST])
    assert inner.deadlines == [None]
    assert earliest(None, None) is None
    assert deadline_in(5.0, now=10.0) == 15.0
