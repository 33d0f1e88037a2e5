"""A scripted stand-in for the vLLM engine, for unit tests of retry/budget logic.

Tokens are whitespace-separated words, so budgets are easy to reason about.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from structsum.errors import JobTimeout
from structsum.processors.engine import GenerationOutput, GenerationRequest

Responder = Callable[[GenerationRequest], tuple[str, str]]


def words(text: str) -> int:
    return len(text.split())


class FakeEngine:
    model_name = "fake-model"

    def __init__(self, responder: Responder | Sequence[tuple[str, str]]) -> None:
        self.requests: list[GenerationRequest] = []
        self.batches: list[int] = []
        if callable(responder):
            self._responder = responder
        else:
            scripted = list(responder)

            def pop(_: GenerationRequest) -> tuple[str, str]:
                return scripted.pop(0)

            self._responder = pop

    def tokenize_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return list(range(sum(words(m["content"]) + 2 for m in messages)))

    def count_tokens(self, text: str) -> int:
        return words(text)

    def generate(
        self, requests: Sequence[GenerationRequest], *, deadline: float | None = None
    ) -> list[GenerationOutput]:
        if deadline is not None and time.monotonic() >= deadline:
            raise JobTimeout("the fake engine's deadline passed")
        self.batches.append(len(requests))
        outputs = []
        for request in requests:
            self.requests.append(request)
            text, finish = self._responder(request)
            prompt = request.prompt_token_ids or self.tokenize_chat(request.messages)
            outputs.append(
                GenerationOutput(
                    text=text,
                    prompt_tokens=len(prompt),
                    completion_tokens=words(text),
                    finish_reason=finish,
                    elapsed_s=0.01,
                    ttft_s=0.001,
                )
            )
        return outputs


class MemoryStore:
    """A result cache / conversation store in a dict, with TTLs on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.items: dict[str, tuple[str, float]] = {}
        self.ttls: list[int] = []

    def get(self, key: str) -> str | None:
        value, expires = self.items.get(key, ("", -1.0))
        return value if self.now < expires else None

    def put(self, key: str, value: str, ttl_s: int) -> None:
        self.ttls.append(ttl_s)
        self.items[key] = (value, self.now + ttl_s)

    # the conversation store's names for the same two operations
    load = get
    save = put
