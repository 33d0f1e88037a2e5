"""benchmark_warm_summary.py without an engine: one run through the real pipeline, the table."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from structsum.config import Settings
from structsum.models import SummaryRequest
from structsum.processors.templates import load_template
from tests.fakes import FakeEngine
from tests.scripts.conftest import load_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("benchmark_warm_summary")


def test_a_run_records_time_tokens_and_the_decodings_that_ran(script: ModuleType) -> None:
    settings = Settings()
    # document_brief_v1: no verbatim field in any profile, so its example is a valid answer.
    example = json.dumps(load_template(settings.templates_dir, "document_brief_v1").example)
    invalid = '{"title": "x"}'
    engine = FakeEngine([(invalid, "stop"), (example, "stop")])
    text = script.DEFAULT_SAMPLE.read_text()
    run = script.one_run(
        engine, settings, SummaryRequest(text=text, template_id="document_brief_v1")
    )
    assert run.failure is None and run.valid
    assert (run.attempts, run.decodings) == (2, ["default", "default"])
    assert run.completion_tokens == len(invalid.split()) + len(example.split())
    assert run.prompt_tokens > len(text.split())
    (row,) = script.table_rows([run])
    assert dict(zip(script.COLUMNS, row, strict=True))["valid"] == "True"


def test_a_failed_run_is_recorded_not_raised(script: ModuleType) -> None:
    engine = FakeEngine([])  # the scripted engine has nothing to answer: IndexError
    request = SummaryRequest(text="some text to summarize", template_id="generic_summary_v1")
    run = script.one_run(engine, Settings(), request)
    assert run.failure is not None and not run.valid
    assert script.table_rows([run])[0][2] == "failed"
