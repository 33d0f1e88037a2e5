"""The client: validates before enqueueing, maps every outcome to a typed result or error."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

import structsum.client as client
from structsum.config import QueueSettings, Settings
from structsum.errors import (
    EmptyText,
    IdempotencyKeyReused,
    JobUnknown,
    RequestInvalid,
    ResultTimeout,
    ServiceUnavailable,
    StructsumError,
    TaskFailed,
    TemplateNotFound,
    TextHasNul,
    TextNotUtf8,
    TextTooLong,
)
from structsum.models import EnhancementResult, SummaryResult, Usage
from structsum.service.app import (
    ASK,
    ENHANCE,
    ENHANCE_AND_SUMMARIZE,
    ENQUEUED_AT_HEADER,
    SUMMARIZE,
    build_app,
)

ENHANCED = EnhancementResult(
    text="ok",
    truncated=False,
    usage=Usage(prompt_tokens=3, completion_tokens=2),
    elapsed_s=0.1,
    model="m",
).model_dump(mode="json")


class FakeStore:
    """The few Redis commands the client uses for job records."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl: dict[str, int] = {}

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        if nx and key in self.data:
            return False
        self.data[key] = value
        if ex is not None:
            self.ttl[key] = ex
        return True

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def exists(self, key: str) -> int:
        return int(key in self.data)


class FakeApp:
    def __init__(self, publish_error: Exception | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.expires: list[float | None] = []
        self.ids: list[str] = []
        self.backend = SimpleNamespace(client=FakeStore())
        self.conf = SimpleNamespace(result_backend_transport_options={"global_keyprefix": "p:"})
        self.publish_error = publish_error

    def send_task(
        self,
        name: str,
        *,
        kwargs: dict[str, Any],
        headers: dict[str, Any],
        task_id: str,
        expires: float | None = None,
    ) -> Any:
        if self.publish_error is not None:
            raise self.publish_error
        self.sent.append((name, kwargs, headers))
        self.expires.append(expires)
        self.ids.append(task_id)
        return FakeAsyncResult(task_id, ENHANCED, app=self)

    def AsyncResult(self, task_id: str) -> FakeAsyncResult:  # Celery's name
        return FakeAsyncResult(task_id, None, "PENDING", CeleryTimeoutError("late"), app=self)


class FakeAsyncResult:
    """Just enough of celery's AsyncResult: get(propagate=False), failed(), state."""

    def __init__(
        self,
        task_id: str,
        value: Any,
        state: str = "SUCCESS",
        raises: Any = None,
        app: FakeApp | None = None,
    ):
        self.id = task_id
        self.value = value
        self.state = state
        self.raises = raises
        self.app = app or FakeApp()
        self.backend = self.app.backend

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        assert propagate is False
        if self.raises is not None:
            raise self.raises
        return self.value

    def failed(self) -> bool:
        return self.state == "FAILURE"


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> FakeApp:
    app = FakeApp()
    monkeypatch.setattr(client, "client_app", lambda settings=None: app)
    return app


def test_enqueue_summary_sends_a_validated_json_payload(fake_app: FakeApp) -> None:
    before = time.time()
    handle = client.enqueue_summary(
        b"Some text", "generic_summary_v1", language="en", variables={"team": "web"}
    )
    assert handle.id == fake_app.ids[0]
    name, kwargs, headers = fake_app.sent[0]
    assert name == SUMMARIZE
    assert kwargs == {
        "text": "Some text",
        "template_id": "generic_summary_v1",
        "language": "en",
        "variables": {"team": "web"},
        "enhance": False,
        "use_cache": True,
    }
    json.dumps(kwargs)
    assert before <= headers[ENQUEUED_AT_HEADER] <= time.time()
    # a job nobody starts within the setting is dropped, not run for a caller long gone
    assert fake_app.expires == [Settings().queue.message_expires_s]


def test_enqueue_other_tasks(fake_app: FakeApp) -> None:
    client.enqueue_enhancement("text", language="de", use_cache=False)
    client.enqueue_enhance_and_summarize("text", "t1")
    client.ask("c1", "Who ships?", text="Alice ships.", max_tokens=16)
    assert [s[0] for s in fake_app.sent] == [ENHANCE, ENHANCE_AND_SUMMARIZE, ASK]
    assert fake_app.sent[0][1] == {"text": "text", "language": "de", "use_cache": False}
    assert fake_app.sent[1][1]["enhance"] is True
    assert fake_app.sent[2][1] == {
        "conversation_id": "c1",
        "question": "Who ships?",
        "text": "Alice ships.",
        "summary_job_id": None,
        "template_id": None,
        "language": None,
        "max_tokens": 16,
    }


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: client.enqueue_summary(b"caf\xe9", "t1"), TextNotUtf8),
        (lambda: client.enqueue_enhancement(b"\xff\xfe\x00"), TextNotUtf8),
        (lambda: client.enqueue_summary("   ", "t1"), EmptyText),
        (lambda: client.enqueue_summary("text", "../etc/passwd"), RequestInvalid),
        (lambda: client.enqueue_summary("text", "t1", variables={"x": [1]}), RequestInvalid),  # type: ignore[dict-item]
        (lambda: client.enqueue_summary("a\x00b", "t1"), TextHasNul),
        (lambda: client.enqueue_enhancement("x" * 400_001), TextTooLong),
        (lambda: client.enqueue_enhancement("text", language="en" * 100), RequestInvalid),
        (lambda: client.enqueue_summary("t", "t1", variables={"__class__": "x"}), RequestInvalid),
        (
            lambda: client.enqueue_summary("t", "t1", variables={f"k{i}": 1 for i in range(99)}),
            RequestInvalid,
        ),
    ],
)
def test_bad_requests_fail_before_anything_is_enqueued(
    fake_app: FakeApp, call: Any, error: type[StructsumError]
) -> None:
    with pytest.raises(error):
        call()
    assert fake_app.sent == []


def test_handle_returns_the_typed_model() -> None:
    handle = client.JobHandle(FakeAsyncResult("a", ENHANCED), EnhancementResult)  # type: ignore[arg-type]
    assert handle.result(1) == EnhancementResult.model_validate(ENHANCED)


def test_handle_without_a_kind_reads_it_from_the_result() -> None:
    handle: client.JobHandle[Any] = client.JobHandle(FakeAsyncResult("a", ENHANCED))  # type: ignore[arg-type]
    assert isinstance(handle.result(1), EnhancementResult)


def test_worker_errors_come_back_as_the_same_class() -> None:
    exc = TextTooLong("too long", {"chars": 10, "limit": 5})
    handle = client.JobHandle(FakeAsyncResult("a", exc, "FAILURE"), SummaryResult)  # type: ignore[arg-type]
    with pytest.raises(TextTooLong) as info:
        handle.result(1)
    assert info.value.details == {"chars": 10, "limit": 5}


def test_unexpected_worker_errors_become_task_failed() -> None:
    handle = client.JobHandle(FakeAsyncResult("a", KeyError("x"), "FAILURE"), SummaryResult)  # type: ignore[arg-type]
    with pytest.raises(TaskFailed, match="KeyError"):
        handle.result(1)


def test_a_result_of_the_wrong_shape_is_task_failed() -> None:
    handle = client.JobHandle(FakeAsyncResult("a", {"nope": 1}), SummaryResult)  # type: ignore[arg-type]
    with pytest.raises(TaskFailed):
        handle.result(1)


def test_timeout_is_result_timeout() -> None:
    queued = FakeAsyncResult("a", None, "PENDING", raises=CeleryTimeoutError("late"))
    queued.backend.client.set("p:structsum-submitted-a", "{}")  # enqueued, not yet run
    handle = client.JobHandle(queued, SummaryResult)  # type: ignore[arg-type]
    with pytest.raises(ResultTimeout) as info:
        handle.result(0.5)
    assert info.value.details == {"task_id": "a", "timeout_s": 0.5}


def test_every_enqueued_job_is_recorded_so_an_unknown_id_is_told_apart(
    fake_app: FakeApp,
) -> None:
    handle = client.enqueue_enhancement("text")
    store = fake_app.backend.client
    key = f"p:structsum-submitted-{handle.id}"
    queue = Settings().queue
    assert key in store.data
    assert store.ttl[key] == queue.message_expires_s + queue.result_expires_s
    # queued: Celery says PENDING and the record exists; a stranger's id has neither
    assert client.JobHandle(fake_app.AsyncResult(handle.id)).state == "PENDING"
    assert client.JobHandle(fake_app.AsyncResult("typo")).state == "UNKNOWN"


def test_a_recorded_job_whose_record_vanished_is_unknown_at_once(fake_app: FakeApp) -> None:
    """Redis restarted without persistence: the client stops waiting, typed."""
    handle = client.enqueue_enhancement("text")
    lost = client.JobHandle(fake_app.AsyncResult(handle.id), recorded=True)
    fake_app.backend.client.data.clear()
    started = time.monotonic()
    with pytest.raises(JobUnknown) as info:
        lost.result(60)
    assert time.monotonic() - started < 10  # one poll, not the 60 s timeout
    assert info.value.details == {"task_id": handle.id}
    assert not info.value.retryable


def test_an_unknown_id_from_elsewhere_is_waited_for_then_unknown(fake_app: FakeApp) -> None:
    """A plain send_task leaves no record: its id may still be queued, so wait first."""
    handle = client.job("typo")
    with pytest.raises(JobUnknown):
        handle.result(0.3)


def test_one_idempotency_key_gives_one_job(fake_app: FakeApp) -> None:
    first = client.enqueue_summary("text", "t1", idempotency_key="order-17")
    again = client.enqueue_summary("text", "t1", idempotency_key="order-17")
    assert first.id == again.id == client.task_id_for("order-17")
    assert len(fake_app.sent) == 1
    with pytest.raises(IdempotencyKeyReused):
        client.enqueue_summary("other text", "t1", idempotency_key="order-17")
    assert len(fake_app.sent) == 1
    other = client.enqueue_summary("text", "t1", idempotency_key="order-18")
    assert other.id != first.id and len(fake_app.sent) == 2


def test_a_failed_publish_leaves_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FakeApp(publish_error=OperationalError("refused"))
    monkeypatch.setattr(client, "client_app", lambda settings=None: app)
    with pytest.raises(ServiceUnavailable):
        client.enqueue_enhancement("text", idempotency_key="k")
    assert app.backend.client.data == {}  # a retry with the same key sends the job


def test_lost_redis_is_service_unavailable() -> None:
    handle = client.JobHandle(
        FakeAsyncResult("a", None, raises=OperationalError("refused")),
        SummaryResult,  # type: ignore[arg-type]
    )
    with pytest.raises(ServiceUnavailable):
        handle.result(1)


def test_enqueue_without_redis_is_service_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 1 refuses at once. Celery's result consumer retries for ~20 s by default
    # (it rides out a Redis restart); the test shortens that to one quick retry.
    settings = Settings(queue=QueueSettings(broker_url="redis://127.0.0.1:1/0"))
    app = build_app(settings)
    app.conf.result_backend_transport_options = {
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
    }
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0}
    monkeypatch.setattr(client, "client_app", lambda settings=None: app)
    with pytest.raises(ServiceUnavailable):
        client.enqueue_enhancement("text", settings=settings)


@pytest.mark.parametrize(
    "exc",
    [
        TemplateNotFound("unknown template 'x'", {"template_id": "x"}),
        RequestInvalid("invalid SummaryRequest: text", {"errors": [{"loc": ["text"]}]}),
        TextTooLong("text has 9 characters", {"chars": 9, "limit": 5}),
        TextTooLong("text needs 40 chunks", {"chunks": 40}, hint="raise MAX_CHUNKS"),
    ],
)
def test_typed_errors_survive_celerys_json_backend(exc: StructsumError) -> None:
    """The exact path a worker failure takes: prepare -> JSON -> exception_to_python.

    celery 5.7 only rebuilds classes from modules the client has imported and
    that really are exceptions; structsum.client imports structsum.errors.
    """
    backend = client.client_app(Settings()).backend
    stored = json.loads(json.dumps(backend.prepare_exception(exc)))
    assert stored["exc_module"] == "structsum.errors"
    rebuilt = backend.exception_to_python(stored)
    assert type(rebuilt) is type(exc)
    assert rebuilt.message == exc.message
    assert rebuilt.details == exc.details
    assert rebuilt.hint == exc.hint
