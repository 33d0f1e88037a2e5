"""What processors need from an engine, and what they exchange with it.

Kept apart from the vLLM engine so that processors, fakes in tests and other engine
kinds depend on the interface alone, never on vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from structsum.config import SamplingSettings
from structsum.processors.guide import Guide


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion; ``guide=None`` means unconstrained."""

    messages: list[dict[str, str]]
    sampling: SamplingSettings
    guide: Guide | None = None
    temperature: float | None = None  # overrides sampling.temperature (retry schedules)
    max_tokens: int | None = None  # overrides sampling.max_tokens (token budget)
    prompt_token_ids: list[int] | None = None  # when the caller already tokenized
    # Run to exactly max_tokens, EOS ignored: benchmarks compare arms at equal length.
    # Do not combine with a guide: vLLM drops a grammar that has ended, so the rest
    # of such an answer would be unguided.
    exact_length: bool = False


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    elapsed_s: float
    ttft_s: float | None = None
    token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class Engine(Protocol):
    """What processors need from an engine; tests pass a fake with the same shape.

    ``deadline`` is a ``time.monotonic()`` instant: past it, ``generate`` cancels
    its requests and raises ``JobTimeout``. None waits as long as generation takes.
    """

    model_name: str

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]: ...

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...
