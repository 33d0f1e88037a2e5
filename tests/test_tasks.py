"""Tasks run eagerly over a fake engine: payload -> processor -> JSON, typed failures, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import ImproperlyConfigured

import structsum.tasks as tasks
from structsum.config import QueueSettings, Settings
from structsum.errors import (
    EngineError,
    EngineUnavailable,
    InputError,
    JobTimeout,
    OutputInvalid,
    RequestInvalid,
    ServiceUnavailable,
    StructsumError,
    TemplateError,
    TemplateNotFound,
)
from structsum.models import EnhancementResult, SummaryResult
from structsum.processors.engine import GenerationRequest
from structsum.service.app import ENQUEUED_AT_HEADER
from structsum.service.runtime import WorkerRuntime
from tests.fakes import FakeEngine

EXAMPLE = (
    Path(__file__).parents[1] / "schemas" / "generic_summary_v1" / "example.json"
).read_text()
# The example's key points and action items are in the text: verbatim on the CPU profile.
TEXT = (
    "Alice: we ship on Friday. Bob: I write the release notes. Carol: QA signs off Thursday. "
    + " ".join(json.loads(EXAMPLE)["key_points"] + json.loads(EXAMPLE)["action_items"])
)


def answer(request: GenerationRequest) -> tuple[str, str]:
    """Guided requests get the template's example, unguided ones cleaned-up text."""
    return (EXAMPLE, "stop") if request.guide is not None else ("Clean text.", "stop")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerRuntime]:
    rt = WorkerRuntime(Settings(queue=QueueSettings(metrics_port=None, warm_grammars=False)))
    rt.start(FakeEngine(answer))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    yield rt
    rt.stop()


def counter(rt: WorkerRuntime, name: str, **labels: str) -> float:
    return rt.metrics.registry.get_sample_value(name, labels) or 0.0


def test_enhance_returns_the_result_as_json(runtime: WorkerRuntime) -> None:
    outcome = tasks.enhance_task.apply(kwargs={"text": TEXT})
    assert outcome.successful()
    payload = outcome.get()
    json.dumps(payload)
    assert EnhancementResult.model_validate(payload).text == "Clean text."
    assert (
        counter(runtime, "structsum_jobs_total", task="structsum.enhance", outcome="success") == 1
    )


def test_summarize_returns_a_valid_summary(runtime: WorkerRuntime) -> None:
    payload = tasks.summarize_task.apply(
        kwargs={"text": TEXT, "template_id": "generic_summary_v1"}
    ).get()
    result = SummaryResult.model_validate(payload)
    assert result.valid
    assert result.data == json.loads(EXAMPLE)
    assert result.enhancement is None


def test_queue_wait_from_the_enqueue_header(runtime: WorkerRuntime) -> None:
    task = "structsum.enhance"
    assert tasks.enhance_task.apply(kwargs={"text": TEXT}).successful()
    junk = {ENQUEUED_AT_HEADER: "yesterday"}
    assert tasks.enhance_task.apply(kwargs={"text": TEXT}, headers=junk).successful()
    assert counter(runtime, "structsum_queue_wait_seconds_count", task=task) == 0
    five_s_ago = {ENQUEUED_AT_HEADER: time.time() - 5}
    assert tasks.enhance_task.apply(kwargs={"text": TEXT}, headers=five_s_ago).successful()
    assert counter(runtime, "structsum_queue_wait_seconds_count", task=task) == 1
    assert counter(runtime, "structsum_queue_wait_seconds_sum", task=task) >= 5


def test_enhance_and_summarize_always_enhances(runtime: WorkerRuntime) -> None:
    payload = tasks.enhance_and_summarize_task.apply(
        kwargs={"text": TEXT, "template_id": "generic_summary_v1", "enhance": False}
    ).get()
    result = SummaryResult.model_validate(payload)
    assert result.enhancement is not None
    assert result.enhancement.text == "Clean text."
    engine = runtime.engine
    assert isinstance(engine, FakeEngine)
    summary_prompt = engine.requests[-1].messages[-1]["content"]
    assert "Clean text." in summary_prompt


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"template_id": "generic_summary_v1"}, RequestInvalid),
        ({"text": 42, "template_id": "generic_summary_v1"}, RequestInvalid),
        ({"text": TEXT, "template_id": "generic_summary_v1", "variables": [1]}, RequestInvalid),
        ({"text": TEXT, "template_id": "no_such_template"}, TemplateNotFound),
    ],
)
def test_bad_payloads_fail_with_typed_errors(
    runtime: WorkerRuntime, kwargs: dict[str, Any], error: type[StructsumError]
) -> None:
    outcome = tasks.summarize_task.apply(kwargs=kwargs)
    assert outcome.failed()
    with pytest.raises(error):
        outcome.get()
    code = error.__name__
    assert counter(runtime, "structsum_errors_total", task="structsum.summarize", code=code) == 1
    assert not runtime.engine.requests  # type: ignore[attr-defined]


def test_positional_args_are_refused(runtime: WorkerRuntime) -> None:
    with pytest.raises(RequestInvalid):
        tasks.enhance_task.apply(args=(TEXT,)).get()


def test_outages_are_retried_then_succeed(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = iter([EngineError("transient"), EngineError("transient again")])

    def flaky(request: GenerationRequest) -> tuple[str, str]:
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return answer(request)

    monkeypatch.setattr(runtime.engine, "_responder", flaky)
    outcome = tasks.enhance_task.apply(kwargs={"text": TEXT})
    assert outcome.successful()
    assert (
        counter(runtime, "structsum_retries_total", task="structsum.enhance", code="EngineError")
        == 2
    )


def test_input_errors_are_never_retried(runtime: WorkerRuntime) -> None:
    with pytest.raises(TemplateNotFound):
        tasks.summarize_task.apply(kwargs={"text": TEXT, "template_id": "nope"}).get()
    assert (
        counter(
            runtime, "structsum_retries_total", task="structsum.summarize", code="TemplateNotFound"
        )
        == 0
    )


def test_a_dead_engine_stops_the_worker(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.worker import state

    monkeypatch.setattr(state, "should_stop", None)

    def dead(_: GenerationRequest) -> tuple[str, str]:
        raise EngineUnavailable("the vLLM engine died")

    monkeypatch.setattr(runtime.engine, "_responder", dead)
    with pytest.raises(EngineUnavailable):
        tasks.enhance_task.apply(kwargs={"text": TEXT}).get()
    assert state.should_stop is not None
    # retried up to the limit, then failed for good
    assert (
        counter(
            runtime, "structsum_retries_total", task="structsum.enhance", code="EngineUnavailable"
        )
        == tasks.MAX_RETRIES
    )


def test_retry_policy_covers_outages_only() -> None:
    retried = tasks.retryable_errors()
    assert EngineError in retried and ServiceUnavailable in retried
    for cls in retried:
        assert cls.retryable
    for cls in (InputError, TemplateError, OutputInvalid):
        assert not issubclass(cls, retried)
    assert tasks.summarize_task.autoretry_for == retried
    assert StructsumError in tasks.summarize_task.throws


def test_the_number_of_retries_comes_from_the_settings() -> None:
    """QUEUE__JOB_RETRIES reaches every task of a worker started with it (a fresh process:
    the tasks read it when the worker imports them)."""
    probe = "import structsum.tasks as t; print(sorted({t.enhance_task.max_retries, t.summarize_task.max_retries}))"  # noqa: E501
    env = {**os.environ, "STRUCTSUM_QUEUE__JOB_RETRIES": "1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "[1]"
    assert tasks.enhance_task.max_retries == Settings().queue.job_retries


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def test_no_input_error_hides_under_a_retryable_class() -> None:
    for cls in _all_subclasses(StructsumError):
        if issubclass(cls, tasks.retryable_errors()):
            assert cls.retryable, f"{cls.__name__} would be retried but says it is not retryable"


def test_tasks_are_registered_by_name() -> None:
    for name in ("structsum.enhance", "structsum.summarize", "structsum.enhance_and_summarize"):
        assert name in tasks.app.tasks


@pytest.mark.parametrize("pool", ["prefork", "eventlet", "gevent"])
def test_pools_that_cannot_share_one_engine_are_refused(pool: str) -> None:
    instance = SimpleNamespace(app=tasks.app, pool_cls=pool, concurrency=4)
    with pytest.raises(ImproperlyConfigured, match="threads"):
        tasks.start_runtime(instance)


def test_pool_names() -> None:
    assert tasks.pool_name("threads") == "threads"
    assert tasks.pool_name("solo") == "solo"
    assert tasks.pool_name("prefork") == "prefork"


def test_a_job_past_its_deadline_fails_as_job_timeout(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every run of the job starts already late: each engine call refuses at once.
    monkeypatch.setattr(tasks, "deadline_in", lambda seconds: time.monotonic() - 1)
    with pytest.raises(JobTimeout):
        tasks.enhance_task.apply(kwargs={"text": TEXT}).get()
    assert runtime.engine.requests == []  # nothing was generated for it
    assert (
        counter(runtime, "structsum_retries_total", task="structsum.enhance", code="JobTimeout")
        == tasks.MAX_RETRIES
    )


def test_the_deadline_comes_from_the_settings(
    runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []

    def deadline_in(seconds: float) -> float:
        asked.append(seconds)
        return time.monotonic() + seconds

    monkeypatch.setattr(tasks, "deadline_in", deadline_in)
    assert tasks.enhance_task.apply(kwargs={"text": TEXT}).successful()
    assert asked == [runtime.settings.queue.job_deadline_s]


def test_engine_errors_in_a_row_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.worker import state

    monkeypatch.setattr(state, "should_stop", None)
    exits: list[float] = []
    queue = QueueSettings(metrics_port=None, breaker_engine_errors=3)
    rt = WorkerRuntime(Settings(queue=queue), exit_later=exits.append)

    def broken(_: GenerationRequest) -> tuple[str, str]:
        raise EngineError("vLLM failed to generate")

    rt.start(FakeEngine(broken))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    try:
        with pytest.raises(EngineError):
            tasks.enhance_task.apply(kwargs={"text": TEXT}).get()  # 4 runs: 3 retries
        assert state.should_stop == 70
        assert rt.failure is not None and "3 engine errors in a row" in rt.failure
        assert len(exits) == 1
    finally:
        rt.stop()


def test_a_worker_whose_deadline_outlives_the_visibility_timeout_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = QueueSettings(
        metrics_port=None, visibility_timeout_s=100, job_deadline_s=90, redis_check="off"
    )
    rt = WorkerRuntime(Settings(queue=queue))
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    instance = SimpleNamespace(app=tasks.app, pool_cls="threads", concurrency=4)
    with pytest.raises(ImproperlyConfigured, match="visibility_timeout_s"):
        tasks.start_runtime(instance)
    assert not rt.loaded


def test_a_worker_that_cannot_start_shuts_down_with_78_instead_of_consuming(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Celery swallows a signal handler's exception: the handler must end the worker."""
    from celery import signals
    from celery.exceptions import WorkerShutdown

    queue = QueueSettings(metrics_port=None, redis_check="off")
    rt = WorkerRuntime(Settings(queue=queue))

    def port_taken(*_: object, **__: object) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(rt, "start", port_taken)
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    instance = SimpleNamespace(app=tasks.app, pool_cls="threads", concurrency=128)
    with pytest.raises(WorkerShutdown) as stopped:  # through Celery's own dispatch
        signals.celeryd_after_setup.send(sender="w1@host", instance=instance, conf=None)
    assert stopped.value.code == tasks.STARTUP_FAILED_EXIT_CODE == 78
    assert "this worker cannot start: [Errno 98] Address already in use" in caplog.text


def test_the_workers_exit_status_is_kept_for_the_cli(runtime: WorkerRuntime) -> None:
    tasks._close_engine(sender=SimpleNamespace(app=tasks.app, exitcode=70))
    assert runtime.exit_status == 70
    assert not runtime.loaded


@pytest.fixture
def asking(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerRuntime]:
    """A runtime whose conversations live in a dict."""
    from tests.fakes import MemoryStore

    rt = WorkerRuntime(Settings(queue=QueueSettings(metrics_port=None, warm_grammars=False)))
    rt.start(FakeEngine(lambda r: ("Bob writes them.", "stop")), conversation_store=MemoryStore())
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    yield rt
    rt.stop()


def test_ask_keeps_the_conversation_between_jobs(asking: WorkerRuntime) -> None:
    from structsum.models import AskResult

    first = tasks.ask_task.apply(
        kwargs={"conversation_id": "c1", "question": "Who writes the notes?", "text": TEXT}
    ).get()
    second = tasks.ask_task.apply(kwargs={"conversation_id": "c1", "question": "When?"}).get()
    assert AskResult.model_validate(first).turn == 1
    assert AskResult.model_validate(second).history_turns == 1
    assert counter(asking, "structsum_jobs_total", task="structsum.ask", outcome="success") == 2


def test_ask_about_an_unfinished_summary_job_fails_typed(
    asking: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celery.result

    from structsum.errors import SummaryNotReady

    pending = SimpleNamespace(state="PENDING", result=None)
    monkeypatch.setattr(celery.result, "AsyncResult", lambda job_id, app=None: pending)
    outcome = tasks.ask_task.apply(
        kwargs={"conversation_id": "c2", "question": "What?", "summary_job_id": "job-1"}
    )
    with pytest.raises(SummaryNotReady):
        outcome.get()


def test_ask_about_a_finished_summary_uses_its_json(
    asking: WorkerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import celery.result

    done = SimpleNamespace(
        state="SUCCESS",
        result={"template_id": "generic_summary_v1", "data": {"title": "Release on Friday"}},
    )
    monkeypatch.setattr(celery.result, "AsyncResult", lambda job_id, app=None: done)
    tasks.ask_task.apply(
        kwargs={"conversation_id": "c3", "question": "What?", "summary_job_id": "job-2"}
    ).get()
    engine = asking.engine
    assert isinstance(engine, FakeEngine)
    assert "Release on Friday" in engine.requests[-1].messages[0]["content"]
