from structsum.config import BudgetSettings
from structsum.processors.budget import output_budget, text_allowance

BUDGET = BudgetSettings(output_reserve=512, safety_margin=32, min_output_tokens=128)


def test_short_prompt_gets_the_requested_tokens() -> None:
    plan = output_budget(1000, requested=512, max_model_len=4096, budget=BUDGET)
    assert plan.max_tokens == 512
    assert plan.fits


def test_long_prompt_gets_what_is_left() -> None:
    plan = output_budget(3800, requested=512, max_model_len=4096, budget=BUDGET)
    assert plan.max_tokens == 4096 - 3800 - 32
    assert plan.fits


def test_prompt_without_room_does_not_fit() -> None:
    plan = output_budget(4000, requested=512, max_model_len=4096, budget=BUDGET)
    assert plan.max_tokens == 64
    assert not plan.fits
    assert output_budget(5000, requested=512, max_model_len=4096, budget=BUDGET).max_tokens == 0


def test_text_allowance_leaves_room_for_prompt_answer_and_margin() -> None:
    assert text_allowance(300, output_tokens=512, max_model_len=4096, budget=BUDGET) == (
        4096 - 300 - 512 - 32
    )
