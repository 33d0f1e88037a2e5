"""benchmark_templates.py without an engine: metrics and one fake arm (variants: tests/bench)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from structsum.config import Settings
from structsum.processors.templates import load_template
from tests.fakes import FakeEngine
from tests.scripts.conftest import load_script

TEMPLATES_DIR = Settings().templates_dir


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("benchmark_templates")


def sample(script: ModuleType, **kwargs: object) -> object:
    base: dict[str, object] = {
        "template_id": "t",
        "variant": "policy",
        "input_name": "x",
        "latency_s": 2.0,
    }
    return script.Sample(**{**base, **kwargs})


def test_metrics_count_failures_as_invalid(script: ModuleType) -> None:
    samples = [
        sample(script, valid=True, valid_first=True, attempts=1, completion_tokens=100,
               finish_reasons=["stop"]),
        sample(script, valid=True, valid_first=False, attempts=2, completion_tokens=300,
               finish_reasons=["length", "stop"], latency_s=4.0),
        sample(script, failure="EngineError: boom"),
    ]  # fmt: skip
    metrics = script.compute_metrics("t", "policy", samples, wall_s=10.0)
    assert metrics.requests == 3 and metrics.failed_requests == 1
    assert metrics.valid_first_share == pytest.approx(1 / 3)
    assert metrics.valid_final_share == pytest.approx(2 / 3)
    assert metrics.mean_attempts == 1.5
    assert metrics.truncated_attempts == 1
    assert metrics.output_tok_per_s == 40.0
    assert metrics.mean_latency_s == 3.0
    empty = script.compute_metrics("t", "policy", [], wall_s=0.0)
    assert math.isnan(empty.valid_final_share)
    assert script.table_rows([metrics])[0][2] == "3 (1 failed)"


def test_metrics_count_how_often_each_decoding_schema_ran(script: ModuleType) -> None:
    samples = [
        sample(script, valid=True, attempts=1, decodings=["uncapped"]),
        sample(script, valid=True, attempts=2, decodings=["uncapped", "default"]),
        sample(script, valid=False, attempts=3, decodings=["uncapped", "default", "unguided"]),
        sample(script, failure="EngineError: boom"),
    ]
    metrics = script.compute_metrics("t", "policy", samples, wall_s=1.0)
    assert metrics.decoding_runs == {"uncapped": 3, "default": 2, "unguided": 1}
    row = dict(zip(script.COLUMNS, script.table_rows([metrics])[0], strict=True))
    assert row["decodings"] == "uncapped 3, default 2, unguided 1"


def test_one_arm_through_the_real_pipeline_with_a_fake_engine(
    script: ModuleType, tmp_path: Path
) -> None:
    template = load_template(TEMPLATES_DIR, "generic_summary_v1")
    directory = script.variant_templates_dir(tmp_path, TEMPLATES_DIR, template.id, "policy")
    settings = Settings().model_copy(update={"templates_dir": directory})
    # The texts hold the example's key points and action items: verbatim on the CPU profile.
    copied = " ".join(template.example["key_points"] + template.example["action_items"])
    inputs = [("first", f"first text. {copied}"), ("second", f"second text. {copied}")]
    engine = FakeEngine(lambda r: (json.dumps(template.example), "stop"))
    samples, wall = script.run_arm(
        engine=engine,
        settings=settings,
        template_id=template.id,
        variant="policy",
        inputs=inputs,
        concurrency=2,
    )
    assert [s.input_name for s in samples] == ["first", "second"]
    assert all(s.valid and s.valid_first and s.attempts == 1 for s in samples)
    assert wall > 0
    bad = FakeEngine(lambda r: ('{"title": "x"}', "stop"))
    samples, _ = script.run_arm(
        engine=bad,
        settings=settings,
        template_id=template.id,
        variant="policy",
        inputs=inputs[:1],
        concurrency=1,
    )
    assert not samples[0].valid
    retry = template.for_profile(settings.profile).policy.retry  # the profile's schedule
    assert samples[0].attempts == retry.attempts
    assert samples[0].temperatures == [retry.temperature_for(i) for i in range(retry.attempts)]
    assert samples[0].decodings == ["default"] * retry.attempts
    assert samples[0].failure is None


CORPUS = Path(__file__).resolve().parents[1] / "data" / "schema_corpus"


def test_corpus_loads_every_good_schema_and_refuses_every_bad_one_typed(
    script: ModuleType, tmp_path: Path
) -> None:
    """The corpus of issue 16 offline: load outcomes, and the pipeline with a fake engine
    that answers each template's own example (what the prompt shows)."""
    entries = script.build_corpus(CORPUS, tmp_path / "built")
    settings = Settings().model_copy(update={"templates_dir": tmp_path / "built"})

    def answer(request: object) -> tuple[str, str]:
        prompt = request.messages[-1]["content"]  # type: ignore[attr-defined]
        example = prompt.split("Example of the format (about a different text):\n", 1)[1]
        return example.split("\n", 1)[0], "stop"

    script.run_corpus(FakeEngine(answer), settings, entries, [("note", "a short text")], 4)
    outcomes = {e.template_id: (e.expect, e.load) for e in entries}
    assert not [t for t, (_, load) in outcomes.items() if load.startswith("untyped")], outcomes
    wrong = {t: o for t, o in outcomes.items() if (o[0] == "load") != (o[1] == "loaded")}
    assert wrong == {}
    assert sum(e.expect == "load" for e in entries) >= 50
    invalid = [e.template_id for e in entries if e.sample is not None and not e.sample.valid]
    assert invalid == []
    # Each attempt's raw answer is kept, to see why an answer failed.
    ran = [e.sample for e in entries if e.sample is not None]
    assert ran and all(len(s.raw_outputs) == s.attempts for s in ran)
    rows = {row[0]: row for row in script.corpus_rows(entries)}
    assert rows["ALL good"][4] == "0" and rows["ALL bad"][2] == "0"
