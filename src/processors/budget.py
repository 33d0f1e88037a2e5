"""Token budget: how many tokens an answer may take, given the prompt it follows.

``max_tokens = min(requested, max_model_len - input_tokens - safety_margin)``;
below ``min_output_tokens`` the prompt does not fit and the text must be chunked.
Counting is always done with the engine's real tokenizer (never chars/4).
"""

from __future__ import annotations

from dataclasses import dataclass

from structsum.config import BudgetSettings


@dataclass(frozen=True)
class OutputBudget:
    input_tokens: int
    max_tokens: int
    fits: bool


def output_budget(
    input_tokens: int, *, requested: int, max_model_len: int, budget: BudgetSettings
) -> OutputBudget:
    room = max_model_len - input_tokens - budget.safety_margin
    max_tokens = min(requested, room)
    return OutputBudget(
        input_tokens=input_tokens,
        max_tokens=max(max_tokens, 0),
        fits=max_tokens >= min(budget.min_output_tokens, requested),
    )


def text_allowance(
    overhead_tokens: int, *, output_tokens: int, max_model_len: int, budget: BudgetSettings
) -> int:
    """How many tokens of text fit beside a prompt's fixed part and its answer."""
    return max_model_len - overhead_tokens - output_tokens - budget.safety_margin
