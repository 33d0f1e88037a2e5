"""Enqueue structsum jobs from any app: needs this package and the Redis URL, not vLLM.

    from structsum.client import enqueue_summary
    job = enqueue_summary(text, "generic_summary_v1")
    result = job.result(timeout=300)   # SummaryResult, or raises a StructsumError

Requests are validated here before they are enqueued, so a bad request fails
at once with the same typed error the worker would raise. The worker's typed
errors come back as the same classes (Celery's JSON backend stores class,
module and arguments; importing ``structsum.errors`` here makes them known).

Every job enqueued here leaves a small record in Redis (``structsum-submitted-<id>``,
kept as long as its message and then its result may live). Celery says PENDING
both for a queued job and for an id it never saw; the record tells them apart:
``state`` is ``UNKNOWN`` for an id without a record and without a result, and
``result()`` raises ``JobUnknown`` instead of waiting forever on a job lost with
a Redis restart. An ``idempotency_key`` makes the task id a function of the key:
enqueueing twice with one key gives one job.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, Generic, TypeVar, cast

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from pydantic import BaseModel, ValidationError

from structsum.config import Settings, get_settings
from structsum.errors import (
    IdempotencyKeyReused,
    JobUnknown,
    ResultTimeout,
    StructsumError,
    TaskFailed,
)
from structsum.models import (
    AskRequest,
    AskResult,
    EnhancementRequest,
    EnhancementResult,
    PromptVariable,
    SummaryRequest,
    SummaryResult,
)
from structsum.service.app import (
    ASK,
    ENHANCE,
    ENHANCE_AND_SUMMARIZE,
    ENQUEUED_AT_HEADER,
    SUMMARIZE,
)
from structsum.service.broker import broker_errors, queue_app
from structsum.service.payloads import decode_text, parse_request, result_model

ResultT = TypeVar("ResultT", SummaryResult, EnhancementResult, AskResult)

# Seconds between two looks at a job's record while waiting for its result.
RESULT_POLL_S = 2.0
# Task ids derived from idempotency keys live in this namespace.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d1c3a0e-6f4b-4c1e-9a57-3f2b8e0c7d11")


def client_app(settings: Settings | None = None) -> Celery:
    """The Celery app for these settings, built once per distinct queue configuration."""
    return queue_app(settings)


def submitted_key(app: Celery, task_id: str) -> str:
    """The Redis key recording that ``task_id`` was enqueued (same prefix as results)."""
    prefix = (app.conf.result_backend_transport_options or {}).get("global_keyprefix", "")
    return f"{prefix}structsum-submitted-{task_id}"


def task_id_for(idempotency_key: str) -> str:
    """The task id every enqueue with this key gets."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))


class JobHandle(Generic[ResultT]):
    """A queued job: its id, its state, and its typed result."""

    def __init__(
        self,
        async_result: AsyncResult,
        model: type[ResultT] | None = None,
        *,
        recorded: bool = False,
    ) -> None:
        self._async = async_result
        self._model = model
        # True when this handle wrote the job's record: its loss means the job is lost.
        self._recorded = recorded

    @property
    def id(self) -> str:
        return str(self._async.id)

    @property
    def state(self) -> str:
        """PENDING (queued), STARTED, RETRY, SUCCESS, FAILURE, REVOKED, or UNKNOWN.

        UNKNOWN: no result and no record of the id being enqueued. Either it never
        was (a typo), it expired, it was lost in a Redis restart without
        persistence, or it was sent by plain ``send_task`` and is still queued.
        """
        with broker_errors():
            state = str(self._async.state)
            if state == "PENDING" and not self._async.backend.client.exists(
                submitted_key(self._async.app, self.id)
            ):
                return "UNKNOWN"
        return state

    def ready(self) -> bool:
        return self.state in ("SUCCESS", "FAILURE", "REVOKED")

    def result(self, timeout: float | None = None) -> ResultT:
        """Wait for the result; raises the worker's StructsumError, JobUnknown or ResultTimeout.

        JobUnknown comes at once for a job this handle enqueued whose record is
        gone (lost), and at the timeout for any id still unknown then.
        """
        payload, failed = self._wait(timeout)
        if failed:
            raise _as_structsum_error(self.id, payload)
        if not isinstance(payload, dict):
            raise TaskFailed(
                f"job {self.id} returned {type(payload).__name__}, not a result object",
                {"task_id": self.id},
            )
        model = self._model or cast(type[ResultT], result_model(payload))
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise TaskFailed(
                f"job {self.id} returned something that is not a {model.__name__}",
                {"task_id": self.id, "errors": exc.errors(include_url=False, include_input=False)},
            ) from exc

    def _wait(self, timeout: float | None) -> tuple[Any, bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = RESULT_POLL_S
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            try:
                with broker_errors():
                    payload = self._async.get(timeout=step, propagate=False)
                    return payload, self._async.failed() or self._async.state == "REVOKED"
            except CeleryTimeoutError as exc:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if (self._recorded or out_of_time) and self.state == "UNKNOWN":
                    raise JobUnknown(
                        f"job {self.id} is unknown: not queued, running or finished",
                        {"task_id": self.id},
                    ) from exc
                if out_of_time:
                    raise ResultTimeout(
                        f"no result for job {self.id} within {timeout} s",
                        {"task_id": self.id, "timeout_s": timeout},
                    ) from exc

    def forget(self) -> None:
        """Delete the stored result now instead of waiting for result_expires."""
        self._async.forget()


def _as_structsum_error(task_id: str, exc: Any) -> StructsumError:
    if isinstance(exc, StructsumError):
        return exc
    # Anything else is a bug or an outage in the worker, not a property of the input.
    return TaskFailed(
        f"job {task_id} failed: {type(exc).__name__}: {exc}",
        {"task_id": task_id, "type": type(exc).__name__, "message": str(exc)},
    )


def _send(
    name: str,
    request: BaseModel,
    model: type[ResultT],
    settings: Settings | None,
    idempotency_key: str | None = None,
) -> JobHandle[ResultT]:
    settings = settings or get_settings()
    queue = settings.queue
    app = client_app(settings)
    kwargs = request.model_dump(mode="json")
    task_id = task_id_for(idempotency_key) if idempotency_key else str(uuid.uuid4())
    digest = hashlib.sha256(json.dumps([name, kwargs], sort_keys=True).encode()).hexdigest()
    key = submitted_key(app, task_id)
    # Kept while the message may wait in the queue, then while its result is kept.
    ttl = (queue.message_expires_s or queue.visibility_timeout_s) + queue.result_expires_s
    with broker_errors():
        store = app.backend.client
        # Recorded before the publish: a job is never queued without its record.
        if not store.set(key, json.dumps({"task": name, "digest": digest}), nx=True, ex=ttl):
            return _existing(app, key, task_id, digest, model)
        try:
            async_result = app.send_task(
                name,
                kwargs=kwargs,
                task_id=task_id,
                headers={ENQUEUED_AT_HEADER: time.time()},
                # A job nobody started within this is dropped (REVOKED): its caller is gone.
                expires=queue.message_expires_s,
            )
        except BaseException:
            store.delete(key)
            raise
    return JobHandle(async_result, model, recorded=True)


def _existing(
    app: Celery, key: str, task_id: str, digest: str, model: type[ResultT]
) -> JobHandle[ResultT]:
    """The job an earlier enqueue with the same idempotency key created."""
    record = json.loads(app.backend.client.get(key) or "{}")
    if record.get("digest") != digest:
        raise IdempotencyKeyReused(
            f"idempotency key of job {task_id} was used for a different request",
            {"task_id": task_id},
        )
    return JobHandle(app.AsyncResult(task_id), model, recorded=True)


def _summary_request(
    text: str | bytes,
    template_id: str,
    language: str | None,
    variables: dict[str, PromptVariable] | None,
    enhance: bool,
    use_cache: bool,
    settings: Settings | None,
) -> SummaryRequest:
    payload = {
        "text": decode_text(text),
        "template_id": template_id,
        "language": language,
        "variables": variables or {},
        "enhance": enhance,
        "use_cache": use_cache,
    }
    return parse_request(SummaryRequest, (), payload, settings or get_settings())


def enqueue_summary(
    text: str | bytes,
    template_id: str,
    *,
    language: str | None = None,
    variables: dict[str, PromptVariable] | None = None,
    enhance: bool = False,
    use_cache: bool = True,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> JobHandle[SummaryResult]:
    """Queue ``structsum.summarize``; ``enhance=True`` cleans the text up first.

    An identical earlier request is answered from the result cache (``cached`` is
    true in the result); ``use_cache=False`` runs the engine anyway.

    ``idempotency_key``: a second enqueue with the same key (and request) returns
    the first job instead of queueing another; with another request it raises
    ``IdempotencyKeyReused``.
    """
    request = _summary_request(text, template_id, language, variables, enhance, use_cache, settings)
    return _send(SUMMARIZE, request, SummaryResult, settings, idempotency_key)


def enqueue_enhance_and_summarize(
    text: str | bytes,
    template_id: str,
    *,
    language: str | None = None,
    variables: dict[str, PromptVariable] | None = None,
    use_cache: bool = True,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> JobHandle[SummaryResult]:
    """Queue ``structsum.enhance_and_summarize``: the enhanced text feeds the summary."""
    request = _summary_request(text, template_id, language, variables, True, use_cache, settings)
    return _send(ENHANCE_AND_SUMMARIZE, request, SummaryResult, settings, idempotency_key)


def enqueue_enhancement(
    text: str | bytes,
    *,
    language: str | None = None,
    use_cache: bool = True,
    settings: Settings | None = None,
    idempotency_key: str | None = None,
) -> JobHandle[EnhancementResult]:
    """Queue ``structsum.enhance`` (``use_cache=False``: skip the result cache)."""
    payload = {"text": decode_text(text), "language": language, "use_cache": use_cache}
    request = parse_request(EnhancementRequest, (), payload, settings or get_settings())
    return _send(ENHANCE, request, EnhancementResult, settings, idempotency_key)


def ask(
    conversation_id: str,
    question: str,
    *,
    text: str | bytes | None = None,
    summary_job_id: str | None = None,
    template_id: str | None = None,
    language: str | None = None,
    max_tokens: int | None = None,
    settings: Settings | None = None,
) -> JobHandle[AskResult]:
    """Queue ``structsum.ask``: a follow-up question in a conversation about one document.

    The first question names the document (``text``, or a finished summary's
    ``summary_job_id``); later ones need only the conversation id. With
    ``template_id`` the answer is JSON guided by that template's schema.
    """
    payload = {
        "conversation_id": conversation_id,
        "question": question,
        "text": None if text is None else decode_text(text),
        "summary_job_id": summary_job_id,
        "template_id": template_id,
        "language": language,
        "max_tokens": max_tokens,
    }
    request = parse_request(AskRequest, (), payload, settings or get_settings())
    return _send(ASK, request, AskResult, settings)


def get_result(
    task_id: str, *, timeout: float | None = None, settings: Settings | None = None
) -> SummaryResult | EnhancementResult | AskResult:
    """The typed result of any structsum job by id (the kind is read from the result)."""
    return job(task_id, settings=settings).result(timeout)


def job(task_id: str, *, settings: Settings | None = None) -> JobHandle[Any]:
    """A handle for a job enqueued elsewhere (another process, ``send_task``, the CLI)."""
    return JobHandle(client_app(settings).AsyncResult(task_id))
