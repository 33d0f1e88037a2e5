"""Every shipped template, end to end on the real bundled model, within its own policy.

All templates run at once (threads over the one session engine, which batches
them), once per session; each test then checks one template's result.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from structsum.config import Settings
from structsum.models import SummaryRequest, SummaryResult
from structsum.processors.templates import list_templates, load_template, validate_instance

INPUTS = Path(__file__).resolve().parents[1] / "data" / "inputs"
TEMPLATES_DIR = Settings().templates_dir
SHIPPED = list_templates(TEMPLATES_DIR)
# A fitting text per template; templates added later get the generic meeting.
TEXT_FOR = {
    "generic_summary_v1": "meeting_design_critique.txt",
    "meeting_minutes_v1": "meeting_budget_review.txt",
    "document_brief_v1": "document_security_policy.txt",
    "interview_summary_v1": "interview_customer_churn.txt",
}

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def results(engine: object, settings: Settings) -> dict[str, SummaryResult]:
    from structsum.processors.summary import summarize

    def run(template_id: str) -> SummaryResult:
        text = (INPUTS / TEXT_FOR.get(template_id, "meeting_design_critique.txt")).read_text()
        request = SummaryRequest(text=text, template_id=template_id)
        return summarize(request, engine=engine, settings=settings)

    with ThreadPoolExecutor(max_workers=len(SHIPPED)) as pool:
        return dict(zip(SHIPPED, pool.map(run, SHIPPED), strict=True))


@pytest.mark.parametrize("template_id", SHIPPED)
def test_template_gives_a_valid_result_within_its_policy(
    template_id: str, results: dict[str, SummaryResult]
) -> None:
    # The policy as the engine's profile applies it (its [profiles.<name>] overrides).
    template = load_template(TEMPLATES_DIR, template_id).for_profile(Settings().profile)
    result = results[template_id]
    failures = [a.errors for a in result.attempts if not a.valid]
    assert result.valid, f"no valid attempt; errors per attempt: {failures}"
    assert result.data is not None
    assert validate_instance(template.schema, result.data) == []
    assert result.schema_sha256 == template.schema_sha256
    assert 1 <= len(result.attempts) <= template.policy.retry.attempts
    expected = [template.policy.retry.temperature_for(i) for i in range(len(result.attempts))]
    assert result.temperatures == expected
    assert result.attempts[-1].finish_reason == "stop"
    assert result.simplification == template.decoding.changes
