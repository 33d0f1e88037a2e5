"""End to end (issue 16): templates a team brings, declared in draft-04 and draft-07 and
shipped without policy.toml, summarized by a real worker; each result is valid under
its own draft's validator."""

from __future__ import annotations

import pytest

from structsum import client
from structsum.config import Settings
from structsum.models import SummaryResult
from structsum.processors.drafts import declared_draft
from tests.service.conftest import BYOS_SCHEMAS, WorkerProcess

pytestmark = [pytest.mark.service, pytest.mark.engine]

JOB_TIMEOUT_S = 300.0
NOTE = (
    "Weekly sync, 45 minutes. Ana, Bo and Chen met about the release plan. They decided "
    "to ship version 2.1 on Friday; Bo owns the release notes."
)


def test_draft_04_and_draft_07_templates_summarize_through_a_worker(
    worker: WorkerProcess, service_settings: Settings
) -> None:
    jobs = {
        template_id: client.enqueue_summary(NOTE, template_id, settings=service_settings)
        for template_id in BYOS_SCHEMAS
    }
    for template_id, job in jobs.items():
        result = job.result(JOB_TIMEOUT_S)
        assert isinstance(result, SummaryResult)
        assert result.template_id == template_id
        assert result.valid, (template_id, result.errors)
        schema = BYOS_SCHEMAS[template_id]
        validator = declared_draft(schema).validator_class(schema)
        assert validator.is_valid(result.data), (template_id, result.data)
